//! External events and queues: an event raised after the orchestration waits
//! is delivered; one raised while the instance runs but before it subscribes
//! is recorded yet not delivered (duroxide's positional-event contract);
//! queue messages arrive FIFO, including ones enqueued before the first
//! dequeue; and a select between a timer and an event, both outcomes.

use std::time::{Duration, Instant};

use duroxide::{Either2, EventKind, OrchestrationContext, OrchestrationRegistry};

use crate::support::{Env, assert_well_formed, count, kinds, no_activities, subscribed};

#[tokio::test]
async fn external_event_raised_after_the_wait() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Approval",
            |ctx: OrchestrationContext, _in: String| async move {
                let data = ctx.schedule_wait("Approve").await;
                Ok(format!("approved by {data}"))
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("approval", "Approval", "")
        .await
        .unwrap();
    env.wait_subscribed("approval", "Approve").await;
    env.client
        .raise_event("approval", "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("approval").await, "approved by alice");

    let hist = env.history("approval").await;
    assert_well_formed(&hist, "approval", 1);
    assert_eq!(
        kinds(&hist),
        [
            "OrchestrationStarted",
            "ExternalSubscribed",
            "ExternalEvent",
            "OrchestrationCompleted"
        ]
    );
    assert!(matches!(&hist[2].kind,
        EventKind::ExternalEvent { name, data } if name == "Approve" && data == "alice"));

    env.finish([rt]).await;
}

#[tokio::test]
async fn external_event_raised_before_the_wait_is_recorded_not_delivered() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Gated",
            |ctx: OrchestrationContext, _in: String| async move {
                // Hold the instance running without an event subscription until the
                // test opens the gate.
                ctx.dequeue_event("gate").await;
                let data = ctx.schedule_wait("Signal").await;
                Ok(data)
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("gated", "Gated", "")
        .await
        .unwrap();
    env.wait_queue_subscribed("gated", "gate").await;
    // Raised while running, before any subscription to "Signal" exists.
    env.client
        .raise_event("gated", "Signal", "early")
        .await
        .unwrap();
    env.wait_for_event(
        "gated",
        "the early event in history",
        |k| matches!(k, EventKind::ExternalEvent { data, .. } if data == "early"),
    )
    .await;
    env.client
        .enqueue_event("gated", "gate", "open")
        .await
        .unwrap();
    env.wait_subscribed("gated", "Signal").await;
    env.client
        .raise_event("gated", "Signal", "late")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("gated").await, "late");

    let hist = env.history("gated").await;
    assert_well_formed(&hist, "gated", 1);
    let pos = |pred: &dyn Fn(&EventKind) -> bool| hist.iter().position(|e| pred(&e.kind)).unwrap();
    let early = pos(&|k| matches!(k, EventKind::ExternalEvent { data, .. } if data == "early"));
    let subscription = pos(&subscribed("Signal"));
    let late = pos(&|k| matches!(k, EventKind::ExternalEvent { data, .. } if data == "late"));
    assert!(
        early < subscription && subscription < late,
        "{:?}",
        kinds(&hist)
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn queue_messages_are_dequeued_fifo() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register("Inbox", |ctx: OrchestrationContext, n: String| async move {
            let n: usize = n.parse().map_err(|e| format!("{e}"))?;
            let mut seen = Vec::with_capacity(n);
            for _ in 0..n {
                seen.push(ctx.dequeue_event("inbox").await);
            }
            Ok(seen.join(","))
        })
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("inbox", "Inbox", "20")
        .await
        .unwrap();
    // The first ten go in right behind the start, most likely before the first
    // turn; the other ten once the orchestration is waiting.
    for i in 0..10 {
        env.client
            .enqueue_event("inbox", "inbox", format!("m{i:02}"))
            .await
            .unwrap();
    }
    env.wait_queue_subscribed("inbox", "inbox").await;
    for i in 10..20 {
        env.client
            .enqueue_event("inbox", "inbox", format!("m{i:02}"))
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(env.wait_completed("inbox").await, expected.join(","));

    let hist = env.history("inbox").await;
    assert_well_formed(&hist, "inbox", 1);
    let delivered: Vec<&str> = hist
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::QueueEventDelivered { name, data } if name == "inbox" => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered, expected,
        "history records the messages in FIFO order"
    );

    env.finish([rt]).await;
}

/// Waits for event "Go" or a timer of `input` milliseconds, whichever first.
fn race_registry() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register("Race", |ctx: OrchestrationContext, ms: String| async move {
            let ms: u64 = ms.parse().map_err(|e| format!("{e}"))?;
            let timer = ctx.schedule_timer(Duration::from_millis(ms));
            let event = ctx.schedule_wait("Go");
            match ctx.select2(event, timer).await {
                Either2::First(data) => Ok(format!("event:{data}")),
                Either2::Second(()) => Ok("timeout".to_string()),
            }
        })
        .build()
}

#[tokio::test]
async fn select_timer_vs_event_event_wins() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), race_registry()).await;

    let started = Instant::now();
    env.client
        .start_orchestration("race-event", "Race", "60000")
        .await
        .unwrap();
    env.wait_subscribed("race-event", "Go").await;
    env.client
        .raise_event("race-event", "Go", "now")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("race-event").await, "event:now");
    assert!(started.elapsed() < Duration::from_secs(60));

    let hist = env.history("race-event").await;
    assert_well_formed(&hist, "race-event", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerCreated { .. })),
        1
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerFired { .. })),
        0
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ExternalEvent { .. })),
        1
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn select_timer_vs_event_timer_wins() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), race_registry()).await;

    let started = Instant::now();
    env.client
        .start_orchestration("race-timer", "Race", "300")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("race-timer").await, "timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let hist = env.history("race-timer").await;
    assert_well_formed(&hist, "race-timer", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerFired { .. })),
        1
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ExternalEvent { .. })),
        0
    );
    // The losing subscription is recorded as cancelled, tied to its subscription.
    let sub = hist
        .iter()
        .find(|e| matches!(e.kind, EventKind::ExternalSubscribed { .. }))
        .expect("subscribed");
    assert!(
        hist.iter().any(
            |e| matches!(e.kind, EventKind::ExternalSubscribedCancelled { .. })
                && e.source_event_id == Some(sub.event_id)
        ),
        "{:?}",
        kinds(&hist)
    );

    env.finish([rt]).await;
}
