//! pg-stress's command line: bad input gives a one-line error and a non-zero
//! exit, never a panic, and passwords never reach the output.

use std::process::{Command, Output};

fn pg_stress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pg-stress"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run")
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_matrix() {
    let e = one_line_error(&pg_stress(&["--matrix", "2x2"]));
    assert!(e.contains("invalid matrix"), "{e}");
}

#[test]
fn wrong_url() {
    let e = one_line_error(&pg_stress(&["--database-url", "mysql://u:pw-secret@h/db"]));
    assert!(!e.contains("pw-secret"), "{e}");
}

#[test]
fn unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:pw-secret@127.0.0.1:{port}/db");
    let e = one_line_error(&pg_stress(&["--database-url", &url, "--duration", "1"]));
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.contains("pw-secret"), "{e}");
}

#[test]
fn help_lists_the_options() {
    let out = pg_stress(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--duration",
        "--database-url",
        "--scenario",
        "--matrix",
        "--compare-sqlite",
        "--track",
        "--json",
        "--rtt-ms",
        "--compare-published",
        "--sample-every",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn compare_published_without_the_feature_or_a_huge_rtt_is_refused() {
    let e = one_line_error(&pg_stress(&["--rtt-ms", "20000"]));
    assert!(e.contains("--rtt-ms must be at most 10000"), "{e}");
    if !cfg!(feature = "published") {
        let e = one_line_error(&pg_stress(&["--compare-published"]));
        assert!(e.contains("`published` feature"), "{e}");
    }
}

/// A run that succeeds prints the URL (table header, tracked results, JSON)
/// with its password masked.
#[test]
fn a_successful_run_never_prints_the_password() {
    // The throwaway cluster trusts `postgres`, so any password logs in.
    let url = duroxide_pg_testkit::local_cluster::local_url()
        .unwrap()
        .replacen("postgres@", "postgres:pw-s3cret@", 1);
    assert!(url.contains("pw-s3cret@"), "{url}");
    let track = std::env::temp_dir().join(format!("pg-stress-track-{}.md", std::process::id()));
    for extra in [&["--track", track.to_str().unwrap()][..], &["--json"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_pg-stress"))
            .args(["--database-url", &url, "--duration", "1", "--matrix", "1:1"])
            .args(extra)
            .output()
            .expect("run");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(all.contains("127.0.0.1"), "the URL is shown, masked: {all}");
        assert!(!all.contains("pw-s3cret"), "{all}");
    }
    let tracked = std::fs::read_to_string(&track).unwrap();
    assert!(
        tracked.contains("***") && !tracked.contains("pw-s3cret"),
        "{tracked}"
    );
    std::fs::remove_file(track).unwrap();
}

/// `--via-pgbouncer` runs through a real PgBouncer in transaction mode, the
/// provider configured for it, every orchestration completing. Regression:
/// the tool's own server-version query used a named prepared statement and
/// failed there (`prepared statement "sqlx_s_1" already exists`) whenever
/// PgBouncer handed it a server session another client had prepared on.
#[test]
fn a_run_through_pgbouncer_completes_everything() {
    // Another client first leaves a prepared statement named as sqlx names
    // its first one on every server session PgBouncer has (each client
    // connection in a transaction of its own holds a session of its own).
    let url = duroxide_pg_testkit::local_cluster::pgbouncer_url().expect("PgBouncer");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut tx = pool.begin().await.unwrap();
            // "already exists" (42P05): an earlier run left it there; as good.
            let _ = sqlx::query("SELECT 1").execute(&mut *tx).await;
            held.push(tx);
        }
        for tx in held {
            tx.rollback().await.unwrap();
        }
        pool.close().await;
    });
    for _ in 0..2 {
        let out = pg_stress(&["--via-pgbouncer", "--duration", "1", "--matrix", "1:1"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(all.contains("100.00"), "{all}");
    }
}

/// `--preset w`: config W's slots and load, the server's and the client's
/// CPU per completed orchestration (the throwaway cluster runs on this
/// machine), and the ceiling the worker slots allow. A preset and the
/// options it sets are refused together.
#[test]
fn preset_w_reports_cpu_per_orchestration_and_its_ceiling() {
    let url = duroxide_pg_testkit::local_cluster::local_url().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pg-stress"))
        .args([
            "--database-url",
            &url,
            "--preset",
            "w",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &doc["runs"][0];
    let config = &run["config"];
    assert_eq!(
        (
            &config["orch_concurrency"],
            &config["worker_concurrency"],
            &config["max_concurrent"],
            &config["tasks_per_instance"],
            &config["activity_delay_ms"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(64),
            &serde_json::json!(300),
            &serde_json::json!(5),
            &serde_json::json!(50)
        )
    );
    assert_eq!(run["slot_ceiling_orch_per_sec"], 256.0);
    // The sleep probe's length, as it really took: never less than asked.
    let measured = run["measured_activity_ms"]
        .as_f64()
        .expect("measured length");
    let ceiling = run["measured_slot_ceiling_orch_per_sec"]
        .as_f64()
        .expect("measured ceiling");
    assert!(measured >= 50.0, "{measured}");
    assert!(
        (ceiling - 64.0 * 1000.0 / measured / 5.0).abs() < 1e-9,
        "{ceiling} at {measured} ms"
    );
    for cpu in ["server_cpu_ms_per_orch", "client_cpu_ms_per_orch"] {
        let ms = run[cpu].as_f64().unwrap_or_else(|| panic!("{cpu}: {run}"));
        assert!(ms > 0.0, "{cpu}: {ms}");
    }

    let out = pg_stress(&["--preset", "p", "--matrix", "1:1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("--preset"),
        "{stderr}"
    );
}
