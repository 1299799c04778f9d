//! Fan-out/fan-in on PostgreSQL: one orchestration schedules an activity per
//! item, all in parallel, then aggregates the results.
//!
//! `cargo run --example fan_out_fan_in` uses `DATABASE_URL` when set, otherwise
//! a throwaway local PostgreSQL cluster (as the tests do). It works in a schema
//! of its own, drops it at the end, and exits non-zero on failure.

use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{self, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_pg::PostgresProvider;

/// Words to count the letters of, one activity each.
const WORDS: [&str; 8] = [
    "durable",
    "orchestration",
    "postgres",
    "fan",
    "out",
    "fan",
    "in",
    "activities",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // DATABASE_URL, or (when unset) the test kit's throwaway cluster, a dev-dependency:
    // an application passes its own URL.
    let url = duroxide_pg_testkit::local_cluster::database_url()?;
    let schema = format!("example_fan_out_{}", std::process::id());
    let store = Arc::new(PostgresProvider::new_with_schema(&url, Some(&schema)).await?);

    let activities = ActivityRegistry::builder()
        .register(
            "CountLetters",
            |ctx: ActivityContext, word: String| async move {
                println!("  worker {} counts {word:?}", ctx.worker_id());
                Ok(word.chars().count().to_string())
            },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "CountAll",
            |ctx: OrchestrationContext, words: String| async move {
                // Fan out: one activity per word, all scheduled at once.
                let tasks: Vec<_> = words
                    .split(',')
                    .map(|w| ctx.schedule_activity("CountLetters", w))
                    .collect();
                // Fan in: results come back in scheduling order.
                let counts = ctx.join(tasks).await;
                let mut total = 0u64;
                for count in counts {
                    total += count?.parse::<u64>().map_err(|e| e.to_string())?;
                }
                Ok(total.to_string())
            },
        )
        .build();

    let options = RuntimeOptions {
        worker_concurrency: 4,
        ..Default::default()
    };
    let rt =
        runtime::Runtime::start_with_options(store.clone(), activities, orchestrations, options)
            .await;
    let client = Client::new(store.clone());
    let result = async {
        client
            .start_orchestration("count-1", "CountAll", WORDS.join(","))
            .await?;
        let status = client
            .wait_for_orchestration("count-1", Duration::from_secs(30))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(status)
    }
    .await;
    rt.shutdown(None).await;
    store.cleanup_schema().await?;

    match result? {
        OrchestrationStatus::Completed { output, .. } => {
            let expected: usize = WORDS.iter().map(|w| w.chars().count()).sum();
            if output != expected.to_string() {
                return Err(format!("expected {expected} letters, got {output}").into());
            }
            println!("completed: {} words, {output} letters", WORDS.len());
            Ok(())
        }
        other => Err(format!("orchestration did not complete: {other:?}").into()),
    }
}
