//! Retention as an application runs it: a runtime works on one provider
//! while two other "processes" open providers with a retention policy on the
//! same schema. Their background sweepers delete finished trees (completed,
//! failed, cancelled), never a tree with a running member, and prune a
//! running continue-as-new chain to its newest executions; a tree whose
//! last member finishes later goes at the next sweep.

use std::time::Duration;

use duroxide::{OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_pg::RetentionPolicy;

use crate::support::{Env, no_activities, subscribed, wait_until};

/// "Job" waits for "Go" when its input is "wait", fails on "fail", else
/// completes; "Family" runs one "Job" child with its own input; "Cycler"
/// continues as new up to execution 6, which waits for "Stop".
fn registry() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Job",
            |ctx: OrchestrationContext, input: String| async move {
                match input.as_str() {
                    "wait" => Ok(ctx.schedule_wait("Go").await),
                    "fail" => Err("failed on purpose".to_string()),
                    other => Ok(format!("job {other}")),
                }
            },
        )
        .register(
            "Family",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_sub_orchestration("Job", input).await
            },
        )
        .register(
            "Cycler",
            |ctx: OrchestrationContext, n: String| async move {
                let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
                if n < 6 {
                    return ctx.continue_as_new((n + 1).to_string()).await;
                }
                Ok(ctx.schedule_wait("Stop").await)
            },
        )
        .build()
}

async fn instances(env: &Env) -> Vec<String> {
    let mut all = env.client.list_all_instances().await.unwrap();
    all.sort();
    all
}

async fn wait_gone(env: &Env, ids: &[&str]) {
    wait_until("the sweeper to delete the finished trees", || async {
        let all = instances(env).await;
        ids.iter()
            .all(|id| !all.iter().any(|a| a == id))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn background_sweepers_delete_finished_trees_and_prune_running_chains() {
    let mut env = Env::without_housekeeping().await;
    let rt = env.start(no_activities(), registry()).await;

    for (id, name, input) in [
        ("done", "Job", "1"),
        ("failed", "Job", "fail"),
        ("cancelled", "Job", "wait"),
        ("family-done", "Family", "2"),
        ("family-waiting", "Family", "wait"),
        ("waiting", "Job", "wait"),
        ("cycler", "Cycler", "1"),
    ] {
        env.client.start_orchestration(id, name, input).await.unwrap();
    }
    assert_eq!(env.wait_completed("done").await, "job 1");
    env.wait_failed("failed").await;
    assert_eq!(env.wait_completed("family-done").await, "job 2");
    env.wait_subscribed("cancelled", "Go").await;
    env.client
        .cancel_instance("cancelled", "no longer needed")
        .await
        .unwrap();
    env.wait_failed("cancelled").await;
    wait_until("the cycler's sixth execution to wait", || async {
        let hist = env.history("cycler").await;
        (hist.first().is_some_and(|e| e.execution_id == 6)
            && hist.iter().any(|e| subscribed("Stop")(&e.kind)))
        .then_some(())
    })
    .await;
    let family_waiting_child = wait_until("family-waiting's child", || async {
        env.admin()
            .list_children("family-waiting")
            .await
            .unwrap()
            .pop()
    })
    .await;
    env.wait_subscribed(&family_waiting_child, "Go").await;
    let family_done_child = env.admin().list_children("family-done").await.unwrap()[0].clone();

    // Two more processes with the same policy: one of them sweeps at a time.
    let policy = RetentionPolicy::new()
        .keep_completed_for(Duration::from_secs(2))
        .keep_failed_for(Duration::from_millis(1))
        .keep_executions(2)
        .with_interval(Duration::from_millis(200))
        .with_batch_pause(Duration::ZERO);
    for _ in 0..2 {
        env.another_provider_with(|c| c.with_retention(policy.clone()))
            .await;
    }

    wait_gone(
        &env,
        &["done", "failed", "cancelled", "family-done", &family_done_child],
    )
    .await;
    wait_until("the cycler's chain to be pruned to 2 executions", || async {
        (env.client.list_executions("cycler").await.unwrap() == [5, 6]).then_some(())
    })
    .await;
    // Nothing with a running member was touched.
    let mut kept = vec![
        "cycler".to_string(),
        "family-waiting".to_string(),
        family_waiting_child.clone(),
        "waiting".to_string(),
    ];
    kept.sort();
    assert_eq!(instances(&env).await, kept);
    assert!(matches!(
        env.client.get_orchestration_status("waiting").await.unwrap(),
        OrchestrationStatus::Running { .. }
    ));

    // The running child finishes: its tree goes at a later sweep; the chain
    // finishes and goes too. The runtime kept working throughout.
    env.client
        .raise_event(&family_waiting_child, "Go", "now")
        .await
        .unwrap();
    env.client
        .raise_event("cycler", "Stop", "done")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("family-waiting").await, "now");
    assert_eq!(env.wait_completed("cycler").await, "done");
    wait_gone(&env, &["family-waiting", &family_waiting_child, "cycler"]).await;
    assert_eq!(instances(&env).await, ["waiting"]);

    let status = env.provider.retention_status().await.unwrap();
    assert_eq!(status.policy, Some(policy));
    let last = status.last.expect("a sweep was recorded");
    assert!(last.by.starts_with("provider:"), "{last:?}");
    assert_eq!(last.error, None);

    env.finish([rt]).await;
}
