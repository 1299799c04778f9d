//! TLS to the server: the throwaway cluster serves a certificate signed by a
//! throwaway CA (for `localhost` and 127.0.0.1), so `sslmode` can be tested
//! for real. `require` encrypts; `verify-full` with that CA succeeds;
//! `verify-full` with another CA fails with a clear error and creates nothing.

mod common;

use std::process::Command;

use duroxide::providers::ProviderAdmin;
use duroxide_pg::{PostgresConfig, PostgresProvider};

/// `url` with `params` appended as its query string.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn certificate() -> std::path::PathBuf {
    duroxide_pg::local_cluster::test_ca_certificate()
        .expect("the throwaway cluster's test CA: these tests need the local cluster (DATABASE_URL unset) and openssl")
}

/// Whether every connection of the provider (its call pool included, found
/// by the unique application name) is encrypted, and there is at least one.
async fn encrypted(p: &PostgresProvider, app: &str) -> bool {
    // Make sure the call pool has a connection open.
    p.list_instances().await.unwrap();
    let admin = sqlx::PgPool::connect(&common::database_url())
        .await
        .unwrap();
    let (n, ssl): (i64, bool) = sqlx::query_as(
        "SELECT count(*), coalesce(bool_and(s.ssl), false)
           FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
          WHERE a.application_name = $1",
    )
    .bind(app)
    .fetch_one(&admin)
    .await
    .unwrap();
    admin.close().await;
    n >= 1 && ssl
}

#[tokio::test]
async fn sslmode_require_encrypts_every_connection() {
    let url = with_params(&common::database_url(), "sslmode=require");
    let app = common::fresh_schema_name("tlsapp");
    let p = PostgresProvider::connect(
        PostgresConfig::new(url)
            .with_schema(common::fresh_schema_name("tls"))
            .with_application_name(app.clone()),
    )
    .await
    .unwrap();
    assert!(encrypted(&p, &app).await);
    // Provider calls work over TLS too.
    assert!(p.list_instances().await.unwrap().is_empty());
    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn verify_full_accepts_the_right_ca_and_refuses_another() {
    let base = common::database_url().replace("127.0.0.1", "localhost");
    let good = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certificate().display()
        ),
    );
    let schema = common::fresh_schema_name("tlsca");
    let app = common::fresh_schema_name("tlscaapp");
    let p = PostgresProvider::connect(
        PostgresConfig::new(good)
            .with_schema(schema.clone())
            .with_application_name(app.clone()),
    )
    .await
    .unwrap();
    assert!(encrypted(&p, &app).await);
    p.cleanup_schema().await.unwrap();

    // A CA that did not sign the server's certificate.
    let dir = std::env::temp_dir().join(common::fresh_schema_name("otherca"));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let bad = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            dir.join("ca.crt").display()
        ),
    );
    let other = common::fresh_schema_name("tlsbad");
    let err = PostgresProvider::connect(PostgresConfig::new(bad).with_schema(other.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL at localhost:"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Nothing was created.
    let admin = sqlx::PgPool::connect(&common::database_url())
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&other)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!exists);
    std::fs::remove_dir_all(dir).unwrap();
}
