//! Cancellation: cancelling a running instance fails it as cancelled and its
//! in-flight activity observes the cancellation through its context;
//! cancelling a parent cascades to its child orchestration.

use std::sync::atomic::Ordering;
use std::time::Duration;

use duroxide::runtime::RuntimeOptions;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, AppErrorKind, ErrorDetails, EventKind, OrchestrationContext,
    OrchestrationRegistry,
};

use crate::support::{
    Env, assert_well_formed, count, counter, fast_options, kinds, no_activities, wait_for_count,
    wait_until,
};

fn cancelled_because(details: &ErrorDetails, why: &str) -> bool {
    matches!(details, ErrorDetails::Application {
        kind: AppErrorKind::Cancelled { reason }, ..
    } if reason == why)
}

#[tokio::test]
async fn cancel_running_instance_signals_in_flight_activity() {
    let env = Env::new().await;
    let started = counter();
    let saw_cancel = counter();
    let (s, c) = (started.clone(), saw_cancel.clone());
    let activities = ActivityRegistry::builder()
        .register("LongJob", move |ctx: ActivityContext, _in: String| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = ctx.cancelled() => {
                        assert!(ctx.is_cancelled());
                        c.fetch_add(1, Ordering::SeqCst);
                        Err("stopped on cancellation".to_string())
                    }
                    _ = tokio::time::sleep(Duration::from_secs(120)) => Ok("finished".to_string()),
                }
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "LongRunning",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_activity("LongJob", "").await
            },
        )
        .build();
    // A short worker lock: the worker notices the cancelled activity when it
    // next renews that lock (at half its length).
    let options = RuntimeOptions {
        worker_lock_timeout: Duration::from_secs(1),
        worker_lock_renewal_buffer: Duration::from_millis(500),
        ..fast_options()
    };
    let rt = env.start_with(activities, orchestrations, options).await;

    env.client
        .start_orchestration("long", "LongRunning", "")
        .await
        .unwrap();
    wait_for_count("the activity to start", &started, 1).await;
    env.client
        .cancel_instance("long", "operator request")
        .await
        .unwrap();

    let details = env.wait_failed("long").await;
    assert_eq!(details.category(), "application");
    assert!(
        cancelled_because(&details, "operator request"),
        "{details:?}"
    );
    wait_for_count("the activity to see the cancellation", &saw_cancel, 1).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "the activity ran once");

    let hist = env.history("long").await;
    assert_well_formed(&hist, "long", 1);
    assert!(
        hist.iter().any(|e| matches!(&e.kind,
            EventKind::OrchestrationCancelRequested { reason } if reason == "operator request")),
        "{:?}",
        kinds(&hist)
    );
    // The in-flight activity's cancellation is recorded against its schedule.
    let scheduled = hist
        .iter()
        .find(|e| matches!(e.kind, EventKind::ActivityScheduled { .. }))
        .unwrap();
    assert!(
        hist.iter().any(
            |e| matches!(e.kind, EventKind::ActivityCancelRequested { .. })
                && e.source_event_id == Some(scheduled.event_id)
        ),
        "{:?}",
        kinds(&hist)
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
        0
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityFailed { .. })),
        0
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn cancelling_a_parent_cascades_to_its_child() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |ctx: OrchestrationContext, _in: String| async move {
                Ok(ctx.schedule_wait("NeverSent").await)
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_sub_orchestration("Child", "").await
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("cascade", "Parent", "")
        .await
        .unwrap();
    let child = wait_until("the child instance", || async {
        env.admin()
            .list_children("cascade")
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    env.wait_subscribed(&child, "NeverSent").await;
    env.client
        .cancel_instance("cascade", "shutting down")
        .await
        .unwrap();

    let parent = env.wait_failed("cascade").await;
    assert!(cancelled_because(&parent, "shutting down"), "{parent:?}");
    let child_details = env.wait_failed(&child).await;
    assert_eq!(child_details.category(), "application");
    assert!(
        matches!(
            &child_details,
            ErrorDetails::Application {
                kind: AppErrorKind::Cancelled { .. },
                ..
            }
        ),
        "{child_details:?}"
    );
    let child_hist = env.history(&child).await;
    assert_well_formed(&child_hist, &child, 1);
    assert_eq!(
        count(&child_hist, |k| matches!(
            k,
            EventKind::OrchestrationCancelRequested { .. }
        )),
        1
    );

    env.finish([rt]).await;
}
