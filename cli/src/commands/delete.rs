//! `delete`.

use duroxide::providers::{DeleteInstanceResult, ProviderAdmin};
use serde_json::json;

use super::{CliResult, instance_error, open};
use crate::args::{DeleteArgs, Target};
use crate::output::print_json;

/// `delete ID [--force]`.
pub async fn run(args: DeleteArgs, t: &Target) -> CliResult {
    let (json, id) = (t.json, args.id.as_str());
    let p = open(t).await?;
    let r = p
        .delete_instance(id, args.force)
        .await
        .map_err(|e| instance_error(id, e))?;
    print_deleted(json, &format!("instance {id:?}"), &r);
    Ok(())
}

/// What a deletion removed (also `purge`'s total).
pub(super) fn print_deleted(json: bool, what: &str, r: &DeleteInstanceResult) {
    if json {
        print_json(&json!({
            "instances_deleted": r.instances_deleted,
            "executions_deleted": r.executions_deleted,
            "events_deleted": r.events_deleted,
            "queue_messages_deleted": r.queue_messages_deleted,
        }));
    } else {
        println!(
            "{what}: deleted {} instances, {} executions, {} events, {} queued messages",
            r.instances_deleted, r.executions_deleted, r.events_deleted, r.queue_messages_deleted
        );
    }
}
