// The hostile-input cases, shared by `hostile_input.rs` (directly) and
// `pgbouncer_hostile_input.rs` (through PgBouncer, where every argument is
// written into the call as a literal: the quoting is what is under test).
// The contract they pin down is in `hostile_input.rs`'s module doc.

use std::collections::BTreeSet;
use std::time::Duration;

use duroxide::providers::{
    ExecutionMetadata, Provider, ProviderAdmin, ProviderError, TagFilter, WorkItem,
};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, ClientError, ErrorDetails, Event, EventKind, OrchestrationContext,
    OrchestrationRegistry,
};
use duroxide_pg::PostgresProvider;

use crate::common;
use crate::support::{self, Env, kinds};

/// Hostile strings, each used as an instance id, an event name and a payload.
/// None contains NUL (that has tests of its own) and none is empty.
const HOSTILE: &[&str] = &[
    r#"it's "quoted" 'single' "double" `back` ''"#,
    r#"C:\path\to\file \\ \n \t \" \u0041 \u0000 \x00 \"#,
    "'; DROP TABLE instances; --",
    "\"); DELETE FROM history WHERE ('1'='1",
    "$$ SELECT 1; $$ $body$ $1 $2 ::text",
    "%_%\\% LIKE '%' ESCAPE '\\'",
    "😀🚀👨‍👩‍👧‍👦🏳️‍🌈 𝄞",
    "مرحبا שלום \u{202E}txt.exe\u{202C} e\u{301} Z\u{334}\u{321}\u{31B}a\u{337}l\u{338}g\u{336}o",
    "漢字 かな カナ 한국어 中文",
    "tab\tnewline\ncr\r bell\u{7} esc\u{1b} del\u{7f} nbsp\u{a0} zwsp\u{200b} bom\u{feff}",
    "{\"type\":\"OrchestrationStarted\",\"x\":[1,2,null]}",
    "noncharacters \u{fffe}\u{ffff}\u{10ffff} replacement \u{fffd}",
    "  leading and trailing spaces  ",
];

/// Real NUL characters next to the six-character text `\u0000`, which must
/// stay distinguishable after the round trip.
const NUL_PAYLOAD: &str = "nul:\0|escaped-text:\\u0000|quote-nul:\"\0\"|end\0";

const LOCK: Duration = Duration::from_secs(30);

/// A step of the manual provider cycle that returned an error.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    error: ProviderError,
}

fn at(step: &'static str) -> impl FnOnce(ProviderError) -> Failed {
    move |error| Failed { step, error }
}

fn start(instance: &str, input: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.into(),
        orchestration: "Hostile".into(),
        input: input.into(),
        version: Some("1.0.0".into()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: 1,
    }
}

fn event(instance: &str, id: u64, source: Option<u64>, kind: EventKind) -> Event {
    Event::with_event_id(id, instance, 1, source, kind)
}

/// The start event of `instance` with `input`.
fn started(instance: &str, input: &str) -> Event {
    event(
        instance,
        1,
        None,
        EventKind::OrchestrationStarted {
            name: "Hostile".into(),
            version: "1.0.0".into(),
            input: input.into(),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        },
    )
}

/// The events of the first turn of the manual cycle: every string field
/// carries `payload`.
fn first_turn(instance: &str, payload: &str) -> Vec<Event> {
    vec![
        started(instance, payload),
        event(
            instance,
            2,
            None,
            EventKind::ExternalSubscribed {
                name: payload.into(),
            },
        ),
        event(
            instance,
            3,
            None,
            EventKind::ExternalEvent {
                name: payload.into(),
                data: payload.into(),
            },
        ),
        event(
            instance,
            4,
            None,
            EventKind::ActivityScheduled {
                name: payload.into(),
                input: payload.into(),
                session_id: None,
                tag: None,
            },
        ),
    ]
}

fn activity(instance: &str, payload: &str) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.into(),
        execution_id: 1,
        id: 4,
        name: payload.into(),
        input: payload.into(),
        session_id: None,
        tag: None,
    }
}

fn activity_done(instance: &str, payload: &str) -> WorkItem {
    WorkItem::ActivityCompleted {
        instance: instance.into(),
        execution_id: 1,
        id: 4,
        result: payload.into(),
    }
}

fn second_turn(instance: &str, payload: &str) -> Vec<Event> {
    vec![
        event(
            instance,
            5,
            Some(4),
            EventKind::ActivityCompleted {
                result: payload.into(),
            },
        ),
        event(
            instance,
            6,
            None,
            EventKind::OrchestrationCompleted {
                output: payload.into(),
            },
        ),
    ]
}

/// Visible (orchestrator, worker, timer) queue depths of an idle provider.
const EMPTY: (usize, usize, usize) = (0, 0, 0);

async fn depths(p: &PostgresProvider) -> (usize, usize, usize) {
    let d = p.get_queue_depths().await.expect("queue depths");
    (d.orchestrator_queue, d.worker_queue, d.timer_queue)
}

/// Asserts the provider holds no work at all: nothing visible, nothing to fetch.
async fn assert_no_work(p: &PostgresProvider, context: &str) {
    assert_eq!(depths(p).await, EMPTY, "{context}: queues must be empty");
    assert!(
        p.fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .is_none(),
        "{context}: no orchestration item to fetch"
    );
    assert!(
        p.fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
            .await
            .expect("fetch work")
            .is_none(),
        "{context}: no work item to fetch"
    );
}

/// A full provider-level cycle for `instance` with `payload` in every string
/// field (start input, event name and data, activity name, input and result,
/// output): two enqueues, fetch, ack, worker fetch and ack, fetch, ack, read.
/// Everything that comes back must equal what went in; an error names its step.
async fn cycle(p: &PostgresProvider, instance: &str, payload: &str) -> Result<(), Failed> {
    let start = start(instance, payload);
    let raised = WorkItem::ExternalRaised {
        instance: instance.into(),
        name: payload.into(),
        data: payload.into(),
    };
    p.enqueue_for_orchestrator(start.clone(), None)
        .await
        .map_err(at("enqueue start"))?;
    p.enqueue_for_orchestrator(raised.clone(), None)
        .await
        .map_err(at("enqueue event"))?;

    let (item, token, attempts) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .map_err(at("first fetch"))?
        .expect("the enqueued instance is fetchable");
    assert_eq!(item.instance, instance, "fetched instance id");
    assert_eq!(item.messages, [start, raised], "fetched messages");
    assert!(item.history.is_empty());
    assert_eq!(item.history_error, None);
    assert_eq!(item.orchestration_name, "Hostile");
    assert_eq!(attempts, 1);

    let turn1 = first_turn(instance, payload);
    let work = activity(instance, payload);
    p.ack_orchestration_item(
        &token,
        1,
        turn1.clone(),
        vec![work.clone()],
        vec![],
        common::naming_metadata("Hostile"),
        vec![],
    )
    .await
    .map_err(at("first ack"))?;

    let (fetched, wtoken, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .map_err(at("fetch work item"))?
        .expect("the scheduled activity is fetchable");
    assert_eq!(fetched, work, "fetched work item");
    let done = activity_done(instance, payload);
    p.ack_work_item(&wtoken, Some(done.clone()))
        .await
        .map_err(at("ack work item"))?;

    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .map_err(at("second fetch"))?
        .expect("the activity result is fetchable");
    assert_eq!(item.instance, instance);
    assert_eq!(item.messages, [done], "activity completion message");
    assert_eq!(item.history, turn1, "history handed to the second turn");
    assert_eq!(item.history_error, None);

    let turn2 = second_turn(instance, payload);
    let completed = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some(payload.into()),
        ..Default::default()
    };
    if let Err(error) = p
        .ack_orchestration_item(&token, 1, turn2.clone(), vec![], vec![], completed, vec![])
        .await
    {
        // A failed ack is atomic: the first turn's history alone, lease kept.
        assert_eq!(p.read(instance).await.expect("read"), turn1);
        p.abandon_orchestration_item(&token, None, false)
            .await
            .expect("abandon after a failed ack");
        return Err(Failed {
            step: "completing ack",
            error,
        });
    }

    let history = p.read(instance).await.map_err(at("read"))?;
    assert_eq!(
        history,
        [turn1, turn2].concat(),
        "stored history of {instance:?}"
    );
    let info = p
        .get_instance_info(instance)
        .await
        .map_err(at("get_instance_info"))?;
    assert_eq!(info.instance_id, instance);
    assert_eq!(info.status, "Completed");
    assert_eq!(info.output.as_deref(), Some(payload), "stored output");
    Ok(())
}

/// Asserts a permanent error that says what is wrong: `expected` appears in
/// the message, together with its SQLSTATE `code`.
fn assert_permanent(err: &ProviderError, operation: &str, expected: &str, code: &str) {
    assert!(!err.is_retryable(), "must be permanent: {err:?}");
    assert_eq!(err.operation, operation, "{err:?}");
    assert!(
        err.message.contains(expected) && err.message.contains(code),
        "error must name the problem ({expected}, SQLSTATE {code}): {err:?}"
    );
}

fn assert_nul_rejected(err: &ProviderError, operation: &str) {
    assert_permanent(err, operation, "0x00", "22021");
}

/// Pseudo-random alphanumeric text: PostgreSQL cannot compress it, so an
/// index entry holding it keeps its full size.
fn incompressible(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// `len` characters cycling through `alphabet`.
fn cycled(alphabet: &str, len: usize) -> String {
    alphabet.chars().cycle().take(len).collect()
}

/// Asserts the permanent error for an instance id over the provider's
/// limit (2,048 bytes): it names the size and the limit.
fn assert_too_long(err: &ProviderError, operation: &str, id: &str) {
    assert!(!err.is_retryable(), "must be permanent: {err:?}");
    assert_eq!(err.operation, operation, "{err:?}");
    let expected = format!(
        "instance id of {} bytes is longer than the 2048 bytes",
        id.len()
    );
    assert!(err.message.contains(&expected), "{err:?}");
}

/// The contract for an extreme instance id: up to 2,048 bytes the whole
/// cycle round-trips; beyond, both queues refuse it with a permanent error
/// naming the limit and nothing is stored. (PostgreSQL's own index limit,
/// about 2.7 kB and dependent on how well the id compresses, is never
/// reached: an id accepted by enqueue and then refused by the history's
/// index would make an instance that can never run.) Returns whether it
/// round-tripped.
async fn extreme_id_contract(p: &PostgresProvider, instance: &str) -> bool {
    match cycle(p, instance, "payload").await {
        Ok(()) => {
            assert!(instance.len() <= 2048, "{} bytes accepted", instance.len());
            true
        }
        Err(Failed {
            step: "enqueue start",
            error,
        }) => {
            assert_too_long(&error, "enqueue_for_orchestrator", instance);
            let err = p
                .enqueue_for_worker(activity(instance, "payload"))
                .await
                .expect_err("the worker queue refuses it too");
            assert_too_long(&err, "enqueue_for_worker", instance);
            assert_no_work(p, "after refusing an over-long id").await;
            assert_eq!(p.read(instance).await.expect("read"), []);
            assert!(
                p.list_instances()
                    .await
                    .unwrap()
                    .iter()
                    .all(|i| i != instance)
            );
            false
        }
        Err(Failed { step, error }) => panic!(
            "an instance id of {} bytes was accepted by enqueue_for_orchestrator but then \
             fails at `{step}`: {error:?}",
            instance.len()
        ),
    }
}

#[tokio::test]
async fn provider_round_trips_hostile_ids_names_and_payloads() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    // Each hostile string is the instance id and every payload of its own
    // cycle, all in one schema; the empty string too.
    let ids: Vec<&str> = HOSTILE.iter().copied().chain([""]).collect();
    for &s in &ids {
        cycle(p, s, s)
            .await
            .unwrap_or_else(|f| panic!("{s:?}: {f:?}"));
    }
    // Each instance sees only its own history (no quoting or wildcard
    // cross-talk), the instance list holds exactly these ids, nothing is left.
    for &s in &ids {
        let history = p.read(s).await.unwrap();
        assert_eq!(history.len(), 6, "{s:?}");
        assert!(history.iter().all(|e| e.instance_id == s), "{s:?}");
    }
    let listed: BTreeSet<String> = p.list_instances().await.unwrap().into_iter().collect();
    let expected: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, expected);
    assert_eq!(p.read("%").await.unwrap(), []);
    assert_eq!(p.read("'; DROP TABLE instances; -").await.unwrap(), []);
    assert_no_work(p, "after all cycles").await;
    env.finish([]).await;
}

#[tokio::test]
async fn provider_round_trips_nul_in_payloads_and_event_names() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    // NUL in the start input, event name and data, activity name, input and
    // result, and history events; NUL also in the output of the last ack,
    // which ack_orchestration_item stores outside JSON (executions.output).
    let outcome = cycle(p, "nul-payloads", NUL_PAYLOAD).await;
    if let Err(f) = outcome {
        panic!(
            "a payload with NUL did not round-trip: step `{}` failed with {:?} \
             (everything before it did round-trip; the failed ack stored nothing)",
            f.step, f.error
        );
    }
    // The six-character text `\u0000` and real NUL stay apart.
    let history = p.read("nul-payloads").await.unwrap();
    match &history[0].kind {
        EventKind::OrchestrationStarted { input, .. } => {
            assert_eq!(input.matches('\0').count(), 3);
            assert!(input.contains("escaped-text:\\u0000|"));
        }
        other => panic!("unexpected first event {other:?}"),
    }
    env.finish([]).await;
}

#[tokio::test]
async fn provider_rejects_nul_in_instance_ids_permanently_and_stores_nothing() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    let bad = "nul\0id";

    // Enqueues: permanent error naming the byte, nothing stored.
    let err = p
        .enqueue_for_orchestrator(start(bad, "x"), None)
        .await
        .expect_err("NUL instance id");
    assert_nul_rejected(&err, "enqueue_for_orchestrator");
    let raised = WorkItem::ExternalRaised {
        instance: bad.into(),
        name: "n".into(),
        data: "d".into(),
    };
    let err = p
        .enqueue_for_orchestrator(raised, None)
        .await
        .expect_err("NUL instance id");
    assert_nul_rejected(&err, "enqueue_for_orchestrator");
    let err = p
        .enqueue_for_worker(activity(bad, "x"))
        .await
        .expect_err("NUL instance id");
    assert_nul_rejected(&err, "enqueue_for_worker");
    assert_no_work(p, "after refused enqueues").await;

    // Reads of such an id: permanent error too (never a silently different id).
    let err = p.read(bad).await.expect_err("read of a NUL instance id");
    assert_nul_rejected(&err, "read");

    // An ack whose worker item, orchestrator item or cancelled activity names
    // a NUL instance fails whole: no history, no items, lease kept.
    let ok = "bystander";
    let (_, token, _) = common::enqueue_and_fetch(p, start(ok, "in")).await.unwrap();
    let turn1 = vec![started(ok, "in")];
    let child = start(bad, "child input");
    let cancelled = duroxide::providers::ScheduledActivityIdentifier {
        instance: bad.into(),
        execution_id: 1,
        activity_id: 2,
    };
    type Bad = (
        Vec<WorkItem>,
        Vec<WorkItem>,
        Vec<duroxide::providers::ScheduledActivityIdentifier>,
    );
    let attempts: [Bad; 3] = [
        (vec![activity(bad, "x")], vec![], vec![]),
        (vec![], vec![child], vec![]),
        (vec![], vec![], vec![cancelled]),
    ];
    for (workers, orchestrators, cancels) in attempts {
        let err = p
            .ack_orchestration_item(
                &token,
                1,
                turn1.clone(),
                workers,
                orchestrators,
                common::naming_metadata("Hostile"),
                cancels,
            )
            .await
            .expect_err("ack naming a NUL instance");
        assert_nul_rejected(&err, "ack_orchestration_item");
        assert_eq!(p.read(ok).await.unwrap(), [], "failed ack stored history");
        assert_eq!(depths(p).await, EMPTY, "failed ack stored items");
        assert!(p.list_instances().await.unwrap().is_empty());
    }
    // The lease survived the failed acks: the same token commits the turn.
    p.ack_orchestration_item(
        &token,
        1,
        turn1.clone(),
        vec![activity(ok, "in")],
        vec![],
        common::naming_metadata("Hostile"),
        vec![],
    )
    .await
    .unwrap();

    // A worker ack whose completion names a NUL instance fails and keeps the
    // work item locked to its token; the correct completion then succeeds.
    let (_, wtoken, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .unwrap()
        .unwrap();
    let err = p
        .ack_work_item(&wtoken, Some(activity_done(bad, "r")))
        .await
        .expect_err("completion for a NUL instance");
    assert_nul_rejected(&err, "ack_work_item");
    assert_eq!(depths(p).await, EMPTY);
    p.ack_work_item(&wtoken, Some(activity_done(ok, "r")))
        .await
        .unwrap();
    let (item, _, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.instance, ok);
    assert_eq!(item.messages, [activity_done(ok, "r")]);
    assert_eq!(item.history, turn1);
    assert_eq!(p.list_instances().await.unwrap(), [ok]);
    env.finish([]).await;
}

#[tokio::test]
async fn provider_ten_thousand_character_instance_ids() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    // 10,000 characters, repetitive or random, ASCII or multi-byte: over the
    // 2,048-byte limit, so refused up front whatever PostgreSQL could index.
    let ascii = cycled("instance-0123456789abcdef/", 10_000);
    let unicode = cycled("😀漢字ע\u{301}'\"\\$$;", 10_000);
    let random = incompressible(10_000, 42);
    for id in [&ascii, &unicode, &random] {
        assert_eq!(id.chars().count(), 10_000);
        assert!(!extreme_id_contract(p, id).await);
    }
    assert!(p.list_instances().await.unwrap().is_empty());
    env.finish([]).await;
}

#[tokio::test]
async fn provider_instance_ids_at_the_limit_round_trip_and_beyond_are_refused() {
    // Incompressible ids are the worst case for PostgreSQL's indexes: one of
    // exactly 2,048 bytes runs end to end; 2,049 and the sizes that once fit
    // the queue's index but not the history's (2,677..=2,684) are refused
    // at enqueue, before anything is stored.
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    assert!(extreme_id_contract(p, &incompressible(2_048, 1)).await);
    for (len, seed) in [(2_049, 2), (2_680, 3), (2_700, 4)] {
        assert!(!extreme_id_contract(p, &incompressible(len, seed)).await);
    }
    env.finish([]).await;
}

#[tokio::test]
async fn provider_round_trips_one_mib_payloads() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    // 1 MiB of every hostile string (no NUL), in every payload of one cycle.
    let payload = cycled(&HOSTILE.concat(), 1024 * 1024);
    cycle(p, "one-mib", &payload)
        .await
        .unwrap_or_else(|f| panic!("{f:?}"));
    env.finish([]).await;
}

/// The end-to-end orchestration: an activity, a sub-orchestration and an
/// external event named by the input; the output lists what came back.
fn hostile_registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, s: String| async move {
            Ok(format!("echo:{s}"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Hostile",
            |ctx: OrchestrationContext, input: String| async move {
                let echoed = ctx.schedule_activity("Echo", input.clone()).await?;
                let child = ctx
                    .schedule_sub_orchestration("Child", input.clone())
                    .await?;
                let data = ctx.schedule_wait(input.clone()).await;
                Ok(
                    serde_json::to_string(&[ctx.instance_id(), input, echoed, child, data])
                        .unwrap(),
                )
            },
        )
        .register(
            "Child",
            |_ctx: OrchestrationContext, input: String| async move { Ok(child_output(&input)) },
        )
        .build();
    (activities, orchestrations)
}

/// The child's output: its input as a JSON string (so a NUL in the input is
/// escaped: a raw NUL in an orchestration output has a test of its own).
fn child_output(input: &str) -> String {
    serde_json::to_string(&format!("child:{input}")).unwrap()
}

fn expected_output(instance: &str, input: &str, data: &str) -> String {
    serde_json::to_string(&[
        instance.to_string(),
        input.to_string(),
        format!("echo:{input}"),
        child_output(input),
        data.to_string(),
    ])
    .unwrap()
}

/// Starts `Hostile` as `instance` with `input`, raises event `input` with
/// `data` once subscribed, and checks output, history and child exactly.
async fn run_hostile(env: &Env, instance: &'static str, input: &'static str, data: &str) {
    env.client
        .start_orchestration(instance, "Hostile", input)
        .await
        .unwrap_or_else(|e| panic!("start {instance:?}: {e}"));
    env.wait_subscribed(instance, input).await;
    env.client
        .raise_event(instance, input, data)
        .await
        .unwrap_or_else(|e| panic!("raise on {instance:?}: {e}"));
    let expected = expected_output(instance, input, data);
    assert_eq!(env.wait_completed(instance).await, expected, "{instance:?}");

    let hist = env.history(instance).await;
    support::assert_well_formed(&hist, instance, 1);
    assert_eq!(
        kinds(&hist),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "SubOrchestrationScheduled",
            "SubOrchestrationCompleted",
            "ExternalSubscribed",
            "ExternalEvent",
            "OrchestrationCompleted"
        ],
        "{instance:?}"
    );
    let child_id = match &hist[3].kind {
        EventKind::SubOrchestrationScheduled {
            name,
            instance: child,
            input: child_input,
        } => {
            assert_eq!((name.as_str(), child_input.as_str()), ("Child", input));
            duroxide::build_child_instance_id(instance, child)
        }
        other => panic!("{other:?}"),
    };
    let child_out = child_output(input);
    let echo_out = format!("echo:{input}");
    let expected_kinds = [
        EventKind::OrchestrationStarted {
            name: "Hostile".into(),
            version: "1.0.0".into(),
            input: input.into(),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        },
        EventKind::ActivityScheduled {
            name: "Echo".into(),
            input: input.into(),
            session_id: None,
            tag: None,
        },
        EventKind::ActivityCompleted { result: echo_out },
        hist[3].kind.clone(),
        EventKind::SubOrchestrationCompleted {
            result: child_out.clone(),
        },
        EventKind::ExternalSubscribed { name: input.into() },
        EventKind::ExternalEvent {
            name: input.into(),
            data: data.into(),
        },
        EventKind::OrchestrationCompleted {
            output: expected.clone(),
        },
    ];
    for (e, want) in hist.iter().zip(&expected_kinds) {
        match (&e.kind, want) {
            // duroxide stamps its own version into the start event.
            (
                EventKind::OrchestrationStarted {
                    input: got, name, ..
                },
                _,
            ) => {
                assert_eq!((name.as_str(), got.as_str()), ("Hostile", input));
            }
            (got, want) => assert_eq!(got, want, "{instance:?}"),
        }
    }

    // The child (id derived from the hostile parent id) and the stored output.
    assert_eq!(env.wait_completed(&child_id).await, child_out);
    let child_info = env.client.get_instance_info(&child_id).await.unwrap();
    assert_eq!(child_info.parent_instance_id.as_deref(), Some(instance));
    let info = env.client.get_instance_info(instance).await.unwrap();
    assert_eq!(info.instance_id, instance);
    assert_eq!(info.status, "Completed");
    assert_eq!(info.output.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn e2e_hostile_ids_event_names_and_payloads_round_trip() {
    let env = Env::new().await;
    let (activities, orchestrations) = hostile_registries();
    let rt = env.start(activities, orchestrations).await;
    // All instances at once: one runtime, one schema, no cross-talk.
    let runs = HOSTILE
        .iter()
        .map(|&s| run_hostile(&env, s, s, s))
        .collect::<Vec<_>>();
    futures_util::future::join_all(runs).await;
    let roots: BTreeSet<String> = env
        .client
        .list_all_instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|id| !id.contains("::sub::"))
        .collect();
    let expected: BTreeSet<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
    assert_eq!(roots, expected);
    env.finish([rt]).await;
}

#[tokio::test]
async fn e2e_nul_in_input_event_name_event_data_and_activity_payloads_round_trips() {
    let env = Env::new().await;
    let (activities, orchestrations) = hostile_registries();
    let rt = env.start(activities, orchestrations).await;
    // The output of `Hostile` is JSON, which escapes the NUL characters of
    // its parts: this run keeps raw NUL out of the output only.
    run_hostile(&env, "nul-in-payloads", NUL_PAYLOAD, "data\0with\0nul").await;
    env.finish([rt]).await;
}

#[tokio::test]
async fn e2e_nul_in_output_custom_status_and_kv_value_round_trips() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Output",
            |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
        )
        .register(
            "Status",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.set_custom_status(input);
                Ok("done".to_string())
            },
        )
        .register(
            "Kv",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.set_kv_value("key", input);
                Ok("done".to_string())
            },
        )
        .build();
    let rt = env.start(support::no_activities(), orchestrations).await;
    for (instance, orchestration) in [
        ("nul-out", "Output"),
        ("nul-status", "Status"),
        ("nul-kv", "Kv"),
    ] {
        env.client
            .start_orchestration(instance, orchestration, NUL_PAYLOAD)
            .await
            .unwrap();
    }
    // Collect every deviation, so one run reports all three.
    let mut problems = Vec::new();
    for (instance, expected) in [
        ("nul-out", NUL_PAYLOAD),
        ("nul-status", "done"),
        ("nul-kv", "done"),
    ] {
        match env.wait_terminal(instance).await {
            duroxide::OrchestrationStatus::Completed { output, .. } if output == expected => {}
            other => problems.push(format!("{instance}: {other:?}")),
        }
    }
    if problems.is_empty() {
        let status = env
            .client
            .get_orchestration_status("nul-status")
            .await
            .unwrap();
        match status {
            duroxide::OrchestrationStatus::Completed { custom_status, .. } => {
                assert_eq!(custom_status.as_deref(), Some(NUL_PAYLOAD));
            }
            other => panic!("{other:?}"),
        }
        let kv = env.client.get_kv_value("nul-kv", "key").await.unwrap();
        assert_eq!(kv.as_deref(), Some(NUL_PAYLOAD));
        let info = env.client.get_instance_info("nul-out").await.unwrap();
        assert_eq!(info.output.as_deref(), Some(NUL_PAYLOAD));
    }
    assert!(
        problems.is_empty(),
        "payloads with NUL did not round-trip:\n{}",
        problems.join("\n")
    );
    env.finish([rt]).await;
}

#[tokio::test]
async fn e2e_nul_in_instance_ids_is_refused_and_changes_nothing() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Parent",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_sub_orchestration_with_id("Child", "child\0id", "x")
                    .await
            },
        )
        .register(
            "Child",
            |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
        )
        .build();
    let rt = env.start(support::no_activities(), orchestrations).await;

    // The client: a permanent provider error naming the byte, nothing stored.
    let provider_err = |e: ClientError| match e {
        ClientError::Provider(p) => p,
        other => panic!("expected a provider error, got {other:?}"),
    };
    let err = env
        .client
        .start_orchestration("nul\0id", "Child", "x")
        .await
        .expect_err("NUL instance id");
    assert_nul_rejected(&provider_err(err), "enqueue_for_orchestrator");
    let err = env
        .client
        .raise_event("nul\0id", "ev", "x")
        .await
        .expect_err("NUL instance id");
    assert_nul_rejected(&provider_err(err), "enqueue_for_orchestrator");
    assert_eq!(depths(&env.provider).await, EMPTY);

    // An orchestration scheduling a child with a NUL id: its ack is refused
    // whole (no child, no queued start), and the parent fails with that
    // permanent error as an infrastructure failure.
    env.client
        .start_orchestration("parent", "Parent", "")
        .await
        .unwrap();
    match env.wait_failed("parent").await {
        ErrorDetails::Infrastructure {
            operation,
            message,
            retryable,
        } => {
            assert_eq!(operation, "ack_orchestration_item");
            assert!(
                message.contains("0x00") && message.contains("22021"),
                "{message}"
            );
            assert!(!retryable);
        }
        other => panic!("unexpected failure {other:?}"),
    }
    // Nothing of the refused turn was stored: no scheduling event, no child.
    // (duroxide records the failure on the history the turn started from.)
    let hist = env.history("parent").await;
    assert!(
        matches!(
            hist.last().map(|e| &e.kind),
            Some(EventKind::OrchestrationFailed { .. })
        ),
        "{:?}",
        kinds(&hist)
    );
    let scheduled = |k: &EventKind| matches!(k, EventKind::SubOrchestrationScheduled { .. });
    assert_eq!(support::count(&hist, scheduled), 0);
    let instances = env.client.list_all_instances().await.unwrap();
    assert!(instances.iter().all(|i| i == "parent"), "{instances:?}");
    assert_eq!(depths(&env.provider).await, EMPTY);

    // The runtime carries on: a well-formed instance still completes.
    env.client
        .start_orchestration("after", "Child", "fine")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("after").await, "fine");
    env.finish([rt]).await;
}

#[tokio::test]
async fn provider_round_trips_a_sixteen_mib_payload() {
    // Once, at provider level, in three places (start message, start event
    // input, output): debug-build serde alone spends about a second per copy.
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    let instance = "sixteen-mib";
    let payload = cycled(&HOSTILE.concat(), 16 * 1024 * 1024);
    let start = start(instance, &payload);
    let (item, token, _) = common::enqueue_and_fetch(p, start.clone()).await.unwrap();
    assert!(item.messages == [start], "the 16 MiB start message differs");
    drop(item);
    let history = vec![
        started(instance, &payload),
        event(
            instance,
            2,
            None,
            EventKind::OrchestrationCompleted {
                output: payload.clone(),
            },
        ),
    ];
    let completed = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some(payload.clone()),
        ..common::naming_metadata("Hostile")
    };
    p.ack_orchestration_item(
        &token,
        1,
        history.clone(),
        vec![],
        vec![],
        completed,
        vec![],
    )
    .await
    .unwrap();
    assert!(
        p.read(instance).await.unwrap() == history,
        "the stored 16 MiB history differs"
    );
    let info = p.get_instance_info(instance).await.unwrap();
    assert!(
        info.output.as_deref() == Some(payload.as_str()),
        "the stored 16 MiB output differs"
    );
    assert_no_work(p, "after the 16 MiB cycle").await;
    env.finish([]).await;
}

#[tokio::test]
async fn e2e_ten_thousand_character_instance_ids() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Echo",
            |ctx: OrchestrationContext, input: String| async move {
                Ok(format!("{}|{input}", ctx.instance_id().chars().count()))
            },
        )
        .build();
    let rt = env.start(support::no_activities(), orchestrations).await;

    // The longest id the provider takes (2,048 bytes, multi-byte
    // characters included) runs end to end.
    let long_id = cycled("tenant/😀/漢字/'\"\\;$$/", 2_048);
    let long_id: String = {
        let mut end = 2_048.min(long_id.len());
        while !long_id.is_char_boundary(end) {
            end -= 1;
        }
        long_id[..end].to_string()
    };
    let chars = long_id.chars().count();
    env.client
        .start_orchestration(long_id.clone(), "Echo", "small")
        .await
        .unwrap();
    assert_eq!(env.wait_completed(&long_id).await, format!("{chars}|small"));
    let hist = env.history(&long_id).await;
    support::assert_well_formed(&hist, &long_id, 1);
    let info = env.client.get_instance_info(&long_id).await.unwrap();
    assert_eq!(info.instance_id, long_id);
    // A 10,000-character one is refused by the client call, permanently.
    let random = incompressible(10_000, 7);
    match env
        .client
        .start_orchestration(random.clone(), "Echo", "x")
        .await
    {
        Err(ClientError::Provider(e)) => assert_too_long(&e, "enqueue_for_orchestrator", &random),
        other => panic!("expected a permanent provider error, got {other:?}"),
    }
    match env.client.raise_event(random.clone(), "ev", "x").await {
        Err(ClientError::Provider(e)) => assert_too_long(&e, "enqueue_for_orchestrator", &random),
        other => panic!("expected a permanent provider error, got {other:?}"),
    }
    assert_eq!(depths(&env.provider).await, EMPTY);
    assert_eq!(env.client.list_all_instances().await.unwrap(), [long_id]);
    env.finish([rt]).await;
}

/// Regression: `get_instance_stats` cast the start event to jsonb, which
/// refuses the `\u0000` escape, so an instance whose input held a NUL had no
/// statistics (a permanent 22P05 error). Escaped backslashes next to it must
/// keep the JSON valid too.
#[tokio::test]
async fn instance_stats_of_a_start_input_with_nul() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    for (i, input) in ["a\0b", "\\\0", "\\\\u0000\0", "\0\\"]
        .into_iter()
        .enumerate()
    {
        let instance = format!("stats-{i}");
        let (_item, token, _) = common::enqueue_and_fetch(p, start(&instance, input))
            .await
            .expect("the start is fetchable");
        p.ack_orchestration_item(
            &token,
            1,
            vec![started(&instance, input)],
            vec![],
            vec![],
            common::naming_metadata("Hostile"),
            vec![],
        )
        .await
        .unwrap();
        let stats = p
            .get_instance_stats(&instance)
            .await
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .expect("stats of a stored instance");
        assert_eq!(stats.history_event_count, 1, "{input:?}");
        assert_eq!(stats.queue_pending_count, 0, "{input:?}");
        let history = p.read(&instance).await.unwrap();
        assert_eq!(history.len(), 1, "{input:?}");
        assert_eq!(history[0].kind, started(&instance, input).kind, "{input:?}");
    }
    env.finish([]).await;
}

/// Regression: through PgBouncer the fetch's arrays come back in text
/// format, where sqlx 0.8.6 reads an element spelled `NULL` as SQL NULL, so
/// an instance with a KV key or value `NULL` failed every fetch ("unexpected
/// null"). Strings spelled like SQL NULL or like array syntax round-trip as
/// the instance id, KV keys and KV values of a fetched item.
#[tokio::test]
async fn provider_fetches_kv_keys_and_values_spelled_like_sql_null() {
    let env = Env::new().await; // drops its schema even if the test fails
    let p = &*env.provider;
    let spellings = [
        "NULL",
        "null",
        "Null",
        "\"NULL\"",
        "NULL,NULL",
        "{NULL}",
        "{}",
        "",
        " ",
        ",",
        "\"",
        "\\",
    ];
    let instance = "NULL";
    let (_item, token, _) = common::enqueue_and_fetch(p, start(instance, "NULL"))
        .await
        .expect("the start is fetchable");
    // Each spelling is a key, holding the spellings in reverse order.
    let mut turn = vec![started(instance, "NULL")];
    let mut expected = std::collections::BTreeMap::new();
    for (i, (key, value)) in spellings.iter().zip(spellings.iter().rev()).enumerate() {
        let at = 1_000 + i as u64;
        turn.push(event(
            instance,
            2 + i as u64,
            None,
            EventKind::KeyValueSet {
                key: key.to_string(),
                value: value.to_string(),
                last_updated_at_ms: at,
            },
        ));
        expected.insert(key.to_string(), (value.to_string(), at));
    }
    // The fetch's snapshot is kv_store, which a finished execution fills.
    turn.push(event(
        instance,
        2 + spellings.len() as u64,
        None,
        EventKind::OrchestrationCompleted {
            output: "NULL".into(),
        },
    ));
    let completed = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some("NULL".into()),
        ..common::naming_metadata("Hostile")
    };
    p.ack_orchestration_item(&token, 1, turn.clone(), vec![], vec![], completed, vec![])
        .await
        .expect("ack the KV writes and the completion");

    let raised = WorkItem::ExternalRaised {
        instance: instance.into(),
        name: "NULL".into(),
        data: "NULL".into(),
    };
    p.enqueue_for_orchestrator(raised.clone(), None)
        .await
        .expect("enqueue an event");
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap_or_else(|e| panic!("fetch of an instance with KV `NULL` failed: {e:?}"))
        .expect("the event is fetchable");
    assert_eq!(item.instance, instance);
    assert_eq!(item.messages, [raised]);
    assert_eq!(item.history, turn);
    assert_eq!(item.history_error, None);
    let snapshot: std::collections::BTreeMap<String, (String, u64)> = item
        .kv_snapshot
        .into_iter()
        .map(|(k, e)| (k, (e.value, e.last_updated_at_ms)))
        .collect();
    assert_eq!(snapshot, expected, "KV snapshot of the fetched item");
    assert_eq!(
        p.get_kv_value(instance, "NULL").await.unwrap().as_deref(),
        Some("\\")
    );

    // An event for a finished instance: the runtime acks it with no changes.
    p.ack_orchestration_item(
        &token,
        1,
        vec![],
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .expect("ack the late event");
    assert_no_work(p, "after the late event").await;
    env.finish([]).await;
}
