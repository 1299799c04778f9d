//! Sub-orchestrations on PostgreSQL: an order orchestration starts one child
//! orchestration per package (in parallel); each child ships its package and
//! starts a grandchild that sends the notification. The whole instance tree is
//! then listed through the client's management API.
//!
//! `cargo run --example sub_orchestrations` uses `DATABASE_URL` when set,
//! otherwise a throwaway local PostgreSQL cluster (as the tests do). It works in
//! a schema of its own, drops it at the end, and exits non-zero on failure.

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
    let schema = format!("example_sub_orch_{}", std::process::id());
    let store = Arc::new(PostgresProvider::new_with_schema(&url, Some(&schema)).await?);

    let activities = ActivityRegistry::builder()
        .register("Ship", |_ctx: ActivityContext, package: String| async move {
            Ok(format!("{package} shipped"))
        })
        .register("Email", |_ctx: ActivityContext, text: String| async move {
            Ok(format!("emailed '{text}'"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Order",
            |ctx: OrchestrationContext, packages: String| async move {
                // One child per package, all running at once.
                let children: Vec<_> = packages
                    .split(',')
                    .map(|p| ctx.schedule_sub_orchestration("Package", p))
                    .collect();
                let results = ctx.join(children).await;
                let lines: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
                Ok(lines.join("; "))
            },
        )
        .register(
            "Package",
            |ctx: OrchestrationContext, package: String| async move {
                let shipped = ctx.schedule_activity("Ship", package).await?;
                // A grandchild: sub-orchestrations nest.
                let notice = ctx.schedule_sub_orchestration("Notify", shipped).await?;
                Ok(notice)
            },
        )
        .register(
            "Notify",
            |ctx: OrchestrationContext, text: String| async move {
                ctx.schedule_activity("Email", text).await
            },
        )
        .build();

    let rt = runtime::Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store.clone());
    let result = run(&client).await;
    rt.shutdown(None).await;
    store.cleanup_schema().await?;

    let (output, tree) = result?;
    println!("completed: {output}");
    println!("instance tree ({} instances):", tree.len());
    for id in tree {
        println!("  {id}");
    }
    Ok(())
}

/// Runs the order; returns its output and the ids of its instance tree.
async fn run(client: &Client) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    client
        .start_orchestration("order-1", "Order", "books,lamp,chair")
        .await?;
    let output = match client
        .wait_for_orchestration("order-1", Duration::from_secs(30))
        .await?
    {
        OrchestrationStatus::Completed { output, .. } => output,
        other => return Err(format!("order did not complete: {other:?}").into()),
    };
    let expected = "emailed 'books shipped'; emailed 'lamp shipped'; emailed 'chair shipped'";
    if output != expected {
        return Err(format!("unexpected output {output:?}").into());
    }
    let mut tree = client.get_instance_tree("order-1").await?.all_ids;
    tree.sort();
    // The order, three packages, three notifications.
    if tree.len() != 7 {
        return Err(format!("unexpected instance tree {tree:?}").into());
    }
    Ok((output, tree))
}
