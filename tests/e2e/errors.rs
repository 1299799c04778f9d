//! Failures and retries: an activity retried with exponential backoff until it
//! succeeds, retries exhausted, an activity failure handled by compensation,
//! and orchestration failures surfaced with the right `ErrorDetails`
//! category: application (returned error, panic), configuration
//! (nondeterminism) and poison (an activity no runtime has registered).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use duroxide::runtime::RuntimeOptions;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, AppErrorKind, BackoffStrategy, ConfigErrorKind, ErrorDetails, EventKind,
    OrchestrationContext, OrchestrationRegistry, PoisonMessageType, RetryPolicy,
};

use crate::support::{
    Env, assert_well_formed, count, counter, events_where, fast_options, is_app_error, kinds,
    no_activities,
};

/// An activity failing its first `fail_first` calls, then succeeding; counts calls.
fn flaky_activity(fail_first: usize) -> (ActivityRegistry, Arc<AtomicUsize>) {
    let calls = counter();
    let c = calls.clone();
    let registry = ActivityRegistry::builder()
        .register("Flaky", move |_ctx: ActivityContext, input: String| {
            let c = c.clone();
            async move {
                let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
                if attempt <= fail_first {
                    Err(format!("attempt {attempt} failed"))
                } else {
                    Ok(format!("{input} ok on attempt {attempt}"))
                }
            }
        })
        .build();
    (registry, calls)
}

fn retry_orchestration(policy: RetryPolicy) -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Retrying",
            move |ctx: OrchestrationContext, input: String| {
                let policy = policy.clone();
                async move {
                    ctx.schedule_activity_with_retry("Flaky", input, policy)
                        .await
                }
            },
        )
        .build()
}

#[tokio::test]
async fn activity_retry_with_backoff_succeeds() {
    let env = Env::new().await;
    let (activities, calls) = flaky_activity(3);
    let backoff = BackoffStrategy::Exponential {
        base: Duration::from_millis(50),
        multiplier: 2.0,
        max: Duration::from_secs(1),
    };
    let policy = RetryPolicy::new(5).with_backoff(backoff.clone());
    let rt = env.start(activities, retry_orchestration(policy)).await;

    env.client
        .start_orchestration("retry", "Retrying", "charge")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("retry").await, "charge ok on attempt 4");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "three failures, one success"
    );

    let hist = env.history("retry").await;
    assert_well_formed(&hist, "retry", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityScheduled { .. })),
        4
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
        1
    );
    let failed = events_where(&hist, |k| matches!(k, EventKind::ActivityFailed { .. }));
    let created = events_where(&hist, |k| matches!(k, EventKind::TimerCreated { .. }));
    assert_eq!((failed.len(), created.len()), (3, 3), "{:?}", kinds(&hist));
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerFired { .. })),
        3
    );
    // Each backoff timer was armed for the policy's delay after the failure it
    // follows: failure seen at t, timer computed at t' >= t, fire_at = t' + delay.
    for (attempt, (f, c)) in failed.iter().zip(&created).enumerate() {
        let delay = backoff.delay_for_attempt(attempt as u32 + 1).as_millis() as u64;
        let EventKind::TimerCreated { fire_at_ms } = c.kind else {
            unreachable!()
        };
        assert!(c.event_id > f.event_id);
        assert!(
            fire_at_ms >= f.timestamp_ms + delay && fire_at_ms <= c.timestamp_ms + delay,
            "backoff {attempt}: failed at {}, timer created at {}, fires at {fire_at_ms}, delay {delay}",
            f.timestamp_ms,
            c.timestamp_ms
        );
    }

    env.finish([rt]).await;
}

#[tokio::test]
async fn activity_retries_exhausted_fail_the_orchestration() {
    let env = Env::new().await;
    let (activities, calls) = flaky_activity(usize::MAX);
    let policy = RetryPolicy::new(3).with_backoff(BackoffStrategy::Fixed {
        delay: Duration::from_millis(20),
    });
    let rt = env.start(activities, retry_orchestration(policy)).await;

    env.client
        .start_orchestration("exhausted", "Retrying", "charge")
        .await
        .unwrap();
    let details = env.wait_failed("exhausted").await;
    assert_eq!(details.category(), "application");
    assert!(
        matches!(&details, ErrorDetails::Application { kind: AppErrorKind::OrchestrationFailed, message, .. }
            if message == "attempt 3 failed"),
        "{details:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let hist = env.history("exhausted").await;
    assert_well_formed(&hist, "exhausted", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityFailed { .. })),
        3
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerCreated { .. })),
        2
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn activity_failure_is_an_application_error_the_orchestration_handles() {
    let env = Env::new().await;
    let refunds = counter();
    let r = refunds.clone();
    let activities = ActivityRegistry::builder()
        .register("Charge", |_ctx: ActivityContext, card: String| async move {
            Err::<String, _>(format!("card {card} declined"))
        })
        .register("Refund", move |_ctx: ActivityContext, why: String| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(format!("refunded ({why})"))
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Payment",
            |ctx: OrchestrationContext, card: String| async move {
                match ctx.schedule_activity("Charge", card).await {
                    Ok(r) => Ok(r),
                    Err(e) => ctx.schedule_activity("Refund", e).await,
                }
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("payment", "Payment", "4242")
        .await
        .unwrap();
    assert_eq!(
        env.wait_completed("payment").await,
        "refunded (card 4242 declined)"
    );
    assert_eq!(refunds.load(Ordering::SeqCst), 1);

    let hist = env.history("payment").await;
    assert_well_formed(&hist, "payment", 1);
    let failed = events_where(&hist, |k| matches!(k, EventKind::ActivityFailed { .. }));
    assert_eq!(failed.len(), 1);
    match &failed[0].kind {
        EventKind::ActivityFailed { details } => {
            assert_eq!(details.category(), "application");
            assert!(!details.is_retryable());
            assert!(
                matches!(details, ErrorDetails::Application { kind: AppErrorKind::ActivityFailed, message, .. }
                    if message == "card 4242 declined"),
                "{details:?}"
            );
        }
        _ => unreachable!(),
    }

    env.finish([rt]).await;
}

#[tokio::test]
async fn orchestration_error_fails_with_application_category() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Validate",
            |ctx: OrchestrationContext, order: String| async move {
                ctx.set_custom_status("validating");
                if order.is_empty() {
                    return Err("order is empty".to_string());
                }
                Ok(order)
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("invalid", "Validate", "")
        .await
        .unwrap();
    env.client
        .start_orchestration("valid", "Validate", "o-9")
        .await
        .unwrap();
    let details = env.wait_failed("invalid").await;
    assert_eq!(env.wait_completed("valid").await, "o-9");
    assert_eq!(details.category(), "application");
    assert!(is_app_error(&details, &AppErrorKind::OrchestrationFailed));
    assert_eq!(details.display_message(), "order is empty");

    let hist = env.history("invalid").await;
    assert_well_formed(&hist, "invalid", 1);
    assert!(matches!(&hist.last().unwrap().kind,
        EventKind::OrchestrationFailed { details: d } if *d == details));

    let info = env.client.get_instance_info("invalid").await.unwrap();
    assert_eq!(info.status, "Failed");
    assert_eq!(
        env.client.list_instances_by_status("Failed").await.unwrap(),
        ["invalid"]
    );
    assert_eq!(
        env.client
            .list_instances_by_status("Completed")
            .await
            .unwrap(),
        ["valid"]
    );
    let metrics = env.client.get_system_metrics().await.unwrap();
    assert_eq!(
        (metrics.failed_instances, metrics.completed_instances),
        (1, 1)
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn orchestration_panic_fails_as_panicked() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Panics",
            |_ctx: OrchestrationContext, _in: String| async move {
                if std::hint::black_box(true) {
                    panic!("deliberate panic in orchestration code");
                }
                Ok(String::new())
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("panics", "Panics", "")
        .await
        .unwrap();
    let details = env.wait_failed("panics").await;
    assert_eq!(details.category(), "application");
    assert!(
        is_app_error(&details, &AppErrorKind::Panicked),
        "{details:?}"
    );
    assert!(
        details
            .display_message()
            .contains("deliberate panic in orchestration code"),
        "{details:?}"
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn nondeterministic_replay_fails_with_configuration_category() {
    let env = Env::new().await;
    // Flipped by the first activity: when the orchestration replays its first
    // turn, it schedules a different activity than its history records.
    let flipped = Arc::new(AtomicBool::new(false));
    let f = flipped.clone();
    let activities = ActivityRegistry::builder()
        .register("A", move |_ctx: ActivityContext, _in: String| {
            let f = f.clone();
            async move {
                f.store(true, Ordering::SeqCst);
                Ok("a".to_string())
            }
        })
        .register("B", |_ctx: ActivityContext, _in: String| async move {
            Ok("b".to_string())
        })
        .build();
    let f = flipped.clone();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Drifting", move |ctx: OrchestrationContext, _in: String| {
            let name = if f.load(Ordering::SeqCst) { "B" } else { "A" };
            async move {
                ctx.schedule_activity(name, "").await?;
                ctx.schedule_activity("B", "").await
            }
        })
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("drifting", "Drifting", "")
        .await
        .unwrap();
    let details = env.wait_failed("drifting").await;
    assert_eq!(details.category(), "configuration");
    assert!(
        matches!(
            &details,
            ErrorDetails::Configuration {
                kind: ConfigErrorKind::Nondeterminism,
                ..
            }
        ),
        "{details:?}"
    );
    assert!(!details.is_retryable());

    env.finish([rt]).await;
}

#[tokio::test]
async fn unregistered_activity_is_poisoned() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "CallsMissing",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_activity("NotRegisteredAnywhere", "x").await
            },
        )
        .build();
    let options = RuntimeOptions {
        max_attempts: 3,
        ..fast_options()
    };
    let rt = env
        .start_with(no_activities(), orchestrations, options)
        .await;

    env.client
        .start_orchestration("missing", "CallsMissing", "")
        .await
        .unwrap();
    let details = env.wait_failed("missing").await;
    assert_eq!(details.category(), "poison");
    match &details {
        ErrorDetails::Poison {
            attempt_count,
            max_attempts,
            message_type: PoisonMessageType::Activity { activity_name, .. },
            ..
        } => {
            assert_eq!(activity_name, "NotRegisteredAnywhere");
            assert_eq!(*max_attempts, 3);
            assert!(
                *attempt_count > 3,
                "poisoned once over the limit: {details:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let hist = env.history("missing").await;
    assert_well_formed(&hist, "missing", 1);
    assert!(
        hist.iter().any(|e| matches!(&e.kind,
            EventKind::ActivityFailed { details } if details.category() == "poison")),
        "{:?}",
        kinds(&hist)
    );

    env.finish([rt]).await;
}
