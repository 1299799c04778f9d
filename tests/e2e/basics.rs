//! Basic orchestration shapes: hello world, a sequential chain of 20
//! activities, fan-out/fan-in of 50, typed inputs and outputs, deterministic
//! system calls (GUID, time), a ~1 MiB payload round trip, and a mixed
//! workflow on a provider in poll-only mode (no LISTEN/NOTIFY).

use std::time::Duration;

use std::sync::atomic::Ordering;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{ActivityContext, EventKind, OrchestrationContext, OrchestrationRegistry};
use duroxide_pg::PollMode;
use serde::{Deserialize, Serialize};

use crate::support::{Env, assert_well_formed, count, counter, kinds};

#[tokio::test]
async fn hello_world() {
    let env = Env::new().await;
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
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("hello", "HelloWorld", "PostgreSQL")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("hello").await, "Hello, PostgreSQL!");

    let hist = env.history("hello").await;
    assert_well_formed(&hist, "hello", 1);
    assert_eq!(
        kinds(&hist),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );
    match &hist[0].kind {
        EventKind::OrchestrationStarted {
            name,
            version,
            input,
            parent_instance,
            ..
        } => {
            assert_eq!(name, "HelloWorld");
            assert_eq!(version, "1.0.0");
            assert_eq!(input, "PostgreSQL");
            assert_eq!(parent_instance, &None);
        }
        other => panic!("unexpected first event {other:?}"),
    }
    // The completion points back at its scheduling event.
    assert_eq!(hist[2].source_event_id, Some(hist[1].event_id));

    let info = env.client.get_instance_info("hello").await.unwrap();
    assert_eq!(info.orchestration_name, "HelloWorld");
    assert_eq!(info.orchestration_version, "1.0.0");
    assert_eq!(info.status, "Completed");
    assert_eq!(info.output.as_deref(), Some("Hello, PostgreSQL!"));
    assert_eq!(info.current_execution_id, 1);
    assert_eq!(info.parent_instance_id, None);

    env.finish([rt]).await;
}

#[tokio::test]
async fn sequential_chain_of_20_activities() {
    let env = Env::new().await;
    let calls = counter();
    let c = calls.clone();
    let activities = ActivityRegistry::builder()
        .register("AddOne", move |_ctx: ActivityContext, n: String| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
                Ok((n + 1).to_string())
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Chain",
            |ctx: OrchestrationContext, start: String| async move {
                let mut value = start;
                for _ in 0..20 {
                    value = ctx.schedule_activity("AddOne", value).await?;
                }
                Ok(value)
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("chain", "Chain", "100")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("chain").await, "120");
    assert_eq!(calls.load(Ordering::SeqCst), 20);

    let hist = env.history("chain").await;
    assert_well_formed(&hist, "chain", 1);
    // Strictly alternating schedule/complete, each completion answering the
    // schedule right before it, with the inputs 100, 101, ..., 119.
    let body = &hist[1..hist.len() - 1];
    assert_eq!(body.len(), 40, "{:?}", kinds(&hist));
    for (i, pair) in body.chunks(2).enumerate() {
        match (&pair[0].kind, &pair[1].kind) {
            (
                EventKind::ActivityScheduled { name, input, .. },
                EventKind::ActivityCompleted { result },
            ) => {
                assert_eq!(name, "AddOne");
                assert_eq!(input, &(100 + i).to_string());
                assert_eq!(result, &(101 + i).to_string());
                assert_eq!(pair[1].source_event_id, Some(pair[0].event_id));
            }
            other => panic!("step {i}: unexpected events {other:?}"),
        }
    }

    env.finish([rt]).await;
}

#[tokio::test]
async fn fan_out_fan_in_of_50() {
    let env = Env::new().await;
    let calls = counter();
    let c = calls.clone();
    let activities = ActivityRegistry::builder()
        .register("Square", move |_ctx: ActivityContext, n: String| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
                Ok((n * n).to_string())
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "FanOut",
            |ctx: OrchestrationContext, _in: String| async move {
                let tasks: Vec<_> = (1..=50u64)
                    .map(|i| ctx.schedule_activity("Square", i.to_string()))
                    .collect();
                let results = ctx.join(tasks).await;
                let squares: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
                Ok(squares.join(","))
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("fan", "FanOut", "")
        .await
        .unwrap();
    let output = env.wait_completed("fan").await;
    let expected: Vec<String> = (1..=50u64).map(|i| (i * i).to_string()).collect();
    assert_eq!(
        output,
        expected.join(","),
        "results come back in scheduling order"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 50);

    let hist = env.history("fan").await;
    assert_well_formed(&hist, "fan", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityScheduled { .. })),
        50
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
        50
    );
    // All 50 were scheduled in the first turn, before any completion arrived.
    assert!(
        hist[1..=50]
            .iter()
            .all(|e| matches!(e.kind, EventKind::ActivityScheduled { .. })),
        "{:?}",
        kinds(&hist)
    );
    // Every completion answers a distinct scheduling event.
    let mut sources: Vec<u64> = hist
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ActivityCompleted { .. }))
        .map(|e| e.source_event_id.expect("completion has a source"))
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, (2..=51).collect::<Vec<u64>>());

    env.finish([rt]).await;
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Order {
    id: String,
    items: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Receipt {
    id: String,
    total: u32,
    lines: usize,
}

#[tokio::test]
async fn typed_inputs_and_outputs() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register_typed("Total", |_ctx: ActivityContext, order: Order| async move {
            Ok(Receipt {
                total: order.items.iter().sum(),
                lines: order.items.len(),
                id: order.id,
            })
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register_typed(
            "Checkout",
            |ctx: OrchestrationContext, order: Order| async move {
                let receipt: Receipt = ctx.schedule_activity_typed("Total", &order).await?;
                Ok(receipt)
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    let order = Order {
        id: "o-1".into(),
        items: vec![3, 4, 5],
    };
    env.client
        .start_orchestration_typed("typed", "Checkout", &order)
        .await
        .unwrap();
    let receipt: Receipt = env
        .client
        .wait_for_orchestration_typed("typed", crate::support::WAIT)
        .await
        .unwrap()
        .expect("completed");
    assert_eq!(
        receipt,
        Receipt {
            id: "o-1".into(),
            total: 12,
            lines: 3
        }
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn system_calls_are_stable_across_replays() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register(
            "Noop",
            |_ctx: ActivityContext, s: String| async move { Ok(s) },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "SysCalls",
            |ctx: OrchestrationContext, _in: String| async move {
                let guid = ctx.new_guid().await?;
                let now = ctx.utc_now().await?;
                let now_ms = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| e.to_string())?
                    .as_millis();
                // Later turns replay the values above from history; they must not change.
                for i in 0..3 {
                    ctx.schedule_activity("Noop", i.to_string()).await?;
                }
                Ok(format!("{guid}|{now_ms}"))
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    env.client
        .start_orchestration("sys", "SysCalls", "")
        .await
        .unwrap();
    let output = env.wait_completed("sys").await;
    let (guid, now_ms) = output.split_once('|').unwrap();
    assert_eq!(guid.len(), 36, "a GUID: {guid}");
    let now_ms: u128 = now_ms.parse().unwrap();
    assert!(
        now_ms >= before.saturating_sub(1000),
        "{now_ms} vs {before}"
    );

    // The values the orchestration returned are the ones recorded by the
    // system activities in its first turns.
    let hist = env.history("sys").await;
    assert_well_formed(&hist, "sys", 1);
    let results: Vec<&str> = hist
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityCompleted { result } => Some(result.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(results[0], guid);
    assert_eq!(results[1], now_ms.to_string());

    env.finish([rt]).await;
}

#[tokio::test]
async fn large_payload_round_trip_1mib() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register("Reverse", |_ctx: ActivityContext, s: String| async move {
            Ok(s.chars().rev().collect::<String>())
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Big",
            |ctx: OrchestrationContext, input: String| async move {
                let reversed = ctx.schedule_activity("Reverse", input).await?;
                Ok(format!("{}:{}", reversed.len(), reversed))
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    // ~1 MiB of varied text: characters JSON must escape and a multi-byte one included.
    let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789\"\\/{}[]\n\t é";
    let payload: String = alphabet.chars().cycle().take(1024 * 1024).collect();
    let expected_rev: String = payload.chars().rev().collect();
    env.client
        .start_orchestration("big", "Big", payload.clone())
        .await
        .unwrap();
    let output = env.wait_completed("big").await;
    assert_eq!(output, format!("{}:{}", expected_rev.len(), expected_rev));

    let hist = env.history("big").await;
    assert_well_formed(&hist, "big", 1);
    match (&hist[0].kind, &hist[1].kind, &hist[2].kind) {
        (
            EventKind::OrchestrationStarted { input, .. },
            EventKind::ActivityScheduled { input: act_in, .. },
            EventKind::ActivityCompleted { result },
        ) => {
            assert_eq!(input, &payload);
            assert_eq!(act_in, &payload);
            assert_eq!(result, &expected_rev);
        }
        other => panic!("unexpected history {other:?}"),
    }
    let stats = env
        .client
        .get_orchestration_stats("big")
        .await
        .unwrap()
        .expect("stats for an existing instance");
    assert_eq!(stats.history_event_count, 4);
    assert!(
        stats.history_size_bytes >= 4 * payload.len() as u64,
        "history holds the payload four times: {stats:?}"
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn poll_only_provider_runs_activities_timers_and_events() {
    let env = Env::with_poll_mode(PollMode::PollOnly).await;
    let activities = ActivityRegistry::builder()
        .register("Double", |_ctx: ActivityContext, n: String| async move {
            let n: u64 = n.parse().map_err(|e| format!("{e}"))?;
            Ok((2 * n).to_string())
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Mixed", |ctx: OrchestrationContext, n: String| async move {
            let doubled = ctx.schedule_activity("Double", n).await?;
            ctx.schedule_timer(Duration::from_millis(200)).await;
            let tasks = (0..5).map(|i| ctx.schedule_activity("Double", i.to_string()));
            let fanned: Vec<String> = ctx
                .join(tasks.collect())
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            let signal = ctx.schedule_wait("Continue").await;
            Ok(format!("{doubled}|{}|{signal}", fanned.join(",")))
        })
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("polling", "Mixed", "21")
        .await
        .unwrap();
    env.wait_subscribed("polling", "Continue").await;
    env.client
        .raise_event("polling", "Continue", "go")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("polling").await, "42|0,2,4,6,8|go");

    let hist = env.history("polling").await;
    assert_well_formed(&hist, "polling", 1);
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::ActivityCompleted { .. })),
        6
    );
    assert_eq!(
        count(&hist, |k| matches!(k, EventKind::TimerFired { .. })),
        1
    );

    env.finish([rt]).await;
}
