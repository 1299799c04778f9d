//! Hello world on PostgreSQL: one orchestration calling one activity.
//!
//! `cargo run --example hello_world` uses `DATABASE_URL` when set, otherwise a
//! throwaway local PostgreSQL cluster (as the tests do).

use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{self};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_pg::PostgresProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // DATABASE_URL, or (when unset) the test kit's throwaway cluster, a dev-dependency:
    // an application passes its own URL.
    let url = duroxide_pg_testkit::local_cluster::database_url()?;
    let schema = format!("example_hello_{}", std::process::id());
    let store = Arc::new(PostgresProvider::new_with_schema(&url, Some(&schema)).await?);

    let activities = ActivityRegistry::builder()
        .register("Greet", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("Hello, {name}!"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "HelloWorld",
            |ctx: OrchestrationContext, name: String| async move {
                ctx.schedule_activity("Greet", name).await
            },
        )
        .build();

    let rt = runtime::Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store.clone());
    client
        .start_orchestration("hello-1", "HelloWorld", "PostgreSQL")
        .await?;
    let status = client
        .wait_for_orchestration("hello-1", Duration::from_secs(30))
        .await
        .map_err(|e| format!("wait failed: {e:?}"))?;
    rt.shutdown(None).await;
    store.cleanup_schema().await?;

    match status {
        OrchestrationStatus::Completed { output, .. } => {
            println!("completed: {output}");
            Ok(())
        }
        other => Err(format!("orchestration did not complete: {other:?}").into()),
    }
}
