//! Activity sessions: with two runtimes (two worker nodes, each with its own
//! provider) on one schema, every activity of a session runs on the node that
//! claimed the session, including steps scheduled after idle gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::runtime::RuntimeOptions;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{ActivityContext, EventKind, OrchestrationContext, OrchestrationRegistry};

use crate::support::{Env, assert_well_formed, count, fast_options, start_on};

const SESSIONS: usize = 4;
const STEPS: usize = 5;

/// (session id, node) of every activity execution.
type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

fn node_activities(node: &'static str, log: Log) -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Step", move |ctx: ActivityContext, input: String| {
            let log = log.clone();
            async move {
                let session = ctx.session_id().ok_or("no session id")?.to_string();
                log.lock().unwrap().push((session, node));
                Ok(format!("{input}@{node}"))
            }
        })
        .build()
}

fn node_options(node: &str) -> RuntimeOptions {
    RuntimeOptions {
        worker_node_id: Some(node.to_string()),
        ..fast_options()
    }
}

#[tokio::test]
async fn activity_sessions_keep_affinity_across_runtimes() {
    let mut env = Env::new().await;
    let log: Log = Arc::default();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "SessionWork",
            |ctx: OrchestrationContext, session: String| async move {
                let mut nodes = Vec::new();
                for step in 0..STEPS {
                    let r = ctx
                        .schedule_activity_on_session("Step", step.to_string(), session.clone())
                        .await?;
                    nodes.push(r);
                    // An idle gap: both nodes poll for work meanwhile.
                    ctx.schedule_timer(Duration::from_millis(20)).await;
                }
                Ok(nodes.join(","))
            },
        )
        .build();

    let provider_b = env.another_provider().await;
    let rt_a = env
        .start_with(
            node_activities("node-A", log.clone()),
            orchestrations.clone(),
            node_options("node-A"),
        )
        .await;
    let rt_b = start_on(
        provider_b,
        node_activities("node-B", log.clone()),
        orchestrations,
        node_options("node-B"),
    )
    .await;

    for s in 0..SESSIONS {
        env.client
            .start_orchestration(format!("session-{s}"), "SessionWork", format!("sess-{s}"))
            .await
            .unwrap();
    }
    for s in 0..SESSIONS {
        let instance = format!("session-{s}");
        let output = env.wait_completed(&instance).await;
        let steps: Vec<&str> = output.split(',').collect();
        assert_eq!(steps.len(), STEPS);
        // Every step's result names the same node.
        let nodes: BTreeSet<&str> = steps.iter().map(|r| r.split('@').nth(1).unwrap()).collect();
        assert_eq!(nodes.len(), 1, "{instance} ran on {nodes:?}");

        let hist = env.history(&instance).await;
        assert_well_formed(&hist, &instance, 1);
        let session = format!("sess-{s}");
        assert_eq!(
            count(
                &hist,
                |k| matches!(k, EventKind::ActivityScheduled { session_id: Some(id), .. }
                if *id == session)
            ),
            STEPS
        );
    }

    let mut by_session: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let entries = log.lock().unwrap().clone();
    assert_eq!(entries.len(), SESSIONS * STEPS, "each step ran once");
    for (session, node) in entries {
        by_session.entry(session).or_default().insert(node);
    }
    assert_eq!(by_session.len(), SESSIONS);
    for (session, nodes) in &by_session {
        assert_eq!(nodes.len(), 1, "{session} ran on {nodes:?}");
    }

    env.finish([rt_a, rt_b]).await;
}
