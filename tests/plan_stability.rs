//! No plan flip: after five executions plpgsql may switch a statement to a
//! generic plan, and a generic plan can read a whole table where the custom
//! one used an index. These tests run a call well past that point on a large
//! store and count, through the server's own statistics
//! (`pg_stat_user_tables.seq_tup_read`), the rows it read by sequential scan:
//! a property of the plan, not a timing.

mod common;

use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};
use sqlx::PgPool;

/// Messages queued for leased instances: rows no call of these tests may read
/// in full.
const QUEUED: i64 = 20_000;
const CALLS: usize = 25;

#[derive(Debug, Clone, Copy)]
struct Stats {
    seq_tup_read: i64,
    n_tup_upd: i64,
    n_tup_del: i64,
}

async fn stats(admin: &PgPool, schema: &str) -> Stats {
    let (seq_tup_read, n_tup_upd, n_tup_del): (i64, i64, i64) = sqlx::query_as(
        "SELECT seq_tup_read, n_tup_upd, n_tup_del FROM pg_stat_user_tables
          WHERE schemaname = $1 AND relname = 'orchestrator_queue'",
    )
    .bind(schema)
    .fetch_one(admin)
    .await
    .unwrap();
    Stats {
        seq_tup_read,
        n_tup_upd,
        n_tup_del,
    }
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
    for _ in 0..150 {
        let s = stats(admin, schema).await;
        if done(s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.list_instances().await.unwrap();
    }
    panic!(
        "statistics never showed the calls: {:?}",
        stats(admin, schema).await
    );
}

#[tokio::test]
async fn repeated_orchestrator_acks_never_scan_the_queue() {
    let schema = common::fresh_schema_name("planflip");
    // One connection: every call runs in one backend, whose plan cache turns
    // generic after five executions.
    let p = PostgresProvider::connect(
        PostgresConfig::new(common::database_url())
            .with_schema(&schema)
            .with_max_connections(1)
            .with_poll_mode(PollMode::PollOnly),
    )
    .await
    .unwrap();
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
        p.ack_orchestration_item(
            token,
            1,
            vec![common::started_event(instance, "Flip")],
            vec![],
            vec![],
            common::naming_metadata("Flip"),
            vec![],
        )
        .await
        .unwrap();
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
