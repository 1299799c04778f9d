//! `instances list`.

use duroxide::providers::ProviderAdmin;
use serde_json::Value;

use super::instance::info_json;
use super::{CliResult, is_not_found, open};
use crate::args::{InstancesAction, InstancesArgs, ListArgs, Target};
use crate::output::{Table, or_dash, print_json};
use crate::time::format_ms;

/// `instances ACTION`.
pub async fn run(args: InstancesArgs, t: &Target) -> CliResult {
    match args.action {
        InstancesAction::List(list_args) => list(list_args, t).await,
    }
}

/// `instances list`: newest first, at most `limit`.
async fn list(args: ListArgs, t: &Target) -> CliResult {
    let (json, limit) = (t.json, args.limit as usize);
    let p = open(t).await?;
    let ids = match args.status {
        Some(s) => p.list_instances_by_status(s.as_stored()).await?,
        None => p.list_instances().await?,
    };
    let mut infos = Vec::new();
    for id in ids.iter().take(limit) {
        match p.get_instance_info(id).await {
            Ok(info) => infos.push(info),
            // Deleted between the listing and this read: not there any more.
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        print_json(&Value::Array(infos.iter().map(info_json).collect()));
        return Ok(());
    }
    let mut table = Table::new(&[
        "instance",
        "orchestration",
        "version",
        "status",
        "execution",
        "created",
        "updated",
        "parent",
    ]);
    for i in &infos {
        table.row(vec![
            i.instance_id.clone(),
            i.orchestration_name.clone(),
            i.orchestration_version.clone(),
            i.status.clone(),
            i.current_execution_id.to_string(),
            format_ms(i.created_at),
            format_ms(i.updated_at),
            or_dash(i.parent_instance_id.as_ref()),
        ]);
    }
    print!("{}", table.render());
    if ids.len() > infos.len() {
        println!(
            "({} of {} shown; raise --limit for more)",
            infos.len(),
            ids.len()
        );
    }
    Ok(())
}
