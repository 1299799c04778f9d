//! Stress tests, run on demand: `cargo test --release -p duroxide-pg-stress -- --ignored`
//! (or `cargo nextest run --release -p duroxide-pg-stress --run-ignored only`).
//!
//! Each runs the real `pg-stress` binary (so its CLI, environment handling and
//! exit code are exercised too) with `--json`, on `DATABASE_URL` or the
//! throwaway local cluster, and asserts 100 % success with zero
//! infrastructure failures in every run.

use std::process::Command;

use serde_json::Value;

/// Runs pg-stress with `args` (and extra environment), returns its runs.
fn pg_stress(args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-stress"))
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .expect("run pg-stress");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pg-stress {args:?} exited {:?}: {stderr}",
        out.status.code()
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("pg-stress --json output");
    let runs = doc["runs"].as_array().expect("runs").clone();
    assert!(!runs.is_empty());
    for run in &runs {
        eprintln!(
            "{} {} {}:{} completed={} failed={} orch/s={:.2}",
            run["provider"],
            run["scenario"],
            run["concurrency"]["orch"],
            run["concurrency"]["worker"],
            run["completed"],
            run["failed"],
            run["orch_per_sec"].as_f64().unwrap_or(0.0)
        );
        assert_eq!(run["success_percent"].as_f64(), Some(100.0), "{run}");
        assert_eq!(run["failed_infrastructure"].as_u64(), Some(0), "{run}");
        assert!(run["completed"].as_u64().unwrap_or(0) > 0, "{run}");
    }
    runs
}

#[test]
#[ignore = "stress: run on demand"]
fn light() {
    pg_stress(&["--duration", "5", "--matrix", "2:2"], &[]);
}

#[test]
#[ignore = "stress: run on demand"]
fn standard() {
    pg_stress(&["--duration", "10"], &[]);
}

#[test]
#[ignore = "stress: run on demand"]
fn high_concurrency() {
    pg_stress(
        &[
            "--duration",
            "10",
            "--max-concurrent",
            "50",
            "--tasks",
            "10",
            "--matrix",
            "4:4",
        ],
        &[],
    );
}

#[test]
#[ignore = "stress: run on demand"]
fn pool_pressure() {
    pg_stress(
        &[
            "--duration",
            "10",
            "--max-concurrent",
            "30",
            "--matrix",
            "4:4",
        ],
        &[("DUROXIDE_PG_POOL_MAX", "5")],
    );
}

#[test]
#[ignore = "stress: run on demand (5 minutes)"]
fn long_duration() {
    pg_stress(&["--duration", "300", "--matrix", "2:2"], &[]);
}

#[test]
#[ignore = "stress: run on demand"]
fn large_payload() {
    pg_stress(
        &[
            "--duration",
            "10",
            "--scenario",
            "large-payload",
            "--matrix",
            "1:1,2:2",
        ],
        &[],
    );
}

/// The default configuration as if the server were 20 ms away (delay proxy).
#[test]
#[ignore = "stress: run on demand"]
fn default_config_at_20ms_round_trip() {
    pg_stress(
        &["--duration", "10", "--matrix", "2:2", "--rtt-ms", "20"],
        &[],
    );
}
