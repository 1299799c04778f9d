//! Timers and external events on PostgreSQL: an approval workflow that waits
//! for an "Approval" event or a durable timeout, whichever comes first.
//!
//! Two requests run: one is approved by an external event (raised once the
//! workflow reports, through its custom status, that it is waiting), the other
//! gets no answer and escalates when its one-second timer fires.
//!
//! `cargo run --example timers_and_events` uses `DATABASE_URL` when set,
//! otherwise a throwaway local PostgreSQL cluster (as the tests do). It works in
//! a schema of its own, drops it at the end, and exits non-zero on failure.

use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{self, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, Either2, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_pg::PostgresProvider;

const WAITING: &str = "waiting for approval";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // DATABASE_URL, or (when unset) the test kit's throwaway cluster, a dev-dependency:
    // an application passes its own URL.
    let url = duroxide_pg_testkit::local_cluster::database_url()?;
    let schema = format!("example_timers_{}", std::process::id());
    let store = Arc::new(PostgresProvider::new_with_schema(&url, Some(&schema)).await?);

    let activities = ActivityRegistry::builder()
        .register(
            "Notify",
            |_ctx: ActivityContext, message: String| async move {
                println!("  notify: {message}");
                Ok(message)
            },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Approval",
            |ctx: OrchestrationContext, input: String| async move {
                // Input: "<request id>,<timeout in seconds>".
                let (request, timeout) = input.split_once(',').ok_or("bad input")?;
                let timeout: u64 = timeout.parse().map_err(|e| format!("bad timeout: {e}"))?;
                ctx.schedule_activity("Notify", format!("{request}: approval requested"))
                    .await?;
                ctx.set_custom_status(WAITING);
                // Race the approval against a durable timeout.
                let approval = ctx.schedule_wait("Approval");
                let timeout = ctx.schedule_timer(Duration::from_secs(timeout));
                let outcome = match ctx.select2(approval, timeout).await {
                    Either2::First(approver) => format!("{request}: approved by {approver}"),
                    Either2::Second(()) => format!("{request}: no answer, escalated"),
                };
                ctx.set_custom_status("decided");
                ctx.schedule_activity("Notify", outcome).await
            },
        )
        .build();

    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let rt =
        runtime::Runtime::start_with_options(store.clone(), activities, orchestrations, options)
            .await;
    let client = Client::new(store.clone());
    let result = run(&client).await;
    rt.shutdown(None).await;
    store.cleanup_schema().await?;

    let (approved, escalated) = result?;
    println!("approved request: {approved}");
    println!("unanswered request: {escalated}");
    Ok(())
}

/// Runs both requests; returns their outputs.
async fn run(client: &Client) -> Result<(String, String), Box<dyn std::error::Error>> {
    client
        .start_orchestration("request-approved", "Approval", "REQ-1,60")
        .await?;
    client
        .start_orchestration("request-ignored", "Approval", "REQ-2,1")
        .await?;

    // Once the workflow says it waits, its subscription is recorded: raise the event.
    let status = client
        .wait_for_status_change(
            "request-approved",
            0,
            Duration::from_millis(20),
            Duration::from_secs(30),
        )
        .await?;
    match status {
        OrchestrationStatus::Running { custom_status, .. }
            if custom_status.as_deref() == Some(WAITING) => {}
        other => return Err(format!("unexpected status {other:?}").into()),
    }
    client
        .raise_event("request-approved", "Approval", "alice")
        .await?;

    let mut outputs = Vec::new();
    for instance in ["request-approved", "request-ignored"] {
        match client
            .wait_for_orchestration(instance, Duration::from_secs(30))
            .await?
        {
            OrchestrationStatus::Completed { output, .. } => outputs.push(output),
            other => return Err(format!("{instance} did not complete: {other:?}").into()),
        }
    }
    let escalated = outputs.pop().unwrap_or_default();
    let approved = outputs.pop().unwrap_or_default();
    if approved != "REQ-1: approved by alice" || escalated != "REQ-2: no answer, escalated" {
        return Err(format!("unexpected outcomes: {approved:?}, {escalated:?}").into());
    }
    Ok((approved, escalated))
}
