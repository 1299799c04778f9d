//! `queues`.

use serde_json::{Value, json};

use super::{CliResult, open};
use crate::args::Target;
use crate::output::{Table, or_dash, print_json};

/// A duration for a table: `850ms`, `12.5s`, `4m05s`, `3h02m`.
fn age(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// `queues`: ready / delayed / locked per queue and the oldest ready age.
pub async fn run(t: &Target) -> CliResult {
    let json = t.json;
    let p = open(t).await?;
    let queues = p.queue_overview().await?;
    if json {
        print_json(&Value::Array(
            queues
                .iter()
                .map(|q| {
                    json!({
                        "queue": q.queue,
                        "ready": q.ready,
                        "delayed": q.delayed,
                        "locked": q.locked,
                        "oldest_ready_ms": q.oldest_ready_age.map(|d| d.as_millis() as u64),
                    })
                })
                .collect(),
        ));
        return Ok(());
    }
    let mut t = Table::new(&["queue", "ready", "delayed", "locked", "oldest ready"]);
    for q in &queues {
        t.row(vec![
            q.queue.clone(),
            q.ready.to_string(),
            q.delayed.to_string(),
            q.locked.to_string(),
            or_dash(q.oldest_ready_age.map(age)),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::age;
    use std::time::Duration;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(12_500)), "12.5s");
        assert_eq!(age(Duration::from_secs(245)), "4m05s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 120)), "3h02m");
    }
}
