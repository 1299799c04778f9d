//! `prune`.

use duroxide::providers::{ProviderAdmin, PruneOptions};
use serde_json::json;

use super::{CliResult, instance_error, open};
use crate::args::{PruneArgs, Target};
use crate::output::print_json;

/// `prune ID --keep-last N`.
pub async fn run(args: PruneArgs, t: &Target) -> CliResult {
    let (json, id) = (t.json, args.id.as_str());
    let p = open(t).await?;
    let options = PruneOptions {
        keep_last: Some(args.keep_last),
        completed_before: None,
    };
    let r = p
        .prune_executions(id, options)
        .await
        .map_err(|e| instance_error(id, e))?;
    if json {
        print_json(&json!({
            "executions_deleted": r.executions_deleted,
            "events_deleted": r.events_deleted,
        }));
    } else {
        println!(
            "instance {id:?}: pruned {} executions ({} events)",
            r.executions_deleted, r.events_deleted
        );
    }
    Ok(())
}
