//! `cancel`, through `duroxide::Client` exactly as application code would.

use duroxide::Client;
use serde_json::json;

use super::{CliError, CliResult, open, require_running};
use crate::args::{CancelArgs, Target};
use crate::output::print_json;

/// `cancel ID [REASON]`.
pub async fn run(args: CancelArgs, t: &Target) -> CliResult {
    let (json, id, reason) = (t.json, args.id.as_str(), args.reason.as_str());
    let p = open(t).await?;
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
