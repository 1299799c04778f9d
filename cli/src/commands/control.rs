//! Commands that talk to a running orchestration: `raise-event`, `cancel`.
//! Both go through `duroxide::Client`, exactly as application code would.

use std::sync::Arc;

use duroxide::Client;
use duroxide::providers::ProviderAdmin;
use duroxide_pg::PostgresProvider;
use serde_json::json;

use super::{CliError, CliResult, instance_error};
use crate::output::print_json;

/// Refuses instances that do not exist or no longer run: a message sent to
/// them would be dropped silently by the runtime.
async fn require_running(p: &PostgresProvider, id: &str, what: &str) -> CliResult {
    let info = p
        .get_instance_info(id)
        .await
        .map_err(|e| instance_error(id, e))?;
    if info.status != "Running" {
        return Err(CliError(format!(
            "instance {id:?} is {}, not Running: {what} would be ignored",
            info.status
        )));
    }
    Ok(())
}

/// `raise-event ID NAME DATA`.
pub async fn raise_event(
    p: Arc<PostgresProvider>,
    json: bool,
    id: &str,
    name: &str,
    data: &str,
) -> CliResult {
    require_running(&p, id, "an event").await?;
    Client::new(p)
        .raise_event(id, name, data)
        .await
        .map_err(|e| CliError(e.to_string()))?;
    if json {
        print_json(&json!({ "instance_id": id, "event": name, "raised": true }));
    } else {
        println!("raised event {name:?} on instance {id:?}");
    }
    Ok(())
}

/// `cancel ID [REASON]`.
pub async fn cancel(p: Arc<PostgresProvider>, json: bool, id: &str, reason: &str) -> CliResult {
    require_running(&p, id, "a cancellation").await?;
    Client::new(p)
        .cancel_instance(id, reason)
        .await
        .map_err(|e| CliError(e.to_string()))?;
    if json {
        print_json(&json!({ "instance_id": id, "cancel_requested": true, "reason": reason }));
    } else {
        println!("cancellation requested for instance {id:?} ({reason})");
    }
    Ok(())
}
