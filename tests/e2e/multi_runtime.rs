//! Several runtimes on one schema, each with its own provider (as separate
//! processes would have): a runtime stopped in the middle of an orchestration
//! (its activity aborted, its pool closed) is replaced by a new runtime that
//! finishes the work; and two runtimes sharing 200 orchestrations complete each
//! exactly once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::runtime::RuntimeOptions;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, EventKind, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};

use crate::support::{
    Env, assert_well_formed, count, counter, fast_options, kinds, start_on, wait_for_count,
};

#[tokio::test]
async fn runtime_stopped_mid_orchestration_is_finished_by_a_new_runtime() {
    let mut env = Env::new().await;
    let prepared = counter();
    let slow_started = counter();
    let slow_finished = counter();
    let activities = |blocking: bool| {
        let (p, s, f) = (
            prepared.clone(),
            slow_started.clone(),
            slow_finished.clone(),
        );
        ActivityRegistry::builder()
            .register("Prepare", move |_ctx: ActivityContext, x: String| {
                let p = p.clone();
                async move {
                    p.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("prepared {x}"))
                }
            })
            .register("Slow", move |_ctx: ActivityContext, x: String| {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    if blocking {
                        // The first runtime never finishes this step.
                        std::future::pending::<()>().await;
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("{x}, processed"))
                }
            })
            .register("Finish", |_ctx: ActivityContext, x: String| async move {
                Ok(format!("{x}, finished"))
            })
            .build()
    };
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Pipeline",
            |ctx: OrchestrationContext, input: String| async move {
                let a = ctx.schedule_activity("Prepare", input).await?;
                let b = ctx.schedule_activity("Slow", a).await?;
                ctx.schedule_activity("Finish", b).await
            },
        )
        .build();
    // Short locks: what the stopped runtime held becomes claimable quickly.
    let options = RuntimeOptions {
        worker_lock_timeout: Duration::from_secs(2),
        orchestrator_lock_timeout: Duration::from_secs(2),
        ..fast_options()
    };

    let provider1 = env.another_provider().await;
    let first = start_on(
        provider1.clone(),
        activities(true),
        orchestrations.clone(),
        options.clone(),
    )
    .await;
    env.client
        .start_orchestration("pipeline", "Pipeline", "order-1")
        .await
        .unwrap();
    wait_for_count("the slow step to start", &slow_started, 1).await;

    // Stop the first "process" abruptly: abort its in-flight work, close its pool.
    first.shutdown(Some(0)).await;
    provider1.pool().close().await;
    assert!(matches!(
        env.client
            .get_orchestration_status("pipeline")
            .await
            .unwrap(),
        OrchestrationStatus::Running { .. }
    ));
    assert_eq!(slow_finished.load(Ordering::SeqCst), 0);

    let provider2 = env.another_provider().await;
    let second = start_on(provider2, activities(false), orchestrations, options).await;
    assert_eq!(
        env.wait_completed("pipeline").await,
        "prepared order-1, processed, finished"
    );

    // The completed first step was not run again; the interrupted one was
    // retried once by the second runtime (at-least-once for activities).
    assert_eq!(prepared.load(Ordering::SeqCst), 1);
    assert_eq!(slow_started.load(Ordering::SeqCst), 2);
    assert_eq!(slow_finished.load(Ordering::SeqCst), 1);
    let hist = env.history("pipeline").await;
    assert_well_formed(&hist, "pipeline", 1);
    assert_eq!(
        kinds(&hist),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );

    env.finish([second]).await;
}

const ORCHESTRATIONS: usize = 200;

#[tokio::test]
async fn two_runtimes_share_200_orchestrations() {
    let mut env = Env::new().await;
    // Executions per "instance/activity", and activities run per runtime.
    let executions: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let per_runtime = [counter(), counter()];
    let activities = |runtime: usize| {
        let mut builder = ActivityRegistry::builder();
        for name in ["Reserve", "Ship"] {
            let executions = executions.clone();
            let mine = per_runtime[runtime].clone();
            builder = builder.register(name, move |ctx: ActivityContext, x: String| {
                let executions = executions.clone();
                let mine = mine.clone();
                async move {
                    *executions
                        .lock()
                        .unwrap()
                        .entry(format!("{}/{}", ctx.instance_id(), ctx.activity_name()))
                        .or_default() += 1;
                    mine.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("{x}>{}", ctx.activity_name()))
                }
            });
        }
        builder.build()
    };
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Order",
            |ctx: OrchestrationContext, id: String| async move {
                let reserved = ctx.schedule_activity("Reserve", id).await?;
                ctx.schedule_activity("Ship", reserved).await
            },
        )
        .build();
    let options = RuntimeOptions {
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        ..fast_options()
    };

    let p1 = env.another_provider().await;
    let p2 = env.another_provider().await;
    let rt1 = start_on(p1, activities(0), orchestrations.clone(), options.clone()).await;
    let rt2 = start_on(p2, activities(1), orchestrations, options).await;

    for i in 0..ORCHESTRATIONS {
        env.client
            .start_orchestration(format!("order-{i:03}"), "Order", i.to_string())
            .await
            .unwrap();
    }
    for i in 0..ORCHESTRATIONS {
        let id = format!("order-{i:03}");
        assert_eq!(env.wait_completed(&id).await, format!("{i}>Reserve>Ship"));
    }

    // No lock expires in this test (locks are renewed and no runtime stops),
    // so the at-least-once redelivery path never applies: every activity must
    // have run exactly once.
    {
        let executions = executions.lock().unwrap();
        assert_eq!(executions.len(), 2 * ORCHESTRATIONS);
        let repeated: Vec<_> = executions.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            repeated.is_empty(),
            "activities run more than once: {repeated:?}"
        );
    }
    let (a, b) = (
        per_runtime[0].load(Ordering::SeqCst),
        per_runtime[1].load(Ordering::SeqCst),
    );
    assert_eq!(a + b, 2 * ORCHESTRATIONS);
    assert!(a > 0 && b > 0, "both runtimes took work: {a} / {b}");

    for i in 0..ORCHESTRATIONS {
        let id = format!("order-{i:03}");
        let hist = env.history(&id).await;
        assert_well_formed(&hist, &id, 1);
        assert_eq!(
            count(&hist, |k| matches!(
                k,
                EventKind::OrchestrationCompleted { .. }
            )),
            1
        );
        assert_eq!(
            count(&hist, |k| matches!(k, EventKind::ActivityScheduled { .. })),
            2
        );
        assert_eq!(
            count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
            2
        );
        assert_eq!(hist.len(), 6, "{id}: {:?}", kinds(&hist));
    }
    let metrics = env.client.get_system_metrics().await.unwrap();
    assert_eq!(metrics.total_instances, ORCHESTRATIONS as u64);
    assert_eq!(metrics.completed_instances, ORCHESTRATIONS as u64);
    assert_eq!(metrics.running_instances, 0);
    let depths = env.client.get_queue_depths().await.unwrap();
    assert_eq!(depths.worker_queue, 0);

    env.finish([rt1, rt2]).await;
}
