//! Management through the `Client`: deleting an instance with its
//! sub-orchestrations (and the refusals: a child directly, a running instance
//! without force, a missing one), bulk deletion by id list, age and limit, and
//! pruning old executions of continue-as-new instances, singly and in bulk,
//! while they are still running.

use duroxide::{
    ClientError, InstanceFilter, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
    PruneOptions,
};

use crate::support::{Env, assert_well_formed, no_activities, now_ms, subscribed, wait_until};

/// "Job" completes at once (setting a KV entry) unless its input is "wait",
/// then it waits for event "Go"; "Family" runs one "Job" child.
fn registry() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Job",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.set_kv_value("input", input.clone());
                if input == "wait" {
                    return Ok(ctx.schedule_wait("Go").await);
                }
                Ok(format!("job {input}"))
            },
        )
        .register(
            "Family",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_sub_orchestration("Job", "child").await
            },
        )
        .build()
}

async fn sorted_instances(env: &Env) -> Vec<String> {
    let mut all = env.client.list_all_instances().await.unwrap();
    all.sort();
    all
}

#[tokio::test]
async fn delete_instance_with_its_children() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), registry()).await;

    env.client
        .start_orchestration("family", "Family", "")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("family").await, "job child");
    let child = env.admin().list_children("family").await.unwrap().remove(0);
    let events = env.history("family").await.len() + env.history(&child).await.len();
    assert_eq!(sorted_instances(&env).await.len(), 2);

    // A child cannot be deleted on its own.
    match env.client.delete_instance(&child, false).await {
        Err(ClientError::CannotDeleteSubOrchestration { instance_id }) => {
            assert_eq!(instance_id, child)
        }
        other => panic!("deleting a child: {other:?}"),
    }

    let deleted = env.client.delete_instance("family", false).await.unwrap();
    assert_eq!(deleted.instances_deleted, 2);
    assert_eq!(deleted.executions_deleted, 2);
    assert_eq!(deleted.events_deleted, events as u64);

    for id in ["family", child.as_str()] {
        assert_eq!(
            env.client.get_orchestration_status(id).await.unwrap(),
            OrchestrationStatus::NotFound
        );
        assert!(env.history(id).await.is_empty());
        assert_eq!(env.client.get_kv_value(id, "input").await.unwrap(), None);
    }
    assert!(sorted_instances(&env).await.is_empty());
    match env.client.delete_instance("family", false).await {
        Err(ClientError::InstanceNotFound { instance_id }) => assert_eq!(instance_id, "family"),
        other => panic!("deleting twice: {other:?}"),
    }

    env.finish([rt]).await;
}

#[tokio::test]
async fn delete_running_instance_needs_force() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), registry()).await;

    env.client
        .start_orchestration("running", "Job", "wait")
        .await
        .unwrap();
    env.wait_subscribed("running", "Go").await;

    match env.client.delete_instance("running", false).await {
        Err(ClientError::InstanceStillRunning { instance_id }) => {
            assert_eq!(instance_id, "running")
        }
        other => panic!("deleting a running instance without force: {other:?}"),
    }
    assert!(matches!(
        env.client
            .get_orchestration_status("running")
            .await
            .unwrap(),
        OrchestrationStatus::Running { .. }
    ));

    let deleted = env.client.delete_instance("running", true).await.unwrap();
    assert_eq!(deleted.instances_deleted, 1);
    assert_eq!(
        env.client
            .get_orchestration_status("running")
            .await
            .unwrap(),
        OrchestrationStatus::NotFound
    );
    assert!(sorted_instances(&env).await.is_empty());

    env.finish([rt]).await;
}

#[tokio::test]
async fn bulk_delete_by_ids_age_and_limit() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), registry()).await;

    for i in 0..5 {
        env.client
            .start_orchestration(format!("done-{i}"), "Job", i.to_string())
            .await
            .unwrap();
    }
    env.client
        .start_orchestration("busy", "Job", "wait")
        .await
        .unwrap();
    for i in 0..5 {
        env.wait_completed(&format!("done-{i}")).await;
    }
    env.wait_subscribed("busy", "Go").await;
    let after_all_completed = now_ms() + 1;

    // By id: the running instance in the list is skipped, not an error.
    let r = env
        .client
        .delete_instance_bulk(InstanceFilter {
            instance_ids: Some(vec!["done-0".into(), "done-1".into(), "busy".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.instances_deleted, 2);
    assert_eq!(
        sorted_instances(&env).await,
        ["busy", "done-2", "done-3", "done-4"]
    );

    // Nothing completed before the epoch.
    let r = env
        .client
        .delete_instance_bulk(InstanceFilter {
            completed_before: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.instances_deleted, 0);

    // By age, at most two.
    let r = env
        .client
        .delete_instance_bulk(InstanceFilter {
            completed_before: Some(after_all_completed),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.instances_deleted, 2);
    assert_eq!(r.executions_deleted, 2);
    let left = sorted_instances(&env).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"busy".to_string()));

    // Everything terminal; the running one stays.
    let r = env
        .client
        .delete_instance_bulk(InstanceFilter::default())
        .await
        .unwrap();
    assert_eq!(r.instances_deleted, 1);
    assert_eq!(sorted_instances(&env).await, ["busy"]);

    // The survivor still works.
    env.client
        .raise_event("busy", "Go", "finally")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("busy").await, "finally");

    env.finish([rt]).await;
}

#[tokio::test]
async fn prune_executions_of_running_instances() {
    let env = Env::new().await;
    // Rolls over to a new execution until the sixth, which waits for "Stop".
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Cycler",
            |ctx: OrchestrationContext, n: String| async move {
                let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
                if n < 6 {
                    return ctx.continue_as_new((n + 1).to_string()).await;
                }
                let data = ctx.schedule_wait("Stop").await;
                Ok(format!("stopped at {n}: {data}"))
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    for id in ["cycle-a", "cycle-b"] {
        env.client
            .start_orchestration(id, "Cycler", "1")
            .await
            .unwrap();
    }
    for id in ["cycle-a", "cycle-b"] {
        // Execution 6 has subscribed: executions 1-5 are finished.
        wait_until("the sixth execution to wait", || async {
            let hist = env.history(id).await;
            (hist.first().is_some_and(|e| e.execution_id == 6)
                && hist.iter().any(|e| subscribed("Stop")(&e.kind)))
            .then_some(())
        })
        .await;
        assert_eq!(
            env.client.list_executions(id).await.unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
    }
    let old_events: u64 = {
        let mut n = 0;
        for exec in 1..=4 {
            n += env.execution_history("cycle-a", exec).await.len() as u64;
        }
        n
    };

    let r = env
        .client
        .prune_executions(
            "cycle-a",
            PruneOptions {
                keep_last: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.executions_deleted, 4);
    assert_eq!(r.events_deleted, old_events);
    assert_eq!(env.client.list_executions("cycle-a").await.unwrap(), [5, 6]);

    // Bulk: keep only the current execution of both.
    let r = env
        .client
        .prune_executions_bulk(
            InstanceFilter {
                instance_ids: Some(vec!["cycle-a".into(), "cycle-b".into()]),
                ..Default::default()
            },
            PruneOptions {
                keep_last: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.instances_processed, 2);
    assert_eq!(r.executions_deleted, 1 + 5);
    for id in ["cycle-a", "cycle-b"] {
        assert_eq!(env.client.list_executions(id).await.unwrap(), [6]);
    }

    // The pruned instances keep running from their current execution.
    for id in ["cycle-a", "cycle-b"] {
        env.client.raise_event(id, "Stop", "bye").await.unwrap();
        assert_eq!(env.wait_completed(id).await, "stopped at 6: bye");
        let hist = env.history(id).await;
        assert_well_formed(&hist, id, 6);
    }

    env.finish([rt]).await;
}
