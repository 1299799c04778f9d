//! Building a provider: bad input is rejected before anything is created,
//! connection failures name host and port but never the password, unknown
//! migrations are refused, and concurrent start-up applies each migration once.

use duroxide_pg_testkit::harness as common;

use std::time::{Duration, Instant};

use common::{database_url, fresh_schema_name};
use duroxide::providers::WorkItem;
use duroxide_pg::migrations::{LEDGER_TABLE, MIGRATIONS};
use duroxide_pg::{Error, MigrationMode, PostgresConfig, PostgresProvider};
use sqlx::PgPool;

async fn admin_pool() -> PgPool {
    PgPool::connect(&database_url())
        .await
        .expect("admin connection")
}

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_schema_names_are_rejected_and_create_nothing() {
    let pool = admin_pool().await;
    let long = "a".repeat(64);
    for bad in [
        "bad\"quote",
        "semi;colon",
        "has space",
        "",
        long.as_str(),
        "x'; DROP SCHEMA public; --",
        "Upper",
    ] {
        let err = PostgresProvider::new_with_schema(&database_url(), Some(bad))
            .await
            .unwrap_err();
        match &err {
            Error::InvalidSchemaName { name, .. } => assert_eq!(name, bad),
            other => panic!("{bad:?}: expected InvalidSchemaName, got {other:?}"),
        }
        assert!(err.to_string().contains("invalid schema name"), "{err}");
    }
    // No schema by any of these names (or their lowercase forms) appeared.
    // (Checked by name: other tests create and drop schemas concurrently, so
    // a count of all schemas would race with them.)
    for bad in [
        "bad\"quote",
        "semi;colon",
        "has space",
        long.as_str(),
        "x'; DROP SCHEMA public; --",
        "Upper",
        "upper",
    ] {
        assert!(
            !schema_exists(&pool, bad).await,
            "schema {bad:?} was created"
        );
    }
    assert!(schema_exists(&pool, "public").await);
}

#[tokio::test]
async fn refused_connection_names_host_and_port_not_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:S3cr3t-pw@127.0.0.1:{port}/db");
    let started = Instant::now();
    let err = PostgresProvider::connect(
        PostgresConfig::new(&url).with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("127.0.0.1") && text.contains(&port.to_string()),
        "{text}"
    );
    assert!(!text.contains("S3cr3t-pw"), "password leaked: {text}");
    assert!(matches!(err, Error::Connect { .. }));
}

#[tokio::test]
async fn silent_server_times_out_within_connect_timeout() {
    // Accepts TCP but never answers the startup message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let url = format!("postgres://app:hunter2-pw@127.0.0.1:{port}/db");
    let started = Instant::now();
    let err = PostgresProvider::connect(
        PostgresConfig::new(&url).with_connect_timeout(Duration::from_millis(700)),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2-pw"), "password leaked: {text}");
    hold.abort();
}

#[tokio::test]
async fn malformed_url_is_rejected_without_echoing_the_password() {
    let err = PostgresProvider::new("postgres://app:pa55word@127.0.0.1:notaport/db")
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::InvalidUrl { .. }), "{text}");
    assert!(!text.contains("pa55word"), "password leaked: {text}");
}

#[tokio::test]
async fn ledger_with_newer_migration_is_refused() {
    let schema = fresh_schema_name("newer");
    let provider = PostgresProvider::new_with_schema(&database_url(), Some(&schema))
        .await
        .unwrap();
    let future = MIGRATIONS.last().unwrap().version + 1;
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".{LEDGER_TABLE} (version, name) VALUES ($1, 'from_the_future')"
    ))
    .bind(future)
    .execute(provider.pool())
    .await
    .unwrap();

    let err = PostgresProvider::new_with_schema(&database_url(), Some(&schema))
        .await
        .unwrap_err();
    match &err {
        Error::UnknownMigration { version, name, .. } => {
            assert_eq!(*version, future);
            assert_eq!(name, "from_the_future");
        }
        other => panic!("expected UnknownMigration, got {other:?}"),
    }
    assert!(err.to_string().contains("upgrade duroxide-pg"), "{err}");
    provider.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn verify_only_refuses_an_unmigrated_schema_and_creates_nothing() {
    let pool = admin_pool().await;
    let schema = fresh_schema_name("verify");
    let config = PostgresConfig::new(database_url())
        .with_schema(&schema)
        .with_migrations(MigrationMode::VerifyOnly);
    let err = PostgresProvider::connect(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::PendingMigrations { .. }), "{err:?}");
    assert!(!schema_exists(&pool, &schema).await);

    // Once migrated, verify-only succeeds.
    let migrated = PostgresProvider::new_with_schema(&database_url(), Some(&schema))
        .await
        .unwrap();
    PostgresProvider::connect(config)
        .await
        .expect("verify-only on an up-to-date schema");
    migrated.cleanup_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_providers_apply_each_migration_once() {
    let schema = fresh_schema_name("herd");
    let url = database_url();
    let starts = (0..16).map(|_| {
        let (url, schema) = (url.clone(), schema.clone());
        tokio::spawn(async move {
            PostgresProvider::connect(
                PostgresConfig::new(url)
                    .with_schema(schema)
                    .with_max_connections(2),
            )
            .await
        })
    });
    let providers: Vec<PostgresProvider> = futures_join(starts)
        .await
        .into_iter()
        .map(|r| r.expect("provider"))
        .collect();
    assert_eq!(providers.len(), 16);

    let ledger: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT version, count(*) FROM \"{schema}\".{LEDGER_TABLE} GROUP BY version ORDER BY version"
    ))
    .fetch_all(providers[0].pool())
    .await
    .unwrap();
    let expected: Vec<(i64, i64)> = MIGRATIONS.iter().map(|m| (m.version, 1)).collect();
    assert_eq!(ledger, expected);
    providers[0].cleanup_schema().await.unwrap();
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn cleanup_schema_removes_everything() {
    let pool = admin_pool().await;
    let schema = fresh_schema_name("cleanup");
    let provider = PostgresProvider::new_with_schema(&database_url(), Some(&schema))
        .await
        .unwrap();
    assert!(schema_exists(&pool, &schema).await);
    provider.cleanup_schema().await.unwrap();
    assert!(!schema_exists(&pool, &schema).await);
}

/// Connection hygiene: the configured application_name and statement_timeout
/// reach every connection, and the search_path is the provider's schema even
/// when the URL asks for another.
#[tokio::test]
async fn connection_settings_are_applied_and_search_path_is_pinned() {
    let schema = fresh_schema_name("hygiene");
    // The URL asks for another search_path and isolation level: the provider's win.
    let url = format!(
        "{}?options=-c%20search_path%3Dpublic%20-c%20default_transaction_isolation%3Dserializable",
        database_url()
    );
    let p = PostgresProvider::connect(
        PostgresConfig::new(url)
            .with_schema(schema.clone())
            .with_application_name("dxtest-hygiene")
            .with_statement_timeout(Some(Duration::from_millis(1500))),
    )
    .await
    .unwrap();
    let (app, timeout, path, isolation): (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('application_name'), current_setting('statement_timeout'),
                current_setting('search_path'), current_setting('default_transaction_isolation')",
    )
    .fetch_one(p.pool())
    .await
    .unwrap();
    // The stored functions' locking relies on READ COMMITTED (migration 0009).
    assert_eq!(isolation, "read committed");
    assert_eq!(app, "dxtest-hygiene");
    assert_eq!(timeout, "1500ms");
    assert_eq!(path, schema);
    // The provider's own call connections carry the same name.
    assert!(
        duroxide::providers::ProviderAdmin::list_instances(&p)
            .await
            .unwrap()
            .is_empty()
    );
    let admin = admin_pool().await;
    let named: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dxtest-hygiene'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(named >= 1, "{named}");
    p.cleanup_schema().await.unwrap();

    for config in [
        PostgresConfig::new(database_url()).with_application_name(""),
        PostgresConfig::new(database_url()).with_statement_timeout(Some(Duration::ZERO)),
    ] {
        match PostgresProvider::connect(config).await {
            Err(Error::InvalidConfig(_)) => {}
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}

/// The stored functions act on their own schema whatever `search_path` the
/// calling connection has: the inlined SQL functions (read, custom status,
/// channel, lock key) bind their names when created, the plpgsql entry points
/// pin the schema for themselves and for the helpers they call (checked
/// through their effects: a message held for A's live lease, found by
/// `live_lease_token`, and a NOTIFY on A's channel, sent by `notify_work`).
#[tokio::test]
async fn stored_functions_act_on_their_own_schema_whatever_the_callers_search_path() {
    let a = common::fresh_provider("own_schema_a").await;
    let b = common::fresh_provider("own_schema_b").await;
    common::start_instance(&a, "only-in-a", "Orch").await;
    let (sa, sb) = (a.schema_name().to_string(), b.schema_name().to_string());

    // A connection that looks at B first, then public.
    let mut conn = b.pool().acquire().await.unwrap();
    sqlx::query(&format!("SET search_path = \"{sb}\", public"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let events: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT * FROM \"{sa}\".read_history('only-in-a', NULL)"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        !events.is_empty() && events[0].contains("only-in-a"),
        "{events:?}"
    );
    let status: Option<(Option<String>, i64)> = sqlx::query_as(&format!(
        "SELECT * FROM \"{sa}\".get_custom_status('only-in-a', -1)"
    ))
    .fetch_optional(&mut *conn)
    .await
    .unwrap();
    assert_eq!(status, Some((None, 0)));
    let (channel, expected_channel, key, expected_key): (String, String, i64, i64) =
        sqlx::query_as(&format!(
            "SELECT \"{sa}\".notify_channel(), 'duroxide_pg_' || left(md5($1), 24),
                    \"{sa}\".lock_key('instance', 'x'),
                    hashtextextended('duroxide-pg/' || $1 || '/instance/x', 0)"
        ))
        .bind(&sa)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!((channel.clone(), key), (expected_channel, expected_key));

    // A live lease on only-in-a in A, and a listener on A's channel.
    let (_, token, _) = common::enqueue_and_fetch(
        &a,
        WorkItem::ExternalRaised {
            instance: "only-in-a".into(),
            name: "first".into(),
            data: "{}".into(),
        },
    )
    .await
    .expect("lease only-in-a");
    let mut listener = sqlx::postgres::PgListener::connect(&database_url())
        .await
        .unwrap();
    listener.listen(&channel).await.unwrap();

    // Writes through plpgsql entry points from the B-first connection.
    let enqueue = |instance: &str| {
        format!(
            "SELECT \"{sa}\".enqueue_orchestrator_item('{instance}', 'ExternalRaised', '{{}}',
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 0)"
        )
    };
    sqlx::query(&enqueue("only-in-a"))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(&enqueue("not-leased"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let tags = |schema: &str| {
        format!(
            "SELECT instance_id, lock_token FROM \"{schema}\".orchestrator_queue
              WHERE instance_id IN ('only-in-a', 'not-leased') AND lock_token IS DISTINCT FROM $1
              ORDER BY instance_id"
        )
    };
    let in_a: Vec<(String, Option<String>)> = sqlx::query_as(&tags(&sa))
        .bind(&token)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        in_a,
        vec![
            ("not-leased".to_string(), None),
            ("only-in-a".to_string(), Some(format!("held:{token}"))),
        ]
    );
    let in_b: Vec<(String, Option<String>)> = sqlx::query_as(&tags(&sb))
        .bind(&token)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(in_b.is_empty(), "{in_b:?}");
    // The message for the instance without a lease was announced on A's channel.
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification on A's channel")
        .unwrap();
    assert_eq!((note.channel(), note.payload()), (channel.as_str(), "o1"));
    conn.detach();
    a.cleanup_schema().await.unwrap();
    b.cleanup_schema().await.unwrap();
}

/// Cold start: construction opens, in parallel, the connections a runtime
/// needs at once and keeps them, so a fresh runtime's first calls do not each
/// wait for a connection set-up (TCP, TLS, authentication). Before, the pool
/// held only the probe connection and opened the rest on the first calls.
#[tokio::test]
async fn construction_opens_the_connections_a_runtime_needs_at_once() {
    let schema = fresh_schema_name("ahead");
    let p = PostgresProvider::connect(PostgresConfig::new(database_url()).with_schema(&schema))
        .await
        .unwrap();
    let status = p.pool_status();
    assert_eq!(
        (status.open, status.idle),
        (
            duroxide_pg::PostgresConfig::DEFAULT_MIN_CONNECTIONS as usize,
            status.open
        ),
        "{status:?}"
    );
    p.close().await;

    // Capped at the pool size; none ahead when asked for none.
    for (config, expected) in [
        (
            PostgresConfig::new(database_url()).with_max_connections(2),
            2,
        ),
        (
            PostgresConfig::new(database_url()).with_min_connections(0),
            1,
        ),
        (
            PostgresConfig::new(database_url()).with_min_connections(6),
            6,
        ),
    ] {
        let p = PostgresProvider::connect(config.with_schema(&schema))
            .await
            .unwrap();
        assert_eq!(p.pool_status().open, expected, "{:?}", p.pool_status());
        p.close().await;
    }
    match PostgresProvider::connect(
        PostgresConfig::new(database_url())
            .with_schema(&schema)
            .with_max_connections(2)
            .with_min_connections(3),
    )
    .await
    {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("min_connections"), "{m}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let p = PostgresProvider::connect(PostgresConfig::new(database_url()).with_schema(&schema))
        .await
        .unwrap();
    p.cleanup_schema().await.unwrap();
    p.close().await;
}
