//! No plan flip: after five executions plpgsql may switch a statement to a
//! generic plan (the queue operations plan generically from their first call,
//! migration 0019), and a generic plan can read a whole table where the
//! custom one used an index. These tests run a call well past that point on a large
//! store and count, through the server's own statistics
//! (`pg_stat_user_tables`), the rows it read: a property of the plan, not a
//! timing.

use duroxide_pg_testkit::harness as common;

use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};
use sqlx::PgPool;

/// Messages queued for leased instances: rows no call of these tests may read
/// in full.
const QUEUED: i64 = 20_000;
const CALLS: usize = 25;

/// The server's counters for one table of the schema.
#[derive(Debug, Clone, Copy)]
struct Stats {
    seq_tup_read: i64,
    idx_tup_fetch: i64,
    n_tup_upd: i64,
    n_tup_del: i64,
}

impl Stats {
    /// Rows read by any scan (sequential or index).
    fn rows_read(&self) -> i64 {
        self.seq_tup_read + self.idx_tup_fetch
    }
}

/// The server's counters for `table` of `schema`.
async fn table_stats(admin: &PgPool, schema: &str, table: &str) -> Stats {
    let (seq_tup_read, idx_tup_fetch, n_tup_upd, n_tup_del): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT seq_tup_read, coalesce(idx_tup_fetch, 0), n_tup_upd, n_tup_del
               FROM pg_stat_user_tables
              WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(admin)
    .await
    .unwrap();
    Stats {
        seq_tup_read,
        idx_tup_fetch,
        n_tup_upd,
        n_tup_del,
    }
}

/// A provider on `schema` with one connection, so every call runs in one
/// backend (whose plan cache turns generic after five executions).
async fn one_connection_provider(schema: &str) -> PostgresProvider {
    PostgresProvider::connect(
        PostgresConfig::new(common::database_url())
            .with_schema(schema)
            .with_max_connections(1)
            .with_poll_mode(PollMode::PollOnly),
    )
    .await
    .unwrap()
}

/// Waits until the provider's backend has flushed its statistics so that
/// `done` holds; bounded. A backend flushes at the end of a transaction when
/// its last flush is a second old (else only after 10 s idle), so each round
/// ends one cheap call on it (`list_instances` does not touch the queue).
async fn settled(
    p: &PostgresProvider,
    admin: &PgPool,
    schema: &str,
    done: impl Fn(Stats) -> bool,
) -> Stats {
    settled_on(p, admin, schema, "orchestrator_queue", done).await
}

/// [`settled`] for the counters of `table`.
async fn settled_on(
    p: &PostgresProvider,
    admin: &PgPool,
    schema: &str,
    table: &str,
    done: impl Fn(Stats) -> bool,
) -> Stats {
    for _ in 0..150 {
        let s = table_stats(admin, schema, table).await;
        if done(s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.list_instances().await.unwrap();
    }
    panic!(
        "statistics never showed the calls: {:?}",
        table_stats(admin, schema, table).await
    );
}

#[tokio::test]
async fn repeated_orchestrator_acks_never_scan_the_queue() {
    let schema = common::fresh_schema_name("planflip");
    let p = one_connection_provider(&schema).await;
    sqlx::raw_sql(&format!(
        "INSERT INTO \"{schema}\".instance_locks (instance_id, lock_token, locked_until, locked_at)
         SELECT 'busy-' || g, 'held-' || g, 9000000000000, 0 FROM generate_series(1, 100) g;
         INSERT INTO \"{schema}\".orchestrator_queue (instance_id, kind, work_item, visible_at)
         SELECT 'busy-' || (g % 100 + 1), 'ExternalRaised', '{{}}', 0
           FROM generate_series(1, {QUEUED}) g;
         ANALYZE \"{schema}\".orchestrator_queue;"
    ))
    .execute(p.pool())
    .await
    .unwrap();
    let admin = PgPool::connect(&common::database_url()).await.unwrap();

    // Lease CALLS fresh instances first (fetches are not what is measured).
    let mut tokens = Vec::new();
    for i in 0..CALLS {
        let instance = format!("flip-{i}");
        let (item, token, _) = common::enqueue_and_fetch(&p, common::start_item(&instance, "Flip"))
            .await
            .expect("the fresh instance");
        assert_eq!(item.instance, instance);
        tokens.push((instance, token));
    }
    let before = settled(&p, &admin, &schema, |s| s.n_tup_upd >= CALLS as i64).await;

    for (instance, token) in &tokens {
        common::ack_first_turn(&p, token, instance, "Flip").await;
    }
    let after = settled(&p, &admin, &schema, |s| {
        s.n_tup_del >= before.n_tup_del + CALLS as i64
    })
    .await;
    let read = after.seq_tup_read - before.seq_tup_read;
    assert!(
        read < QUEUED,
        "{CALLS} acks read {read} queue rows by sequential scan (a full scan reads {QUEUED})"
    );
    p.cleanup_schema().await.unwrap();
}

/// Flat cost: messages that arrive for leased instances are held for them,
/// and a fetch never reads them; the ack or abandon of the lease hands them
/// on. Before, every fetch walked all of them.
#[tokio::test]
async fn fetches_never_read_the_messages_held_for_leased_instances() {
    const BUSY: usize = 20;
    /// Messages per busy instance enqueued through the provider...
    const EACH: usize = 5;
    /// ...and stored in bulk the same way (held), so the queue is large
    /// enough that the planner's choice is the one production gets.
    const BULK: i64 = 20_000;
    let schema = common::fresh_schema_name("heldscan");
    let p = one_connection_provider(&schema).await;
    let admin = PgPool::connect(&common::database_url()).await.unwrap();

    // BUSY instances leased, EACH messages arriving for each meanwhile.
    let mut leases = Vec::new();
    for b in 0..BUSY {
        let instance = format!("busy-{b}");
        let (_, token, _) = common::enqueue_and_fetch(&p, common::start_item(&instance, "Busy"))
            .await
            .expect("the busy instance");
        leases.push((instance, token));
    }
    for (instance, _) in &leases {
        for e in 0..EACH {
            p.enqueue_for_orchestrator(
                duroxide::providers::WorkItem::ExternalRaised {
                    instance: instance.clone(),
                    name: "tick".into(),
                    data: e.to_string(),
                },
                None,
            )
            .await
            .unwrap();
        }
    }
    let held: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".orchestrator_queue WHERE lock_token LIKE 'held:%'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(
        held,
        (BUSY * EACH) as i64,
        "messages for leased instances are held"
    );
    sqlx::raw_sql(&format!(
        "INSERT INTO \"{schema}\".orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
         SELECT l.instance_id, 'ExternalRaised', sample.work_item, 0, 'held:' || l.lock_token
           FROM \"{schema}\".instance_locks l
           CROSS JOIN LATERAL (SELECT q.work_item FROM \"{schema}\".orchestrator_queue q
                                WHERE q.instance_id = l.instance_id AND q.kind = 'ExternalRaised'
                                LIMIT 1) sample
           CROSS JOIN generate_series(1, {BULK} / {BUSY}) g;
         ANALYZE \"{schema}\".orchestrator_queue;"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let held = held + BULK;

    // CALLS fetches of fresh instances read (almost) nothing of them.
    for i in 0..CALLS {
        p.enqueue_for_orchestrator(common::start_item(&format!("fresh-{i}"), "Fresh"), None)
            .await
            .unwrap();
    }
    // Wait for the busy fetches' statistics (one flush carries everything
    // the backend did so far; enqueues read no queue rows).
    let before = settled(&p, &admin, &schema, |s| s.n_tup_upd >= BUSY as i64).await;
    for i in 0..CALLS {
        let (item, token, _) = common::fetch_orchestration_now(&p)
            .await
            .expect("a fresh instance");
        assert_eq!(item.instance, format!("fresh-{i}"));
        p.abandon_orchestration_item(&token, Some(Duration::from_secs(3600)), true)
            .await
            .unwrap();
    }
    let after = settled(&p, &admin, &schema, |s| {
        s.n_tup_upd >= before.n_tup_upd + 2 * CALLS as i64
    })
    .await;
    let read = after.rows_read() - before.rows_read();
    assert!(
        read < held / 4,
        "{CALLS} fetches read {read} queue rows; {held} are held for leased instances"
    );

    // The ack of a lease hands its held messages on...
    let (instance, token) = &leases[0];
    common::ack_first_turn(&p, token, instance, "Busy").await;
    let (item, _, _) = common::fetch_orchestration_now(&p)
        .await
        .expect("the acked instance's held messages");
    let per_instance = EACH + (BULK as usize) / BUSY;
    assert_eq!(
        (&item.instance, item.messages.len()),
        (instance, per_instance)
    );
    // ...and so does an abandon.
    let (instance, token) = &leases[1];
    p.abandon_orchestration_item(token, None, true)
        .await
        .unwrap();
    let (item, _, _) = common::fetch_orchestration_now(&p)
        .await
        .expect("the abandoned instance's messages");
    assert_eq!(
        (&item.instance, item.messages.len()),
        (instance, per_instance + 1)
    );
    p.cleanup_schema().await.unwrap();
}

/// The queue operations plan generically from their first call (migration
/// 0019), so a connection's plans may be made while the store is empty. A
/// queue that then grows must still be read through its indexes, with no
/// ANALYZE in between to make the plans again (autovacuum is off for the
/// queues here; in production it would replan them a minute later at most).
#[tokio::test]
async fn plans_made_on_an_empty_store_still_use_the_indexes_once_the_queues_grow() {
    let schema = common::fresh_schema_name("emptyplan");
    let p = one_connection_provider(&schema).await;
    let admin = PgPool::connect(&common::database_url()).await.unwrap();
    sqlx::raw_sql(&format!(
        "ALTER TABLE \"{schema}\".orchestrator_queue SET (autovacuum_enabled = false);
         ALTER TABLE \"{schema}\".worker_queue SET (autovacuum_enabled = false);
         ALTER TABLE \"{schema}\".instance_locks SET (autovacuum_enabled = false);"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let lock = Duration::from_secs(30);
    let filter = duroxide::providers::TagFilter::default();
    // Each cycle runs every statement of the enqueue, fetch and ack of both
    // queues; more cycles than the five custom plans the default would make.
    let cycle = |round: &'static str, i: usize| {
        let (p, filter) = (&p, &filter);
        async move {
            let instance = format!("{round}-{i}");
            common::start_instance(p, &instance, "Grow").await;
            p.enqueue_for_worker(common::activity_item(&instance, 1))
                .await
                .unwrap();
            let (_, token, _) = p
                .fetch_work_item(lock, Duration::ZERO, None, filter)
                .await
                .unwrap()
                .expect("an activity");
            p.ack_work_item(&token, None).await.unwrap();
        }
    };
    for i in 0..8 {
        cycle("empty", i).await;
    }

    // The queues grow without an ANALYZE: messages held for 100 leased
    // instances, and a backlog of ready activities older than any new one.
    sqlx::raw_sql(&format!(
        "INSERT INTO \"{schema}\".instance_locks (instance_id, lock_token, locked_until, locked_at)
         SELECT 'busy-' || g, 'lease-' || g, 9000000000000, 0 FROM generate_series(1, 100) g;
         INSERT INTO \"{schema}\".orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
         SELECT 'busy-' || (g % 100 + 1), 'ExternalRaised', '{{}}', 0, 'held:lease-' || (g % 100 + 1)
           FROM generate_series(1, {QUEUED}) g;"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let backlog = serde_json::to_string(&common::activity_item("backlog", 1)).unwrap();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".worker_queue (work_item, visible_at, instance_id, execution_id, activity_id)
         SELECT $1, 0, 'backlog-' || g, 1, 1 FROM generate_series(1, {QUEUED}) g"
    ))
    .bind(backlog)
    .execute(&admin)
    .await
    .unwrap();
    let before_o = settled_on(&p, &admin, &schema, "orchestrator_queue", |_| true).await;
    let before_w = settled_on(&p, &admin, &schema, "worker_queue", |s| s.n_tup_upd > 0).await;

    for i in 0..CALLS {
        cycle("grown", i).await;
    }
    let after_o = settled_on(&p, &admin, &schema, "orchestrator_queue", |s| {
        s.n_tup_del >= before_o.n_tup_del + CALLS as i64
    })
    .await;
    let after_w = settled_on(&p, &admin, &schema, "worker_queue", |s| {
        s.n_tup_del >= before_w.n_tup_del + CALLS as i64
    })
    .await;
    let read_o = after_o.rows_read() - before_o.rows_read();
    let read_w = after_w.rows_read() - before_w.rows_read();
    assert!(
        read_o < QUEUED / 4 && read_w < QUEUED / 4,
        "{CALLS} cycles read {read_o} orchestrator_queue rows ({QUEUED} held there) and \
         {read_w} worker_queue rows ({QUEUED} ready there)"
    );
    p.cleanup_schema().await.unwrap();
}

/// Migration 0019's rule: the per-item queue operations plan generically,
/// and nothing else does. `CREATE OR REPLACE` drops a `SET` it is not given,
/// so a later migration replacing one of them without it fails here.
#[tokio::test]
async fn queue_operations_plan_generically() {
    const GENERIC: [&str; 13] = [
        "abandon_orchestration_item",
        "abandon_work_item",
        "ack_orchestration_item",
        "ack_work_item",
        "ack_work_item_and_fetch",
        "ack_work_items_and_fetch",
        "enqueue_orchestrator_item",
        "enqueue_worker_item",
        "fetch_orchestration_item",
        "fetch_work_item",
        "renew_orchestration_item_lock",
        "renew_session_lock",
        "renew_work_item_lock",
    ];
    let schema = common::fresh_schema_name("generic");
    let p = one_connection_provider(&schema).await;
    let generic: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = $1 AND 'plan_cache_mode=force_generic_plan' = ANY (p.proconfig)
          ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(p.pool())
    .await
    .unwrap();
    assert_eq!(generic, GENERIC);
    p.cleanup_schema().await.unwrap();
}
