//! Wake-ups reach a waiter that can take the work, whatever decides who may
//! take it: session ownership (each worker slot is its own session owner),
//! tag filters, the capability (version) filter, and the runtime's session
//! cap (which changes the fetch's arguments between calls).
//!
//! Every test here sets the provider's fallback poll and the runtime's long
//! poll far above its own deadline, so a wake-up that strands work fails the
//! test deterministically instead of being rescued by a periodic re-check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::providers::{SemverRange, TagFilter};
use duroxide::runtime::RuntimeOptions;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, BackoffStrategy, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus, RetryPolicy,
};

use crate::support::{Env, fast_options, no_activities};

/// Far beyond any deadline below: nothing periodic rescues a stranded item.
const NEVER: Duration = Duration::from_secs(600);

/// How long each orchestration may take. Generous for a loaded 2-core
/// machine, yet far below [`NEVER`].
const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh schema whose provider's fallback poll never fires during a test.
async fn env() -> Env {
    env_with(true).await
}

async fn env_with(worker_prefetch: bool) -> Env {
    Env::with_config(|c| {
        c.with_fallback_poll(NEVER)
            .with_worker_prefetch(worker_prefetch)
    })
    .await
}

/// Runtime options whose long poll never ends during a test.
fn options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_long_poll_timeout: NEVER,
        ..fast_options()
    }
}

/// Waits at most [`DEADLINE`] for `instance` to complete; returns its output.
async fn completed(env: &Env, instance: &str) -> String {
    match env.client.wait_for_orchestration(instance, DEADLINE).await {
        Ok(OrchestrationStatus::Completed { output, .. }) => output,
        other => panic!("{instance} did not complete within {DEADLINE:?}: {other:?}"),
    }
}

/// An activity that fails its first call for each input and succeeds after.
fn flaky_activities() -> ActivityRegistry {
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    ActivityRegistry::builder()
        .register("Flaky", move |_ctx: ActivityContext, input: String| {
            let calls = calls.clone();
            async move {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    let n = calls.entry(input.clone()).or_default();
                    *n += 1;
                    *n
                };
                if n == 1 {
                    Err(format!("{input}: transient failure"))
                } else {
                    Ok(format!("{input} after {n} calls"))
                }
            }
        })
        .build()
}

fn retry_on_session_orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "RetryOnSession",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity_with_retry_on_session(
                    "Flaky",
                    input.clone(),
                    RetryPolicy::new(3).with_backoff(BackoffStrategy::None),
                    format!("session-{input}"),
                )
                .await
            },
        )
        .build()
}

/// The retry of a failed session activity is owned by the slot that ran the
/// first attempt; the hint for it must reach that slot, not just any slot.
async fn retry_on_session(worker_prefetch: bool) {
    let env = env_with(worker_prefetch).await;
    let rt = env
        .start_with(
            flaky_activities(),
            retry_on_session_orchestrations(),
            options(),
        )
        .await;
    for i in 0..3 {
        let instance = format!("retry-{i}");
        env.client
            .start_orchestration(&instance, "RetryOnSession", i.to_string())
            .await
            .unwrap();
        assert_eq!(
            completed(&env, &instance).await,
            format!("{i} after 2 calls")
        );
    }
    env.finish([rt]).await;
}

#[tokio::test]
async fn a_retry_on_a_session_starts_at_once() {
    retry_on_session(true).await;
}

#[tokio::test]
async fn a_retry_on_a_session_starts_at_once_without_prefetch() {
    retry_on_session(false).await;
}

/// Which runtime ran each activity: (activity input, runtime).
type Ran = Arc<Mutex<Vec<(String, &'static str)>>>;

fn recording_activities(runtime: &'static str, ran: Ran) -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Work", move |_ctx: ActivityContext, input: String| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push((input.clone(), runtime));
                Ok(input)
            }
        })
        .build()
}

/// Two runtimes on one provider, one serving untagged activities and one
/// serving tag `gpu`: each tagged activity's hint must reach the `gpu`
/// runtime's waiters, whichever waiter it wakes first. With `on_session`,
/// the tagged activities also run on a session.
async fn tagged_work_between_two_runtimes(on_session: bool) {
    let env = env().await;
    let ran: Ran = Arc::default();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Mixed",
            move |ctx: OrchestrationContext, input: String| async move {
                let mut out = Vec::new();
                for step in 0..3 {
                    let plain = ctx
                        .schedule_activity("Work", format!("{input}-plain-{step}"))
                        .await?;
                    let gpu_input = format!("{input}-gpu-{step}");
                    let gpu = if on_session {
                        ctx.schedule_activity_on_session("Work", gpu_input, format!("s-{input}"))
                            .with_tag("gpu")
                            .await?
                    } else {
                        ctx.schedule_activity("Work", gpu_input)
                            .with_tag("gpu")
                            .await?
                    };
                    out.push(format!("{plain}+{gpu}"));
                }
                Ok(out.join(","))
            },
        )
        .build();
    let plain_rt = env
        .start_with(
            recording_activities("plain", ran.clone()),
            orchestrations.clone(),
            options(),
        )
        .await;
    let gpu_rt = env
        .start_with(
            recording_activities("gpu", ran.clone()),
            no_orchestrations(),
            RuntimeOptions {
                worker_tag_filter: TagFilter::tags(["gpu"]),
                orchestration_concurrency: 1,
                ..options()
            },
        )
        .await;
    for i in 0..3 {
        let instance = format!("mixed-{i}");
        env.client
            .start_orchestration(&instance, "Mixed", i.to_string())
            .await
            .unwrap();
        completed(&env, &instance).await;
    }
    let ran = ran.lock().unwrap().clone();
    assert_eq!(ran.len(), 18, "every activity ran once: {ran:?}");
    for (input, runtime) in &ran {
        let expected = if input.contains("-gpu-") {
            "gpu"
        } else {
            "plain"
        };
        assert_eq!(*runtime, expected, "{input} ran on the {runtime} runtime");
    }
    env.finish([plain_rt, gpu_rt]).await;
}

#[tokio::test]
async fn tagged_work_reaches_the_runtime_serving_the_tag() {
    tagged_work_between_two_runtimes(false).await;
}

#[tokio::test]
async fn tagged_session_work_reaches_the_runtime_serving_the_tag() {
    tagged_work_between_two_runtimes(true).await;
}

/// An orchestration registry with nothing registered: a runtime that only
/// serves activities (its orchestration slots still wait on the queue).
fn no_orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder().build()
}

/// Records how many distinct sessions run an activity at the same moment.
#[derive(Default)]
struct SessionLoad {
    running: Mutex<HashMap<String, usize>>,
    most: AtomicUsize,
}

impl SessionLoad {
    fn enter(&self, session: &str) {
        let mut running = self.running.lock().unwrap();
        *running.entry(session.to_string()).or_default() += 1;
        self.most.fetch_max(running.len(), Ordering::SeqCst);
    }

    fn leave(&self, session: &str) {
        let mut running = self.running.lock().unwrap();
        let n = running.get_mut(session).expect("entered before");
        *n -= 1;
        if *n == 0 {
            running.remove(session);
        }
    }
}

fn session_hold_activities(load: Arc<SessionLoad>, hold: Duration) -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Hold", move |ctx: ActivityContext, input: String| {
            let load = load.clone();
            async move {
                let session = ctx.session_id().ok_or("no session")?.to_string();
                load.enter(&session);
                tokio::time::sleep(hold).await;
                load.leave(&session);
                Ok(input)
            }
        })
        .build()
}

fn session_steps_orchestrations(steps: usize) -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "SessionSteps",
            move |ctx: OrchestrationContext, session: String| async move {
                for step in 0..steps {
                    ctx.schedule_activity_on_session("Hold", step.to_string(), session.clone())
                        .await?;
                }
                Ok(session)
            },
        )
        .build()
}

/// Runs `sessions` orchestrations of `steps` session activities each on one
/// runtime capped at `cap` sessions; returns the most sessions seen at once.
async fn run_capped(sessions: usize, steps: usize, cap: usize, slots: usize) -> usize {
    let env = env().await;
    let load = Arc::new(SessionLoad::default());
    let rt = env
        .start_with(
            session_hold_activities(load.clone(), Duration::from_millis(150)),
            session_steps_orchestrations(steps),
            RuntimeOptions {
                max_sessions_per_runtime: cap,
                worker_concurrency: slots,
                ..options()
            },
        )
        .await;
    for s in 0..sessions {
        env.client
            .start_orchestration(format!("capped-{s}"), "SessionSteps", format!("s{s}"))
            .await
            .unwrap();
    }
    for s in 0..sessions {
        assert_eq!(
            completed(&env, &format!("capped-{s}")).await,
            format!("s{s}")
        );
    }
    env.finish([rt]).await;
    load.most.load(Ordering::SeqCst)
}

/// With a cap of one session, session B waits for session A; when A's
/// activity ends, B must start at once, although the other slots went to
/// sleep fetching without sessions while the cap was reached.
#[tokio::test]
async fn a_waiting_session_starts_when_the_cap_frees() {
    let most = run_capped(2, 1, 1, 2).await;
    assert_eq!(most, 1, "the cap of one session was exceeded");
}

/// The cap holds while many sessions compete for it, and every session
/// still completes.
#[tokio::test]
async fn the_session_cap_is_enforced_and_every_session_completes() {
    let most = run_capped(4, 3, 2, 4).await;
    assert!(most <= 2, "{most} sessions ran at once with a cap of 2");
}

/// Two runtimes on one provider with different capability filters: the old
/// one cannot replay executions pinned to this duroxide version, so each
/// later turn's hint must reach the current runtime's waiters.
#[tokio::test]
async fn turns_reach_the_runtime_whose_version_filter_accepts_them() {
    let env = env().await;
    let activities = || {
        ActivityRegistry::builder()
            .register("Echo", |_ctx: ActivityContext, input: String| async move {
                Ok(input)
            })
            .build()
    };
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Chain",
            |ctx: OrchestrationContext, input: String| async move {
                let mut last = input;
                for _ in 0..3 {
                    last = ctx.schedule_activity("Echo", last).await?;
                }
                Ok(last)
            },
        )
        .build();
    let current = env
        .start_with(activities(), orchestrations.clone(), options())
        .await;
    let old = env
        .start_with(
            no_activities(),
            orchestrations,
            RuntimeOptions {
                supported_replay_versions: Some(SemverRange::new(
                    semver::Version::new(0, 0, 1),
                    semver::Version::new(0, 0, 9),
                )),
                worker_tag_filter: TagFilter::None,
                ..options()
            },
        )
        .await;
    for i in 0..3 {
        let instance = format!("chain-{i}");
        env.client
            .start_orchestration(&instance, "Chain", format!("v{i}"))
            .await
            .unwrap();
        assert_eq!(completed(&env, &instance).await, format!("v{i}"));
    }
    env.finish([current, old]).await;
}
