//! `raise-event`, through `duroxide::Client` exactly as application code
//! would.

use duroxide::Client;
use serde_json::json;

use super::{CliError, CliResult, open, require_running};
use crate::args::{RaiseEventArgs, Target};
use crate::output::print_json;

/// `raise-event ID NAME DATA`.
pub async fn run(args: RaiseEventArgs, t: &Target) -> CliResult {
    let (json, id, name, data) = (t.json, args.id.as_str(), &args.name, &args.data);
    let p = open(t).await?;
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
