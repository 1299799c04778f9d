//! TLS to the server: the throwaway cluster serves a certificate signed by a
//! throwaway CA (for `localhost` and 127.0.0.1), so `sslmode` can be tested
//! for real. `require` encrypts; `verify-full` with that CA succeeds;
//! `verify-full` with another CA, or a host name the certificate does not
//! name, fails with a clear error and creates nothing; a client certificate
//! logs in the role that requires one; settings come from the URL or the config.

use duroxide_pg_testkit::harness as common;

use std::process::Command;

use duroxide::providers::ProviderAdmin;
use duroxide_pg::{PostgresConfig, PostgresProvider, SslMode};

/// `url` with `params` appended as its query string.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn certificate() -> std::path::PathBuf {
    duroxide_pg_testkit::local_cluster::test_ca_certificate().expect(
        "the throwaway cluster's test CA: these tests need the local server binaries and openssl",
    )
}

/// Whether every connection of the provider (its call pool included, found
/// by the unique application name) is encrypted, and there is at least one.
async fn encrypted(p: &PostgresProvider, app: &str) -> bool {
    // Make sure the call pool has a connection open.
    p.list_instances().await.unwrap();
    let admin = sqlx::PgPool::connect(&common::local_url()).await.unwrap();
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
    let url = with_params(&common::local_url(), "sslmode=require");
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
    let base = common::local_url().replace("127.0.0.1", "localhost");
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
    let admin = sqlx::PgPool::connect(&common::local_url()).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&other)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!exists);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Creates the role the throwaway cluster admits only with its client
/// certificate (idempotent: tests may run concurrently).
async fn cert_role(admin: &sqlx::PgPool) -> &'static str {
    let role = duroxide_pg_testkit::local_cluster::TEST_CERT_USER;
    common::serialized_catalog_change(
        admin,
        &format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             GRANT CREATE ON DATABASE postgres TO {role};"
        ),
    )
    .await;
    role
}

#[tokio::test]
async fn a_client_certificate_is_accepted_from_the_url_or_the_config() {
    let admin = sqlx::PgPool::connect(&common::local_url()).await.unwrap();
    let role = cert_role(&admin).await;
    let (cert, key) = duroxide_pg_testkit::local_cluster::test_client_certificate()
        .expect("the throwaway cluster's client certificate");
    let base = common::local_url()
        .replace("127.0.0.1", "localhost")
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);

    // From the URL.
    let schema = common::fresh_schema_name("tlscert");
    let url = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            certificate().display(),
            cert.display(),
            key.display()
        ),
    );
    let p = PostgresProvider::connect(PostgresConfig::new(url).with_schema(&schema))
        .await
        .unwrap();
    assert!(p.list_instances().await.unwrap().is_empty());
    p.cleanup_schema().await.unwrap();

    // From the configuration, the URL saying nothing about TLS.
    let schema = common::fresh_schema_name("tlscertcfg");
    let p = PostgresProvider::connect(
        PostgresConfig::new(base.clone())
            .with_schema(&schema)
            .with_ssl_mode(SslMode::VerifyFull)
            .with_ssl_root_cert(certificate())
            .with_ssl_client_cert(&cert, &key),
    )
    .await
    .unwrap();
    assert!(p.list_instances().await.unwrap().is_empty());
    p.cleanup_schema().await.unwrap();

    // Without the certificate the server refuses the role, clearly.
    let err = PostgresProvider::connect(
        PostgresConfig::new(base)
            .with_schema(common::fresh_schema_name("tlsnocert"))
            .with_ssl_mode(SslMode::VerifyFull)
            .with_ssl_root_cert(certificate()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("as user \"{role}\"")), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name() {
    // The server also listens on 127.0.0.2, which its certificate does not name.
    let other_host = common::local_url().replace("127.0.0.1", "127.0.0.2");
    let schema = common::fresh_schema_name("tlshost");
    let err = PostgresProvider::connect(
        PostgresConfig::new(other_host.clone())
            .with_schema(&schema)
            .with_ssl_mode(SslMode::VerifyFull)
            .with_ssl_root_cert(certificate()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.2:"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // verify-ca checks the chain: the right CA is accepted (by IP, which the
    // certificate names), another is not. (Whether verify-ca also ignores the
    // host name depends on the TLS stack: sqlx 0.8's rustls path checks it
    // anyway, sqlx issue #3793; see docs/cloud.md.)
    let p = PostgresProvider::connect(
        PostgresConfig::new(common::local_url())
            .with_schema(&schema)
            .with_ssl_mode(SslMode::VerifyCa)
            .with_ssl_root_cert(certificate()),
    )
    .await
    .unwrap();
    assert!(p.list_instances().await.unwrap().is_empty());
    p.cleanup_schema().await.unwrap();
    #[cfg(feature = "native-tls")]
    {
        let p = PostgresProvider::connect(
            PostgresConfig::new(other_host)
                .with_schema(&schema)
                .with_ssl_mode(SslMode::VerifyCa)
                .with_ssl_root_cert(certificate()),
        )
        .await
        .unwrap();
        p.cleanup_schema().await.unwrap();
    }
    #[cfg(not(feature = "native-tls"))]
    drop(other_host);
}

#[tokio::test]
async fn a_missing_certificate_file_is_a_configuration_error() {
    let missing = std::env::temp_dir().join(common::fresh_schema_name("nocert"));
    let err = PostgresProvider::connect(
        PostgresConfig::new(common::local_url())
            .with_schema(common::fresh_schema_name("tlsmissing"))
            .with_ssl_mode(SslMode::VerifyFull)
            .with_ssl_root_cert(&missing),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, duroxide_pg::Error::InvalidConfig(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}
