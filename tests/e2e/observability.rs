//! What a client can observe of a running instance: custom status polled stage
//! by stage (`wait_for_status_change`), KV values read while running and after
//! completion, and per-instance stats (`get_instance_stats`).

use std::collections::HashMap;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, EventKind, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};

use crate::support::{Env, WAIT, assert_well_formed, count, no_activities, wait_until};

const STAGES: [&str; 3] = ["extract", "transform", "load"];

/// Sets a custom status and a KV entry per stage, then waits for a "next"
/// queue message before moving on.
fn staged_registry() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Staged",
            |ctx: OrchestrationContext, _in: String| async move {
                for (i, stage) in STAGES.iter().enumerate() {
                    ctx.set_custom_status(*stage);
                    ctx.set_kv_value("stage", *stage);
                    ctx.set_kv_value(format!("done-{i}"), "yes");
                    ctx.dequeue_event("next").await;
                }
                ctx.set_custom_status("finished");
                Ok("all stages done".to_string())
            },
        )
        .build()
}

#[tokio::test]
async fn custom_status_polled_from_the_client() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), staged_registry()).await;

    env.client
        .start_orchestration("staged", "Staged", "")
        .await
        .unwrap();
    let mut seen_version = 0;
    for (i, stage) in STAGES.iter().enumerate() {
        let status = env
            .client
            .wait_for_status_change(
                "staged",
                seen_version,
                std::time::Duration::from_millis(10),
                WAIT,
            )
            .await
            .unwrap();
        match status {
            OrchestrationStatus::Running {
                custom_status,
                custom_status_version,
            } => {
                assert_eq!(custom_status.as_deref(), Some(*stage));
                assert_eq!(custom_status_version, i as u64 + 1);
                seen_version = custom_status_version;
            }
            other => panic!("stage {stage}: {other:?}"),
        }
        env.client
            .enqueue_event("staged", "next", "go")
            .await
            .unwrap();
    }
    match env.wait_terminal("staged").await {
        OrchestrationStatus::Completed {
            output,
            custom_status,
            custom_status_version,
        } => {
            assert_eq!(output, "all stages done");
            assert_eq!(custom_status.as_deref(), Some("finished"));
            assert_eq!(custom_status_version, 4);
        }
        other => panic!("{other:?}"),
    }
    let hist = env.history("staged").await;
    assert_well_formed(&hist, "staged", 1);
    assert_eq!(
        count(&hist, |k| matches!(
            k,
            EventKind::CustomStatusUpdated { .. }
        )),
        4
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn kv_values_read_from_the_client() {
    let env = Env::new().await;
    let rt = env.start(no_activities(), staged_registry()).await;

    env.client
        .start_orchestration("kv", "Staged", "")
        .await
        .unwrap();
    assert_eq!(
        env.client.get_kv_value("kv", "missing").await.unwrap(),
        None
    );
    for (i, stage) in STAGES.iter().enumerate() {
        // The stage's values are visible while the instance waits in that stage.
        let key = format!("done-{i}");
        assert_eq!(
            env.client
                .wait_for_kv_value("kv", &key, WAIT)
                .await
                .unwrap(),
            "yes"
        );
        assert_eq!(
            env.client
                .get_kv_value("kv", "stage")
                .await
                .unwrap()
                .as_deref(),
            Some(*stage)
        );
        let all = env.client.get_kv_all_values("kv").await.unwrap();
        assert_eq!(all.len(), i + 2, "{all:?}");
        env.client.enqueue_event("kv", "next", "go").await.unwrap();
    }
    assert_eq!(env.wait_completed("kv").await, "all stages done");

    let mut expected: HashMap<String, String> = (0..STAGES.len())
        .map(|i| (format!("done-{i}"), "yes".to_string()))
        .collect();
    expected.insert("stage".into(), "load".into());
    assert_eq!(env.client.get_kv_all_values("kv").await.unwrap(), expected);

    env.finish([rt]).await;
}

#[tokio::test]
async fn instance_stats_track_history_and_kv() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register(
            "Echo",
            |_ctx: ActivityContext, s: String| async move { Ok(s) },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Stats",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.set_kv_value("a", "1");
                ctx.set_kv_value("bb", "22");
                ctx.set_kv_value("ccc", "x".repeat(300));
                ctx.schedule_activity("Echo", "one").await?;
                ctx.schedule_activity("Echo", "two").await?;
                // Observed by the test while the instance still runs.
                ctx.dequeue_event("finish").await;
                Ok("done".to_string())
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    assert_eq!(
        env.client.get_orchestration_stats("nope").await.unwrap(),
        None
    );
    env.client
        .start_orchestration("stats", "Stats", "")
        .await
        .unwrap();
    env.wait_queue_subscribed("stats", "finish").await;
    let running = wait_until("stats of the running instance", || async {
        env.client.get_orchestration_stats("stats").await.unwrap()
    })
    .await;
    let hist = env.history("stats").await;
    assert_eq!(running.history_event_count, hist.len() as u64);
    assert_eq!(running.kv_user_key_count, 3);
    assert_eq!(running.kv_total_value_bytes, 1 + 2 + 300);
    assert!(running.history_size_bytes > 300, "{running:?}");

    env.client
        .enqueue_event("stats", "finish", "")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("stats").await, "done");
    let done = env
        .client
        .get_orchestration_stats("stats")
        .await
        .unwrap()
        .expect("stats");
    let hist = env.history("stats").await;
    assert_eq!(done.history_event_count, hist.len() as u64);
    assert!(done.history_event_count > running.history_event_count);
    assert!(done.history_size_bytes > running.history_size_bytes);
    assert_eq!(done.kv_user_key_count, 3);
    assert_eq!(done.queue_pending_count, 0);

    env.finish([rt]).await;
}
