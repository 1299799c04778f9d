//! Continue-as-new: one instance rolling over five executions, carrying its
//! KV store and custom status from each execution into the next; every
//! execution listed and readable through the management API.

use std::collections::HashMap;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, EventKind, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};

use crate::support::{Env, assert_well_formed, count, kinds};

const EXECUTIONS: u64 = 5;

#[tokio::test]
async fn continue_as_new_over_five_executions_carries_kv_and_custom_status() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register("Work", |ctx: ActivityContext, n: String| async move {
            Ok(format!("work {n} in execution {}", ctx.execution_id()))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Rolling", |ctx: OrchestrationContext, input: String| async move {
            let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
            // What the previous execution left behind must be visible here.
            let (want_kv, want_status) = if n == 1 {
                (None, None)
            } else {
                (Some((n - 1).to_string()), Some(format!("execution {}", n - 1)))
            };
            let got_kv = ctx.get_kv_value("count");
            let got_status = ctx.get_custom_status();
            if got_kv != want_kv || got_status != want_status {
                return Err(format!(
                    "execution {n} saw kv {got_kv:?} status {got_status:?}, wanted {want_kv:?} {want_status:?}"
                ));
            }
            ctx.set_kv_value("count", n.to_string());
            ctx.set_kv_value(format!("seen-{n}"), ctx.execution_id().to_string());
            let work = ctx.schedule_activity("Work", n.to_string()).await?;
            if n < EXECUTIONS {
                // Set in executions 1-4 only: the last execution inherits "execution 4".
                ctx.set_custom_status(format!("execution {n}"));
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok(format!("done: {work}"))
        })
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("rolling", "Rolling", "1")
        .await
        .unwrap();
    match env.wait_terminal("rolling").await {
        OrchestrationStatus::Completed {
            output,
            custom_status,
            custom_status_version,
        } => {
            assert_eq!(output, "done: work 5 in execution 5");
            assert_eq!(custom_status.as_deref(), Some("execution 4"));
            assert_eq!(custom_status_version, 4, "four updates in total");
        }
        other => panic!("unexpected {other:?}"),
    }

    assert_eq!(
        env.client.list_executions("rolling").await.unwrap(),
        (1..=EXECUTIONS).collect::<Vec<_>>()
    );
    let info = env.client.get_instance_info("rolling").await.unwrap();
    assert_eq!(info.current_execution_id, EXECUTIONS);
    assert_eq!(info.status, "Completed");

    for exec in 1..=EXECUTIONS {
        let hist = env.execution_history("rolling", exec).await;
        assert_well_formed(&hist, "rolling", exec);
        match &hist[0].kind {
            EventKind::OrchestrationStarted {
                input,
                initial_custom_status,
                ..
            } => {
                assert_eq!(input, &exec.to_string());
                let expected = (exec > 1).then(|| format!("execution {}", exec - 1));
                assert_eq!(initial_custom_status, &expected, "execution {exec}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            count(&hist, |k| matches!(k, EventKind::KeyValueSet { .. })),
            2,
            "{:?}",
            kinds(&hist)
        );
        let exec_info = env
            .client
            .get_execution_info("rolling", exec)
            .await
            .unwrap();
        assert_eq!(exec_info.execution_id, exec);
        assert_eq!(exec_info.event_count, hist.len());
        if exec < EXECUTIONS {
            assert!(matches!(&hist.last().unwrap().kind,
                EventKind::OrchestrationContinuedAsNew { input } if *input == (exec + 1).to_string()));
            assert_eq!(exec_info.status, "ContinuedAsNew");
        } else {
            assert!(matches!(
                hist.last().unwrap().kind,
                EventKind::OrchestrationCompleted { .. }
            ));
            assert_eq!(exec_info.status, "Completed");
        }
    }

    // The KV store accumulated across all executions.
    assert_eq!(
        env.client
            .get_kv_value("rolling", "count")
            .await
            .unwrap()
            .as_deref(),
        Some("5")
    );
    let all = env.client.get_kv_all_values("rolling").await.unwrap();
    let mut expected: HashMap<String, String> = (1..=EXECUTIONS)
        .map(|n| (format!("seen-{n}"), n.to_string()))
        .collect();
    expected.insert("count".into(), "5".into());
    assert_eq!(all, expected);

    env.finish([rt]).await;
}

/// An orchestration that continues as new in its very first turn, before
/// awaiting anything, three times, then completes.
#[tokio::test]
async fn continue_as_new_before_awaiting_anything() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register("Chain", |ctx: OrchestrationContext, n: String| async move {
            let n: u32 = n.parse().map_err(|e| format!("{e}"))?;
            if n < 4 {
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok(format!("done at {n}"))
        })
        .build();
    let rt = env.start(ActivityRegistry::builder().build(), orchestrations).await;
    env.client.start_orchestration("chain", "Chain", "1").await.unwrap();
    assert_eq!(env.wait_completed("chain").await, "done at 4");
    assert_eq!(
        env.client.list_executions("chain").await.unwrap(),
        vec![1, 2, 3, 4]
    );
    env.finish([rt]).await;
}
