//! Durable timers: a timer fires no earlier than its delay, and a timer still
//! pending when its runtime shuts down fires under a second runtime started
//! later on the same schema.

use std::time::{Duration, Instant};

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, Event, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};

use crate::support::{
    Env, assert_well_formed, count, fast_options, kinds, no_activities, now_ms, start_on,
};

/// `(TimerCreated event, TimerFired event)` of a history with one timer.
fn the_timer(hist: &[Event]) -> (&Event, &Event) {
    let created: Vec<&Event> = hist
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TimerCreated { .. }))
        .collect();
    let fired: Vec<&Event> = hist
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TimerFired { .. }))
        .collect();
    assert_eq!((created.len(), fired.len()), (1, 1), "{:?}", kinds(hist));
    (created[0], fired[0])
}

fn fire_at(e: &Event) -> u64 {
    match e.kind {
        EventKind::TimerCreated { fire_at_ms } | EventKind::TimerFired { fire_at_ms } => fire_at_ms,
        _ => panic!("not a timer event: {e:?}"),
    }
}

#[tokio::test]
async fn durable_timer_fires_after_its_delay() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Sleep",
            |ctx: OrchestrationContext, ms: String| async move {
                let ms: u64 = ms.parse().map_err(|e| format!("{e}"))?;
                ctx.schedule_timer(Duration::from_millis(ms)).await;
                Ok("woke".to_string())
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    let started = Instant::now();
    env.client
        .start_orchestration("sleep", "Sleep", "500")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("sleep").await, "woke");
    assert!(started.elapsed() >= Duration::from_millis(500));

    let hist = env.history("sleep").await;
    assert_well_formed(&hist, "sleep", 1);
    assert_eq!(
        kinds(&hist),
        [
            "OrchestrationStarted",
            "TimerCreated",
            "TimerFired",
            "OrchestrationCompleted"
        ]
    );
    let (created, fired) = the_timer(&hist);
    assert_eq!(fired.source_event_id, Some(created.event_id));
    assert_eq!(fire_at(created), fire_at(fired));
    assert!(fire_at(created) >= hist[0].timestamp_ms + 500);
    // The runtime saw the timer fire no earlier than its fire time.
    assert!(fired.timestamp_ms >= fire_at(fired), "{fired:?}");

    env.finish([rt]).await;
}

#[tokio::test]
async fn timer_fires_after_runtime_restart() {
    let mut env = Env::new().await;
    // Which runtime ran the step after the timer: each registers its own answer.
    let who = |me: &'static str| {
        ActivityRegistry::builder()
            .register(
                "WhoAmI",
                move |_ctx: ActivityContext, _in: String| async move { Ok(me.to_string()) },
            )
            .build()
    };
    let orchestrations = OrchestrationRegistry::builder()
        .register("Nap", |ctx: OrchestrationContext, _in: String| async move {
            ctx.schedule_timer(Duration::from_secs(2)).await;
            let runner = ctx.schedule_activity("WhoAmI", "").await?;
            Ok(format!("woke on {runner}"))
        })
        .build();

    let first = env.start(who("first"), orchestrations.clone()).await;
    env.client
        .start_orchestration("nap", "Nap", "")
        .await
        .unwrap();
    let hist = env
        .wait_for_event("nap", "TimerCreated", |k| {
            matches!(k, EventKind::TimerCreated { .. })
        })
        .await;
    let fire_at_ms = hist
        .iter()
        .find_map(|e| match e.kind {
            EventKind::TimerCreated { fire_at_ms } => Some(fire_at_ms),
            _ => None,
        })
        .unwrap();

    first.shutdown(None).await;
    assert!(
        now_ms() < fire_at_ms,
        "the first runtime stopped while the timer was still pending"
    );
    assert!(matches!(
        env.client.get_orchestration_status("nap").await.unwrap(),
        OrchestrationStatus::Running { .. }
    ));

    // A new "process": its own provider (pool, listener) on the same schema.
    let provider2 = env.another_provider().await;
    let second = start_on(provider2, who("second"), orchestrations, fast_options()).await;
    assert_eq!(env.wait_completed("nap").await, "woke on second");

    let hist = env.history("nap").await;
    assert_well_formed(&hist, "nap", 1);
    let (created, fired) = the_timer(&hist);
    assert_eq!(fire_at(created), fire_at_ms);
    assert_eq!(fired.source_event_id, Some(created.event_id));
    assert!(fired.timestamp_ms >= fire_at_ms);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
        1
    );

    env.finish([second]).await;
}
