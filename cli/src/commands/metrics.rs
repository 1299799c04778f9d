//! `metrics`.

use duroxide::providers::ProviderAdmin;
use serde_json::{Value, json};

use super::{CliResult, open};
use crate::args::Target;
use crate::output::{Table, print_json};

/// `metrics`: instance, execution and event totals.
pub async fn run(t: &Target) -> CliResult {
    let json = t.json;
    let p = open(t).await?;
    let m = p.get_system_metrics().await?;
    let rows = [
        ("total_instances", m.total_instances),
        ("running_instances", m.running_instances),
        ("completed_instances", m.completed_instances),
        ("failed_instances", m.failed_instances),
        ("total_executions", m.total_executions),
        ("total_events", m.total_events),
    ];
    if json {
        print_json(&Value::Object(
            rows.iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        ));
        return Ok(());
    }
    let mut t = Table::new(&["metric", "value"]);
    for (k, v) in rows {
        t.row(vec![k.into(), v.to_string()]);
    }
    print!("{}", t.render());
    Ok(())
}
