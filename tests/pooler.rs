//! Behind a real PgBouncer 1.18 in transaction pooling mode (the Debian
//! package, started in front of the throwaway cluster by the harness):
//!
//! - the default configuration ([`Pooler::None`]) is refused at
//!   construction with an error naming the setting, before anything is
//!   created: with prepared statements, a call could run a statement another
//!   client prepared on the shared server session (the first call failed with
//!   `prepared statement "sqlx_s_2" already exists`, later ones with
//!   `bind message supplies 5 parameters, but prepared statement "sqlx_s_12"
//!   requires 8`);
//! - [`Pooler::Transaction`] works under contention: many clients, few server
//!   sessions, every item processed exactly once, no error.
//!
//! The validation suite, the end-to-end scenarios and the hostile-input
//! cases also run through PgBouncer (`pgbouncer_*.rs`).

use duroxide_pg_testkit::harness as common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Via, fresh_schema_name};
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_pg::{Error, Pooler, PostgresConfig, PostgresProvider};

async fn schema_exists(schema: &str) -> bool {
    let admin = sqlx::PgPool::connect(&duroxide_pg_testkit::local_cluster::local_url().unwrap())
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&admin)
            .await
            .unwrap();
    admin.close().await;
    exists
}

#[tokio::test]
async fn the_default_configuration_behind_a_transaction_pooler_is_refused() {
    let schema = fresh_schema_name("pooler_refused");
    let err = PostgresProvider::connect(
        PostgresConfig::new(common::pgbouncer_url())
            .with_schema(schema.clone())
            .with_pooler(Pooler::None),
    )
    .await
    .expect_err("a pooler that drops the startup options must be refused");
    assert!(matches!(err, Error::PoolerDetected { .. }), "{err:?}");
    let message = err.to_string();
    for needle in [
        "with_pooler(Pooler::Transaction)",
        "DUROXIDE_PG_POOLER=transaction",
    ] {
        assert!(message.contains(needle), "{message:?} names {needle}");
    }
    assert!(!schema_exists(&schema).await, "nothing was created");
}

#[tokio::test]
async fn the_pooler_setting_from_the_environment_is_used() {
    // nextest runs each test in a process of its own: the variable is ours.
    // SAFETY: no other thread of this process reads the environment now.
    unsafe { std::env::set_var(duroxide_pg::POOLER_ENV, "transaction") };
    let provider = PostgresProvider::connect(
        PostgresConfig::new(common::pgbouncer_url()).with_schema(fresh_schema_name("pooler_env")),
    )
    .await
    .expect("DUROXIDE_PG_POOLER=transaction configures the provider for PgBouncer");
    provider
        .enqueue_for_worker(common::activity_item("env", 1))
        .await
        .unwrap();
    let fetched = provider
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap();
    assert!(fetched.is_some());
    provider.cleanup_schema().await.unwrap();
}

/// Several providers (40 client connections) share PgBouncer's 20 server
/// sessions while they enqueue, fetch and ack concurrently: with named
/// statements this is where another client's statement ran; here every item
/// is taken exactly once and no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_few_server_sessions_without_an_error() {
    const PROVIDERS: usize = 4;
    const ITEMS: u64 = 200;
    let schema = fresh_schema_name("pooler_load");
    let mut providers = Vec::new();
    for _ in 0..PROVIDERS {
        providers.push(Arc::new(
            PostgresProvider::connect(Via::PgBouncer.config(schema.clone()))
                .await
                .expect("provider behind PgBouncer"),
        ));
    }
    let enqueuers: Vec<_> = (0..ITEMS)
        .map(|id| {
            let p = providers[id as usize % PROVIDERS].clone();
            tokio::spawn(async move {
                p.enqueue_for_worker(common::activity_item("load", id))
                    .await
                    .expect("enqueue behind PgBouncer")
            })
        })
        .collect();
    let workers: Vec<_> = (0..PROVIDERS * 8)
        .map(|w| {
            let p = providers[w % PROVIDERS].clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                let mut idle = 0;
                while idle < 20 {
                    let fetched = p
                        .fetch_work_item(
                            Duration::from_secs(30),
                            Duration::ZERO,
                            None,
                            &TagFilter::DefaultOnly,
                        )
                        .await
                        .expect("fetch behind PgBouncer");
                    let Some((WorkItem::ActivityExecute { id, .. }, token, _)) = fetched else {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        continue;
                    };
                    idle = 0;
                    p.ack_work_item(&token, None)
                        .await
                        .expect("ack behind PgBouncer");
                    taken.push(id);
                }
                taken
            })
        })
        .collect();
    for e in enqueuers {
        e.await.unwrap();
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len() as u64, ITEMS, "each item taken once");
    assert_eq!(distinct, (0..ITEMS).collect::<BTreeSet<_>>());
    providers[0].cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn long_polling_behind_a_transaction_pooler_is_a_configuration_error() {
    let err = PostgresProvider::connect(
        PostgresConfig::new(common::pgbouncer_url())
            .with_schema(fresh_schema_name("pooler_longpoll"))
            .with_pooler(Pooler::Transaction)
            .with_poll_mode(duroxide_pg::PollMode::LongPoll),
    )
    .await
    .expect_err("LISTEN cannot work behind a transaction pooler");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("PollOnly"), "{err}");
}

#[tokio::test]
async fn an_unknown_pooler_in_the_environment_is_refused_by_name() {
    // SAFETY: as above, this process's own variable, no concurrent reader.
    unsafe { std::env::set_var(duroxide_pg::POOLER_ENV, "bouncer") };
    let err = PostgresProvider::connect(
        PostgresConfig::new(common::database_url())
            .with_schema(fresh_schema_name("pooler_bad_env")),
    )
    .await
    .expect_err("an unknown pooler mode");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("DUROXIDE_PG_POOLER") && message.contains("bouncer"),
        "{message}"
    );
}

/// Behind a transaction pooler the statement timeout travels with every call
/// (`SET LOCAL` in the call's own transaction): calls work with one set, and
/// the server session keeps nothing of it for the next client.
#[tokio::test]
async fn the_statement_timeout_travels_with_each_call() {
    let schema = fresh_schema_name("pooler_timeout");
    let provider = PostgresProvider::connect(
        Via::PgBouncer
            .config(schema.clone())
            .with_statement_timeout(Some(Duration::from_millis(1234))),
    )
    .await
    .unwrap();
    for i in 0..5 {
        provider
            .enqueue_for_worker(common::activity_item("timeout", i))
            .await
            .unwrap();
    }
    let admin = duroxide::providers::ProviderAdmin::get_queue_depths(&provider)
        .await
        .unwrap();
    assert_eq!(admin.worker_queue, 5);
    // Every server session PgBouncer has: none kept the timeout.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&common::pgbouncer_url())
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut tx = pool.begin().await.unwrap();
        let row =
            sqlx::Executor::fetch_one(&mut *tx, "SELECT current_setting('statement_timeout')")
                .await
                .unwrap();
        let timeout: String = sqlx::Row::get(&row, 0);
        assert_eq!(timeout, "0", "a server session kept the provider's timeout");
        held.push(tx);
    }
    for tx in held {
        tx.rollback().await.unwrap();
    }
    pool.close().await;
    provider.cleanup_schema().await.unwrap();
}
