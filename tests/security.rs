//! Security properties of the provider:
//!
//! 1. Identifiers are validated and quoted, every value is bound: SQL
//!    injection payloads go through every string argument of `Provider` and
//!    `ProviderAdmin` (lock tokens, instance ids, names, versions, inputs,
//!    outputs, event names, KV keys and values, custom status, session ids,
//!    tags, parent ids, status filters, `InstanceFilter::instance_ids`, ...).
//!    Each call either gives the right answer or a clear permanent error, and
//!    afterwards the schema, every row of the data the payloads must not
//!    touch, and a canary table in another schema are intact. Schema names,
//!    the one identifier spliced into SQL text, are refused when they are
//!    injection-shaped (tests/construction.rs covers more bad names and that a
//!    refused name creates nothing; the names here are different ones).
//! 2. The connection URL's password never appears in captured tracing output
//!    (TRACE level, sqlx included), in any error's `Display` or `Debug`, or in
//!    the `Debug` output of the configuration, the provider and its pool,
//!    also when the password is written with an unencoded `/`, `?` or `#`
//!    (a malformed URL). pg-stress's output is covered by
//!    pg-stress/tests/cli.rs, for its error paths only.

use duroxide_pg_testkit::harness as common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{database_url, fresh_schema_name};
use duroxide::providers::{
    ExecutionMetadata, InstanceFilter, Provider, ProviderAdmin, ProviderError, PruneOptions,
    ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::{Event, EventKind};
use duroxide_pg::migrations::{owned_functions, owned_tables};
use duroxide_pg::{
    Error, MigrationMode, PollMode, PostgresConfig, PostgresProvider, validate_schema_name,
};
use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};
use sqlx::PgPool;

const LOCK: Duration = Duration::from_secs(30);

/// Classic and PostgreSQL-specific injection attempts, plus strings that
/// would match too much if they reached a `LIKE` or an array literal.
const PAYLOADS: &[&str] = &[
    "x'); DROP TABLE instances; --",
    "' OR '1'='1",
    "\"; DROP SCHEMA public CASCADE; --",
    "$$; SELECT pg_sleep(10); $$",
    "\\'",
    "'; DELETE FROM history; --",
    "victim' --",
    "'||(SELECT pg_sleep(10))||'",
    "E'\\x27'; TRUNCATE kv_store, kv_delta; --",
    "a\n'; DROP TABLE worker_queue; --",
    "\u{2019} OR 1=1 --",
    "%",
    "_",
    "NULL",
    "{\"victim\",\"victim-done\"}",
];

/// The instances the payloads must never reach.
const VICTIMS: [&str; 2] = ["victim", "victim-done"];

fn event(id: u64, instance: &str, kind: EventKind) -> Event {
    Event::with_event_id(id, instance, 1, None, kind)
}

fn parent_of(payload: &str) -> String {
    format!("{payload}/parent")
}

/// Asserts a permanent error whose message contains `needle`.
fn expect_permanent<T: std::fmt::Debug>(
    call: &str,
    result: Result<T, ProviderError>,
    needle: &str,
) -> ProviderError {
    let e = match result {
        Ok(v) => panic!("{call}: expected a permanent error, got Ok({v:?})"),
        Err(e) => e,
    };
    assert!(!e.is_retryable(), "{call}: retryable error {e:?}");
    assert!(
        e.message.contains(needle),
        "{call}: {e:?} should mention {needle:?}"
    );
    e
}

/// A lock token no lease holds: a permanent error with a `DXT` SQLSTATE.
fn expect_bad_token<T: std::fmt::Debug>(call: &str, result: Result<T, ProviderError>) {
    let e = expect_permanent(call, result, "(SQLSTATE DXT0");
    assert!(e.message.to_lowercase().contains("lock"), "{call}: {e:?}");
}

/// Row count and a digest of every row of `table` (only `ids`' rows when given).
async fn digest(pool: &PgPool, schema: &str, table: &str, ids: Option<&[String]>) -> (i64, String) {
    let filter = if ids.is_some() {
        "WHERE t.instance_id = ANY ($1)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT count(*), COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
           FROM \"{schema}\".{table} t {filter}"
    );
    let mut query = sqlx::query_as(&sql);
    if let Some(ids) = ids {
        query = query.bind(ids.to_vec());
    }
    query
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("digest {table}: {e}"))
}

/// `digest` of every table the migrations create.
async fn all_digests(pool: &PgPool, schema: &str) -> BTreeMap<&'static str, (i64, String)> {
    let mut out = BTreeMap::new();
    for table in owned_tables() {
        out.insert(table, digest(pool, schema, table, None).await);
    }
    out
}

/// `digest` of the victims' rows in every table with an `instance_id` column.
async fn victim_digests(pool: &PgPool, schema: &str) -> BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = $1 AND column_name = 'instance_id' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 8, "{tables:?}");
    let ids: Vec<String> = VICTIMS.iter().map(|v| v.to_string()).collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let d = digest(pool, schema, &table, Some(&ids)).await;
        out.insert(table, d);
    }
    out
}

/// The victims: "victim" is running (history, a KV value in the current
/// execution's delta, a custom status, an untagged activity in the worker
/// queue); "victim-done" completed (its KV value merged into kv_store).
async fn create_victims(p: &PostgresProvider) {
    let (item, token, _) = common::enqueue_and_fetch(p, common::start_item("victim", "Victim"))
        .await
        .expect("victim start");
    assert_eq!(item.instance, "victim");
    let delta = vec![
        common::started_event("victim", "Victim"),
        event(
            2,
            "victim",
            EventKind::ActivityScheduled {
                name: "Act".into(),
                input: "x".into(),
                session_id: None,
                tag: None,
            },
        ),
        event(
            3,
            "victim",
            EventKind::KeyValueSet {
                key: "k".into(),
                value: "v".into(),
                last_updated_at_ms: 1,
            },
        ),
        event(
            4,
            "victim",
            EventKind::CustomStatusUpdated {
                status: Some("ok".into()),
            },
        ),
    ];
    p.ack_orchestration_item(
        &token,
        1,
        delta,
        vec![common::activity_item("victim", 2)],
        vec![],
        common::naming_metadata("Victim"),
        vec![],
    )
    .await
    .unwrap();

    let (item, token, _) =
        common::enqueue_and_fetch(p, common::start_item("victim-done", "Victim"))
            .await
            .expect("victim-done start");
    assert_eq!(item.instance, "victim-done");
    let delta = vec![
        common::started_event("victim-done", "Victim"),
        event(
            2,
            "victim-done",
            EventKind::KeyValueSet {
                key: "dk".into(),
                value: "dv".into(),
                last_updated_at_ms: 1,
            },
        ),
        event(
            3,
            "victim-done",
            EventKind::OrchestrationCompleted {
                output: "done".into(),
            },
        ),
    ];
    let metadata = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some("done".into()),
        ..common::naming_metadata("Victim")
    };
    p.ack_orchestration_item(&token, 1, delta, vec![], vec![], metadata, vec![])
        .await
        .unwrap();
}

/// Every string argument set to a payload `x` that names nothing stored:
/// garbage lock tokens are refused permanently, lookups find nothing (or a
/// permanent "not found"), filters select nothing.
async fn unknown_payload_calls(p: &PostgresProvider, x: &str) {
    let completion = WorkItem::ActivityCompleted {
        instance: x.into(),
        execution_id: 1,
        id: 2,
        result: x.into(),
    };
    let hostile_metadata = ExecutionMetadata {
        status: Some(x.into()),
        output: Some(x.into()),
        orchestration_name: Some(x.into()),
        orchestration_version: Some(x.into()),
        parent_instance_id: Some(x.into()),
        pinned_duroxide_version: None,
    };
    let cancelled = vec![ScheduledActivityIdentifier {
        instance: x.into(),
        execution_id: 1,
        activity_id: 2,
    }];

    // Lock tokens.
    expect_bad_token(
        "ack_orchestration_item",
        p.ack_orchestration_item(
            x,
            1,
            vec![common::started_event(x, x)],
            vec![common::activity_item(x, 2)],
            vec![common::start_item(x, x)],
            hostile_metadata,
            cancelled,
        )
        .await,
    );
    expect_bad_token(
        "abandon_orchestration_item",
        p.abandon_orchestration_item(x, Some(Duration::from_secs(1)), true)
            .await,
    );
    expect_bad_token(
        "renew_orchestration_item_lock",
        p.renew_orchestration_item_lock(x, LOCK).await,
    );
    expect_bad_token("ack_work_item", p.ack_work_item(x, None).await);
    expect_bad_token(
        "ack_work_item with completion",
        p.ack_work_item(x, Some(completion)).await,
    );
    expect_bad_token(
        "renew_work_item_lock",
        p.renew_work_item_lock(x, LOCK).await,
    );
    expect_bad_token(
        "abandon_work_item",
        p.abandon_work_item(x, None, false).await,
    );

    // Session owners and tags.
    assert_eq!(
        p.renew_session_lock(&[x, "victim"], LOCK, LOCK)
            .await
            .unwrap(),
        0
    );
    let session = SessionFetchConfig {
        owner_id: x.into(),
        lock_timeout: LOCK,
    };
    let fetched = p
        .fetch_work_item(LOCK, Duration::ZERO, Some(&session), &TagFilter::tags([x]))
        .await
        .unwrap();
    assert!(fetched.is_none(), "tag {x:?} fetched {fetched:?}");

    // Reads of an unknown instance: empty.
    assert!(p.read(x).await.unwrap().is_empty());
    assert!(p.read_with_execution(x, 1).await.unwrap().is_empty());
    assert!(p.read_history(x).await.unwrap().is_empty());
    assert!(
        p.read_history_with_execution_id(x, 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(p.get_custom_status(x, 0).await.unwrap(), None);
    assert_eq!(p.get_kv_value(x, x).await.unwrap(), None);
    assert_eq!(p.get_kv_value("victim", x).await.unwrap(), None);
    assert_eq!(p.get_kv_value("victim-done", x).await.unwrap(), None);
    assert!(p.get_kv_all_values(x).await.unwrap().is_empty());
    assert!(p.get_instance_stats(x).await.unwrap().is_none());

    // Admin lookups.
    assert!(p.list_instances_by_status(x).await.unwrap().is_empty());
    assert!(p.list_executions(x).await.unwrap().is_empty());
    // "1 when there is none", as the stored function documents.
    assert_eq!(p.latest_execution_id(x).await.unwrap(), 1);
    expect_permanent(
        "get_instance_info",
        p.get_instance_info(x).await,
        "not found",
    );
    expect_permanent(
        "get_execution_info",
        p.get_execution_info(x, 1).await,
        "not found",
    );
    assert!(p.list_children(x).await.unwrap().is_empty());
    expect_permanent("get_parent_id", p.get_parent_id(x).await, "not found");
    assert_eq!(p.get_instance_tree(x).await.unwrap().all_ids, vec![x]);

    // Deletion and pruning select nothing.
    expect_permanent(
        "delete_instance",
        p.delete_instance(x, true).await,
        "not found",
    );
    for force in [false, true] {
        let r = p
            .delete_instances_atomic(&[x.to_string()], force)
            .await
            .unwrap();
        // instances_deleted counts the ids asked for (as duroxide's SQLite
        // provider does); nothing was stored under them.
        assert_eq!(
            (
                r.executions_deleted,
                r.events_deleted,
                r.queue_messages_deleted
            ),
            (0, 0, 0),
            "delete_instances_atomic([{x:?}]): {r:?}"
        );
    }
    expect_permanent(
        "prune_executions",
        p.prune_executions(x, PruneOptions::default()).await,
        "not found",
    );
    let filter = InstanceFilter {
        instance_ids: Some(vec![x.to_string()]),
        completed_before: None,
        limit: None,
    };
    assert!(p.bulk_delete_candidates(&filter).await.unwrap().is_empty());
    let r = p.delete_instance_bulk(filter.clone()).await.unwrap();
    assert_eq!(r.instances_deleted, 0, "{r:?}");
    let r = p
        .prune_executions_bulk(filter, PruneOptions::default())
        .await
        .unwrap();
    assert_eq!(r.instances_processed, 0, "{r:?}");
}

/// A whole orchestration where every stored string is the payload `x`; each
/// value must come back exactly as written.
async fn payload_round_trip(p: &PostgresProvider, x: &str) {
    let parent = parent_of(x);
    let start = WorkItem::StartOrchestration {
        instance: x.into(),
        orchestration: x.into(),
        input: x.into(),
        version: Some(x.into()),
        parent_instance: Some(parent.clone()),
        parent_id: Some(1),
        parent_execution_id: Some(1),
        execution_id: 1,
    };
    let (item, token, attempts) = common::enqueue_and_fetch(p, start.clone())
        .await
        .expect("the payload's start message");
    assert_eq!(
        (
            item.instance.as_str(),
            item.orchestration_name.as_str(),
            item.version.as_str()
        ),
        (x, x, x)
    );
    assert_eq!((item.messages, attempts), (vec![start], 1));

    let activity = WorkItem::ActivityExecute {
        instance: x.into(),
        execution_id: 1,
        id: 2,
        name: x.into(),
        input: x.into(),
        session_id: Some(x.into()),
        tag: Some(x.into()),
    };
    let raised = WorkItem::ExternalRaised {
        instance: x.into(),
        name: x.into(),
        data: x.into(),
    };
    let mut history = vec![
        event(
            1,
            x,
            EventKind::OrchestrationStarted {
                name: x.into(),
                version: x.into(),
                input: x.into(),
                parent_instance: Some(parent.clone()),
                parent_id: Some(1),
                parent_execution_id: Some(1),
                carry_forward_events: None,
                initial_custom_status: None,
            },
        ),
        event(
            2,
            x,
            EventKind::ActivityScheduled {
                name: x.into(),
                input: x.into(),
                session_id: Some(x.into()),
                tag: Some(x.into()),
            },
        ),
        event(
            3,
            x,
            EventKind::KeyValueSet {
                key: x.into(),
                value: x.into(),
                last_updated_at_ms: 1,
            },
        ),
        event(
            4,
            x,
            EventKind::CustomStatusUpdated {
                status: Some(x.into()),
            },
        ),
        event(5, x, EventKind::ExternalSubscribed { name: x.into() }),
    ];
    let metadata = ExecutionMetadata {
        orchestration_name: Some(x.into()),
        orchestration_version: Some(x.into()),
        parent_instance_id: Some(parent.clone()),
        ..Default::default()
    };
    // Cancels an activity that does not exist (this instance's is id 2).
    let cancelled = vec![ScheduledActivityIdentifier {
        instance: x.into(),
        execution_id: 1,
        activity_id: 99,
    }];
    p.ack_orchestration_item(
        &token,
        1,
        history.clone(),
        vec![activity.clone()],
        vec![raised.clone()],
        metadata,
        cancelled,
    )
    .await
    .unwrap();

    // The activity, by its session and tag.
    let session = SessionFetchConfig {
        owner_id: x.into(),
        lock_timeout: LOCK,
    };
    let (work, wtoken, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, Some(&session), &TagFilter::tags([x]))
        .await
        .unwrap()
        .expect("the payload's activity");
    assert_eq!(work, activity);
    p.renew_work_item_lock(&wtoken, LOCK).await.unwrap();
    assert_eq!(p.renew_session_lock(&[x], LOCK, LOCK).await.unwrap(), 1);
    let completed = WorkItem::ActivityCompleted {
        instance: x.into(),
        execution_id: 1,
        id: 2,
        result: x.into(),
    };
    p.ack_work_item(&wtoken, Some(completed.clone()))
        .await
        .unwrap();

    // The completion turn, abandoned once first (real tokens work too).
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the payload's completion turn");
    assert_eq!(item.history, history);
    p.renew_orchestration_item_lock(&token, LOCK).await.unwrap();
    p.abandon_orchestration_item(&token, None, true)
        .await
        .unwrap();
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the payload's completion turn again");
    assert_eq!(
        (
            item.instance.as_str(),
            item.orchestration_name.as_str(),
            item.version.as_str()
        ),
        (x, x, x)
    );
    assert_eq!(item.messages, vec![raised, completed]);
    assert!(item.kv_snapshot.is_empty(), "{:?}", item.kv_snapshot);
    let delta = vec![
        event(
            6,
            x,
            EventKind::ExternalEvent {
                name: x.into(),
                data: x.into(),
            },
        ),
        Event::with_event_id(
            7,
            x,
            1,
            Some(2),
            EventKind::ActivityCompleted { result: x.into() },
        ),
        event(8, x, EventKind::OrchestrationCompleted { output: x.into() }),
    ];
    history.extend(delta.clone());
    let metadata = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some(x.into()),
        ..Default::default()
    };
    p.ack_orchestration_item(&token, 1, delta, vec![], vec![], metadata, vec![])
        .await
        .unwrap();
    let appended = event(
        9,
        x,
        EventKind::QueueEventDelivered {
            name: x.into(),
            data: x.into(),
        },
    );
    p.append_with_execution(x, 1, vec![appended.clone()])
        .await
        .unwrap();
    history.push(appended);

    // Everything reads back exactly.
    assert_eq!(p.read(x).await.unwrap(), history);
    assert_eq!(p.read_with_execution(x, 1).await.unwrap(), history);
    assert_eq!(p.read_history(x).await.unwrap(), history);
    assert_eq!(
        p.read_history_with_execution_id(x, 1).await.unwrap(),
        history
    );
    assert_eq!(
        p.get_custom_status(x, 0).await.unwrap(),
        Some((Some(x.to_string()), 1))
    );
    assert_eq!(p.get_kv_value(x, x).await.unwrap().as_deref(), Some(x));
    assert_eq!(
        p.get_kv_all_values(x).await.unwrap(),
        HashMap::from([(x.to_string(), x.to_string())])
    );
    let stats = p.get_instance_stats(x).await.unwrap().expect("stats");
    assert_eq!(
        (
            stats.history_event_count,
            stats.kv_user_key_count,
            stats.kv_total_value_bytes
        ),
        (9, 1, x.len() as u64)
    );
    assert_eq!(p.list_executions(x).await.unwrap(), vec![1]);
    assert_eq!(p.latest_execution_id(x).await.unwrap(), 1);
    let info = p.get_instance_info(x).await.unwrap();
    assert_eq!(
        (
            info.instance_id.as_str(),
            info.orchestration_name.as_str(),
            info.orchestration_version.as_str(),
            info.status.as_str(),
            info.output.as_deref(),
            info.parent_instance_id.as_deref(),
        ),
        (x, x, x, "Completed", Some(x), Some(parent.as_str()))
    );
    let exec = p.get_execution_info(x, 1).await.unwrap();
    assert_eq!(
        (
            exec.status.as_str(),
            exec.output.as_deref(),
            exec.event_count
        ),
        ("Completed", Some(x), 9)
    );
    assert_eq!(p.list_children(&parent).await.unwrap(), vec![x]);
    assert_eq!(p.get_parent_id(x).await.unwrap(), Some(parent.clone()));
    assert_eq!(
        p.get_instance_tree(&parent).await.unwrap().all_ids,
        vec![parent.clone(), x.to_string()]
    );
    // No instance has the payload as its status.
    assert!(p.list_instances_by_status(x).await.unwrap().is_empty());
    expect_permanent(
        "delete_instance of a sub-orchestration",
        p.delete_instance(x, true).await,
        "sub-orchestration",
    );
    let pruned = p
        .prune_executions(
            x,
            PruneOptions {
                keep_last: Some(1),
                completed_before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            pruned.instances_processed,
            pruned.executions_deleted,
            pruned.events_deleted
        ),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn sql_injection_through_every_string_argument_is_inert() {
    let admin = PgPool::connect(&database_url()).await.unwrap();
    let canary = fresh_schema_name("canary");
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA \"{canary}\"; CREATE TABLE \"{canary}\".canary (x INT);
         INSERT INTO \"{canary}\".canary VALUES (42);"
    ))
    .execute(&admin)
    .await
    .unwrap();

    let p = common::fresh_provider("sec").await;
    let schema = p.schema_name().to_string();
    create_victims(&p).await;
    let before = all_digests(&admin, &schema).await;
    let victims_before = victim_digests(&admin, &schema).await;
    assert_eq!(before["instances"].0, 2);
    assert_eq!(before["worker_queue"].0, 1);
    assert_eq!(before["kv_delta"].0, 1);
    assert_eq!(before["kv_store"].0, 1);

    // Garbage tokens and lookups of what does not exist change nothing.
    for x in PAYLOADS {
        let started = Instant::now();
        unknown_payload_calls(&p, x).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{x:?}: calls took {:?} (did a pg_sleep run?)",
            started.elapsed()
        );
    }
    assert_eq!(
        all_digests(&admin, &schema).await,
        before,
        "calls with payloads that name nothing changed stored rows"
    );

    // Payloads stored as data come back verbatim.
    for x in PAYLOADS {
        let started = Instant::now();
        payload_round_trip(&p, x).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{x:?}: calls took {:?} (did a pg_sleep run?)",
            started.elapsed()
        );
    }
    // The victims still answer as before.
    assert_eq!(
        p.get_kv_value("victim", "k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(
        p.get_kv_value("victim-done", "dk")
            .await
            .unwrap()
            .as_deref(),
        Some("dv")
    );
    assert_eq!(
        p.get_custom_status("victim", 0).await.unwrap(),
        Some((Some("ok".into()), 1))
    );
    let mut completed = p.list_instances_by_status("Completed").await.unwrap();
    completed.sort();
    let mut expected: Vec<String> = PAYLOADS.iter().map(|x| x.to_string()).collect();
    expected.push("victim-done".into());
    expected.sort();
    assert_eq!(completed, expected);
    assert_eq!(
        p.list_instances_by_status("Running").await.unwrap(),
        vec!["victim"]
    );

    // The schema is intact: every table and function is still there...
    for table in owned_tables() {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("\"{schema}\".{table}"))
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(exists, "table {table} is gone");
    }
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = $1::text::regnamespace",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap();
    for function in owned_functions() {
        assert!(
            functions.iter().any(|f| f == function),
            "function {function} is gone"
        );
    }
    // ... the victims' rows are unchanged, row by row ...
    assert_eq!(victim_digests(&admin, &schema).await, victims_before);
    // ... and every table holds exactly what the round trips stored: per
    // payload one instance, one execution, nine events, one session and one
    // merged KV value; queues, leases and KV deltas as before.
    let after = all_digests(&admin, &schema).await;
    let n = PAYLOADS.len() as i64;
    let added: BTreeMap<&str, i64> = BTreeMap::from([
        ("instances", n),
        ("executions", n),
        ("history", 9 * n),
        ("sessions", n),
        ("kv_store", n),
    ]);
    for (table, (count, _)) in &after {
        let expected = before[table].0 + added.get(table).copied().unwrap_or(0);
        assert_eq!(*count, expected, "rows in {table}");
    }

    // Other schemas too.
    let public: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(public, "schema public was dropped");
    let canary_rows: Vec<i32> = sqlx::query_scalar(&format!("SELECT x FROM \"{canary}\".canary"))
        .fetch_all(&admin)
        .await
        .expect("the canary table survives");
    assert_eq!(canary_rows, vec![42]);

    p.cleanup_schema().await.unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA \"{canary}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// The schema name is the only identifier spliced into SQL text; injection
/// shapes never get that far. (tests/construction.rs: more bad names, and
/// that a refused name creates nothing.)
#[tokio::test]
async fn injection_shaped_schema_names_are_refused() {
    let names = [
        "x\"; DROP SCHEMA public CASCADE; --",
        "public\".instances; --",
        "tenant'); DROP TABLE instances; --",
        "a$$b",
        "a\\b",
        "a.b",
        "a\nb",
        "a\0b",
        "tenant_\u{0430}", // Cyrillic a
        "pg_temp",
        "pg_catalog\"",
        "information_schema",
    ];
    // Every payload but `_`, which is a valid name.
    let payloads = PAYLOADS.iter().filter(|p| **p != "_");
    for name in payloads.chain(names.iter()) {
        match validate_schema_name(name) {
            Err(Error::InvalidSchemaName { name: n, .. }) => assert_eq!(&n, name),
            other => panic!("validate_schema_name({name:?}): {other:?}"),
        }
        let err = PostgresProvider::connect(PostgresConfig::new(database_url()).with_schema(*name))
            .await
            .expect_err(name);
        assert!(
            matches!(&err, Error::InvalidSchemaName { .. }),
            "{name:?}: {err:?}"
        );
        let as_provider_error: ProviderError = err.into();
        assert!(!as_provider_error.is_retryable());
    }
}

/// Everything the tracing subscriber writes, for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Where a URL's userinfo password is, if it has one.
fn userinfo_password(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, pw)| pw)
}

/// A login role of the test's own, with a random password, on the server
/// of `base` (whose user may create roles), allowed to create schemas in
/// its database.
struct OwnPasswordRole {
    admin: sqlx::PgPool,
    role: String,
    database: String,
    password: String,
    /// `base` logging in as the role.
    url: String,
}

impl OwnPasswordRole {
    async fn create(base: &str) -> Self {
        let admin = sqlx::PgPool::connect(base).await.unwrap();
        let role = fresh_schema_name("pwrole");
        // Random enough to appear nowhere by chance: the role's name hashed
        // with the process's random hasher keys.
        let password = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write(role.as_bytes());
            format!("Dx{:016x}Pw", h.finish())
        };
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&admin)
            .await
            .unwrap();
        common::serialized_catalog_change(
            &admin,
            &format!(
                "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}';
                 GRANT CREATE ON DATABASE \"{database}\" TO \"{role}\";"
            ),
        )
        .await;
        let url = with_userinfo(base, &role, &password);
        Self {
            admin,
            role,
            database,
            password,
            url,
        }
    }

    async fn drop(self) {
        common::serialized_catalog_change(
            &self.admin,
            &format!(
                "REVOKE CREATE ON DATABASE \"{db}\" FROM \"{role}\";
                 DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";",
                db = self.database,
                role = self.role
            ),
        )
        .await;
    }
}

/// `url` logging in as `user` with `password`.
fn with_userinfo(url: &str, user: &str, password: &str) -> String {
    let start = url.find("://").expect("scheme") + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..authority_end],
        None => &rest[..authority_end],
    };
    format!(
        "{}{user}:{password}@{host}{}",
        &url[..start],
        &rest[authority_end..]
    )
}

/// `url` with `password` as its userinfo password (the user is kept;
/// `postgres` when the URL names none).
fn with_password(url: &str, password: &str) -> String {
    let start = url.find("://").expect("scheme") + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let user = match authority.rfind('@') {
        Some(at) => authority[..at].split(':').next().unwrap(),
        None => "postgres",
    };
    with_userinfo(url, user, password)
}

/// Asserts that none of `secrets` (case-insensitively) occurs in `text`.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    let lower = text.to_lowercase();
    for s in secrets {
        assert!(
            !lower.contains(&s.to_lowercase()),
            "the password ({s}) leaked into {what}: {text}"
        );
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn password_never_reaches_logs_errors_or_debug_output() {
    // The throwaway cluster trusts local connections, so any password works.
    // On a server whose URL carries a real password, that password may be a
    // word the logs hold anyway ("postgres"): the test logs in as a role of
    // its own with a random password it can recognise anywhere (created
    // before the capture starts: its CREATE ROLE statement names it).
    let own_role = match userinfo_password(&database_url()) {
        Some(_) => Some(OwnPasswordRole::create(&database_url()).await),
        None => None,
    };
    // A single-threaded runtime: every task (the wake-up listener included)
    // logs on this thread, to this subscriber.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let base = database_url();
    let (urls, secrets): (Vec<String>, Vec<String>) = match &own_role {
        Some(role) => (vec![role.url.clone()], vec![role.password.clone()]),
        None => {
            let sep = if base.contains('?') { '&' } else { '?' };
            (
                vec![
                    with_password(&base, "S3cr3t-Pa55"),
                    // Percent-encoded "Pa55/W0rd@x".
                    with_password(&base, "Pa55%2FW0rd%40x"),
                    format!("{base}{sep}password=Qu3ry-Pa55"),
                ],
                ["S3cr3t", "Pa55%2FW0rd%40x", "Pa55/W0rd@x", "W0rd", "Qu3ry"]
                    .map(String::from)
                    .to_vec(),
            )
        }
    };
    let mut texts: Vec<(String, String)> = Vec::new();

    for url in &urls {
        let schema = fresh_schema_name("secpw");
        let config = PostgresConfig::new(url.as_str())
            .with_schema(&schema)
            .with_connect_timeout(Duration::from_secs(2))
            .with_acquire_timeout(Duration::from_secs(1));
        let provider = PostgresProvider::connect(config.clone())
            .await
            .expect("a provider on the password URL");
        texts.push(("config Debug".into(), format!("{config:?}")));
        texts.push(("provider Debug".into(), format!("{provider:?}")));
        texts.push(("pool Debug".into(), format!("{:?}", provider.pool())));
        texts.push(("redact_url".into(), duroxide_pg::redact_url(url)));

        // Calls that work, and calls that fail.
        provider
            .enqueue_for_orchestrator(common::start_item("pw", "Pw"), None)
            .await
            .unwrap();
        provider
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap()
            .expect("item");
        provider.get_system_metrics().await.unwrap();
        let e = provider
            .ack_orchestration_item(
                "bad-token",
                1,
                vec![],
                vec![],
                vec![],
                ExecutionMetadata::default(),
                vec![],
            )
            .await
            .unwrap_err();
        record(&mut texts, "bad token", &e);
        record(
            &mut texts,
            "unknown instance",
            &provider.get_instance_info("missing").await.unwrap_err(),
        );

        // The same URL shape towards a closed port, a malformed port, a bad
        // schema name, verify-only on a schema without migrations.
        let closed = delay_proxy::reroute_url(
            url,
            std::net::SocketAddr::from(([127, 0, 0, 1], closed_port())),
        )
        .unwrap();
        let e = PostgresProvider::connect(
            PostgresConfig::new(closed).with_connect_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        record(&mut texts, "refused connection", &e);
        record(
            &mut texts,
            "refused connection as ProviderError",
            &ProviderError::from(e),
        );
        let port = url.split('@').next_back().unwrap();
        let port = port.split(['/', '?']).next().unwrap();
        let malformed = url.replacen(port, "127.0.0.1:notaport", 1);
        let e = PostgresProvider::connect(PostgresConfig::new(malformed))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{e:?}");
        record(&mut texts, "malformed URL", &e);
        let e = PostgresProvider::connect(PostgresConfig::new(url.as_str()).with_schema("Bad;"))
            .await
            .unwrap_err();
        record(&mut texts, "bad schema name", &e);
        let e = PostgresProvider::connect(
            PostgresConfig::new(url.as_str())
                .with_schema(fresh_schema_name("secpw_unmigrated"))
                .with_migrations(MigrationMode::VerifyOnly),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::PendingMigrations { .. }), "{e:?}");
        record(&mut texts, "verify-only", &e);

        // The server goes away under a live provider (long polling, so the
        // wake-up listener loses its connection too): errors are retryable.
        let upstream = delay_proxy::upstream_of(url).await.unwrap();
        let proxy = DelayProxy::start(upstream, Duration::ZERO).await.unwrap();
        let proxied = PostgresProvider::connect(
            PostgresConfig::new(delay_proxy::reroute_url(url, proxy.local_addr()).unwrap())
                .with_schema(&schema)
                .with_poll_mode(PollMode::LongPoll)
                .with_max_connections(2)
                .with_connect_timeout(Duration::from_millis(500))
                .with_acquire_timeout(Duration::from_millis(500)),
        )
        .await
        .expect("a provider through the proxy");
        proxied.get_queue_depths().await.unwrap();
        let lost_before = captured.text().matches("wake-up listener").count();
        drop(proxy);
        // Let the proxy's connections close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..2 {
            let e = proxied.get_queue_depths().await.unwrap_err();
            assert!(e.is_retryable(), "{e:?}");
            record(&mut texts, "server gone", &e);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while captured.text().matches("wake-up listener").count() < lost_before + 2 {
            assert!(
                Instant::now() < deadline,
                "the wake-up listener never reported the lost server"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        texts.push(("proxied provider Debug".into(), format!("{proxied:?}")));
        drop(proxied);

        // A closed provider.
        provider.close().await;
        record(
            &mut texts,
            "closed provider",
            &provider.get_system_metrics().await.unwrap_err(),
        );
        record(
            &mut texts,
            "closed provider migrate",
            &provider.migrate().await.unwrap_err(),
        );

        let cleanup =
            PostgresProvider::connect(PostgresConfig::new(url.as_str()).with_schema(&schema))
                .await
                .unwrap();
        cleanup.cleanup_schema().await.unwrap();
    }

    if let Some(role) = own_role {
        role.drop().await;
    }
    let logs = captured.text();
    // The capture works, at TRACE, for this crate and for sqlx.
    assert!(logs.contains("applied duroxide-pg migration"), "{logs}");
    assert!(logs.contains("sqlx::query"), "{logs}");
    assert!(logs.contains("wake-up listener"), "{logs}");
    assert_no_secret("the captured logs", &logs, &secrets);
    for (what, text) in &texts {
        assert_no_secret(what, text, &secrets);
    }
}

/// A password with a character URLs reserve, written without
/// percent-encoding (a common mistake with generated passwords): the URL is
/// malformed and refused, but the error and the configuration's `Debug` must
/// still not show the password.
#[tokio::test]
async fn unencoded_reserved_characters_in_the_password_stay_hidden() {
    let mut leaks = Vec::new();
    for (url, password) in [
        (
            "postgres://app:S3cr3t/Pa55@127.0.0.1:5432/db",
            "S3cr3t/Pa55",
        ),
        (
            "postgres://app:S3cr3t?Pa55@127.0.0.1:5432/db",
            "S3cr3t?Pa55",
        ),
        (
            "postgres://app:S3cr3t#Pa55@127.0.0.1:5432/db",
            "S3cr3t#Pa55",
        ),
    ] {
        let config = PostgresConfig::new(url)
            .with_schema(fresh_schema_name("secpw_malformed"))
            .with_connect_timeout(Duration::from_secs(1));
        let e = PostgresProvider::connect(config.clone()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{url}: {e:?}");
        for (what, text) in [
            ("PostgresConfig Debug", format!("{config:?}")),
            ("redact_url", duroxide_pg::redact_url(url)),
            ("error Display", e.to_string()),
            ("error Debug", format!("{e:?}")),
        ] {
            // Any part of the password counts.
            if text.contains("S3cr3t") || text.contains("Pa55") {
                leaks.push(format!("password {password:?}: {what}: {text}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the password leaked:\n{}",
        leaks.join("\n")
    );
}

/// Records an error's `Display` and `Debug` text.
fn record(texts: &mut Vec<(String, String)>, what: &str, e: &dyn ErrorText) {
    texts.push((format!("{what} (Display)"), e.display()));
    texts.push((format!("{what} (Debug)"), e.debug()));
}

/// `Display` and `Debug` of both error types.
trait ErrorText {
    fn display(&self) -> String;
    fn debug(&self) -> String;
}

impl<E: std::fmt::Display + std::fmt::Debug> ErrorText for E {
    fn display(&self) -> String {
        self.to_string()
    }
    fn debug(&self) -> String {
        format!("{self:?}")
    }
}
