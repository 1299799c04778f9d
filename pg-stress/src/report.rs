//! Reports: the comparison table, machine-readable JSON, and the markdown
//! section `--track` appends to a results file.

use std::fmt::Write as _;
use std::process::Command;

use crate::runner::RunRecord;
use crate::{Concurrency, ProviderKind, Scenario};

/// Median of the values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The per-run table followed, when there are repetitions or two providers,
/// by medians per cell and the PostgreSQL/SQLite throughput ratio.
pub fn table(records: &[RunRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>6} {:>4} {:>9} {:>7} {:>6} {:>6} {:>5} {:>9} {:>9} {:>10} {:>12} {:>9} {:>9}",
        "scenario",
        "provider",
        "o:w",
        "rep",
        "completed",
        "failed",
        "infra",
        "config",
        "app",
        "success%",
        "orch/s",
        "activity/s",
        "latency ms",
        "srv ms/o",
        "cli ms/o"
    );
    let _ = writeln!(out, "{}", "-".repeat(140));
    for r in records {
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:>6} {:>4} {:>9} {:>7} {:>6} {:>6} {:>5} {:>9.2} {:>9.2} {:>10.2} {:>12.1} {:>9} {:>9}",
            r.scenario.to_string(),
            r.provider.to_string(),
            r.concurrency.to_string(),
            r.repetition,
            r.completed,
            r.failed,
            r.failed_infrastructure,
            r.failed_configuration,
            r.failed_application,
            r.success_percent,
            r.orch_per_sec,
            r.activities_per_sec,
            r.avg_latency_ms,
            cpu_cell(r.server_cpu_ms_per_orch),
            cpu_cell(r.client_cpu_ms_per_orch)
        );
    }
    for r in records.iter().filter(|r| !r.samples.is_empty()) {
        let _ = writeln!(
            out,
            "\nsamples of {} {} {} #{}:",
            r.provider, r.scenario, r.concurrency, r.repetition
        );
        out.push_str(&crate::soak::table(&r.samples));
    }
    let repeated = records.iter().any(|r| r.repetition > 1);
    let compared = records.iter().any(|r| r.provider != ProviderKind::Postgres);
    if compared || repeated {
        medians(&mut out, records, "orch/s", |r| Some(r.orch_per_sec));
        if records.iter().any(|r| r.server_cpu_ms_per_orch.is_some()) {
            let title = "server CPU ms per completed orchestration";
            medians(&mut out, records, title, |r| r.server_cpu_ms_per_orch);
        }
        medians(
            &mut out,
            records,
            "client CPU ms per completed orchestration",
            |r| r.client_cpu_ms_per_orch,
        );
    }
    for (scenario, c) in cells(records) {
        ceilings(&mut out, records, scenario, c);
    }
    out
}

/// The worker slots' ceiling of one cell, nominal and at the measured
/// activity length, and how close each provider's median came to both.
fn ceilings(out: &mut String, records: &[RunRecord], scenario: Scenario, c: Concurrency) {
    let Some(first) = records
        .iter()
        .find(|r| r.scenario == scenario && r.concurrency == c)
    else {
        return;
    };
    let Some(nominal) = first.slot_ceiling_orch_per_sec else {
        return;
    };
    let config = &first.config;
    let _ = writeln!(
        out,
        "\nceiling of the worker slots, {scenario} {c}: {nominal:.2} orch/s \
         ({} slots, {} activities of {} ms each)",
        c.worker, config.tasks_per_instance, config.activity_delay_ms
    );
    let of_cell =
        |value: fn(&RunRecord) -> Option<f64>| cell_median(records, scenario, c, None, value);
    let measured = of_cell(|r| r.measured_slot_ceiling_orch_per_sec);
    if let (Some(ceiling), Some(length)) = (measured, of_cell(|r| r.measured_activity_ms)) {
        let _ = writeln!(
            out,
            "at the measured activity length: {ceiling:.2} orch/s (a {} ms tokio sleep took \
             {length:.2} ms, median of the runs' medians)",
            config.activity_delay_ms
        );
    }
    for kind in ProviderKind::ALL {
        let Some(reached) = cell_median(records, scenario, c, Some(kind), |r| Some(r.orch_per_sec))
        else {
            continue;
        };
        let _ = write!(
            out,
            "{:<10} {reached:.2} orch/s: {:.1} % of the ceiling",
            kind.to_string(),
            100.0 * reached / nominal
        );
        match measured {
            Some(m) => {
                let _ = writeln!(out, ", {:.1} % at the measured length", 100.0 * reached / m);
            }
            None => out.push('\n'),
        }
    }
}

/// A CPU figure of the per-run table (`-` when not measured).
fn cpu_cell(ms: Option<f64>) -> String {
    ms.map_or("-".to_string(), |v| format!("{v:.2}"))
}

/// Medians per cell of `value` for each provider, and the ratio of
/// duroxide-pg's median to each other provider's.
fn medians(
    out: &mut String,
    records: &[RunRecord],
    title: &str,
    value: impl Fn(&RunRecord) -> Option<f64>,
) {
    let kinds: Vec<ProviderKind> = ProviderKind::ALL
        .into_iter()
        .filter(|k| records.iter().any(|r| r.provider == *k))
        .collect();
    let others: Vec<ProviderKind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != ProviderKind::Postgres)
        .collect();
    let _ = writeln!(out, "\nmedians per cell ({title}):");
    let mut header = format!("{:<14} {:>6}", "scenario", "o:w");
    for k in &kinds {
        let _ = write!(header, " {:>10}", k.to_string());
    }
    for k in &others {
        let _ = write!(header, " {:>13}", format!("postgres/{}", short(*k)));
    }
    let _ = writeln!(out, "{header}");
    for (scenario, c) in cells(records) {
        let med = |kind| cell_median(records, scenario, c, Some(kind), &value);
        let mut line = format!("{:<14} {:>6}", scenario.to_string(), c.to_string());
        for k in &kinds {
            let _ = write!(
                line,
                " {:>10}",
                med(*k).map_or("-".to_string(), |v| format!("{v:.2}"))
            );
        }
        for k in &others {
            let ratio = match (med(ProviderKind::Postgres), med(*k)) {
                (Some(p), Some(o)) if o > 0.0 => format!("{:.2}x", p / o),
                _ => "-".to_string(),
            };
            let _ = write!(line, " {ratio:>13}");
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The median of `value` over the runs of one cell, of one provider when
/// `kind` is given; `None` when no such run has a value.
fn cell_median(
    records: &[RunRecord],
    scenario: Scenario,
    c: Concurrency,
    kind: Option<ProviderKind>,
    value: impl Fn(&RunRecord) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.concurrency == c)
        .filter(|r| kind.is_none_or(|k| r.provider == k))
        .filter_map(value)
        .collect();
    (!values.is_empty()).then(|| median(&values))
}

/// Short column label of a provider in the ratio columns.
fn short(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Postgres => "pg",
        ProviderKind::Published => "pub",
        ProviderKind::Sqlite => "sqlite",
    }
}

/// Distinct (scenario, concurrency) cells in run order.
fn cells(records: &[RunRecord]) -> Vec<(Scenario, Concurrency)> {
    let mut seen = Vec::new();
    for r in records {
        if !seen.contains(&(r.scenario, r.concurrency)) {
            seen.push((r.scenario, r.concurrency));
        }
    }
    seen
}

/// Facts about where a run happened, for tracked results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Environment {
    /// UTC time of the report, `YYYY-MM-DD HH:MM:SS UTC`.
    pub date: String,
    /// `git rev-parse --short HEAD`, when available.
    pub git_commit: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// `uname -sr`.
    pub os: String,
    /// `SELECT version()` of the server.
    pub postgres_version: String,
    /// The database URL with its password masked.
    pub database_url: String,
}

impl Environment {
    /// Gathers the facts (the server version is passed in).
    pub fn gather(postgres_version: String, database_url: &str) -> Self {
        let output = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown".to_string())
        };
        Self {
            date: utc_now(),
            git_commit: output("git", &["rev-parse", "--short", "HEAD"]),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: output("uname", &["-sr"]),
            postgres_version,
            database_url: duroxide_pg::redact_url(database_url),
        }
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The JSON document `--json` prints.
pub fn json(env: &Environment, command: &str, records: &[RunRecord]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "environment": env,
        "command": command,
        "runs": records,
    }))
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The markdown section `--track` appends.
pub fn tracked_section(env: &Environment, command: &str, records: &[RunRecord]) -> String {
    format!(
        "\n## {date} — commit {commit}\n\n- command: `{command}`\n- machine: {cpus} CPUs, {os}\n- PostgreSQL: \
         {pg}\n- database: `{url}`\n\n```text\n{table}```\n",
        date = env.date,
        commit = env.git_commit,
        cpus = env.cpus,
        os = env.os,
        pg = env.postgres_version,
        url = env.database_url,
        table = table(records),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    /// A clean W run of `provider` at `orch_per_sec`, whose sleep probe
    /// measured `measured_ms`.
    fn w_run(provider: ProviderKind, orch_per_sec: f64, measured_ms: f64) -> RunRecord {
        let config = duroxide::provider_stress_tests::StressTestConfig {
            worker_concurrency: 64,
            tasks_per_instance: 5,
            activity_delay_ms: 50,
            ..Default::default()
        };
        RunRecord {
            scenario: Scenario::Parallel,
            provider,
            concurrency: Concurrency {
                orch: 4,
                worker: 64,
            },
            repetition: 1,
            config,
            launched: 10,
            completed: 10,
            failed: 0,
            failed_infrastructure: 0,
            failed_configuration: 0,
            failed_application: 0,
            success_percent: 100.0,
            orch_per_sec,
            activities_per_sec: orch_per_sec * 5.0,
            avg_latency_ms: 1.0,
            total_secs: 10.0,
            samples: Vec::new(),
            slot_ceiling_orch_per_sec: crate::slot_ceiling(64, 5, 50.0),
            measured_activity_ms: Some(measured_ms),
            measured_slot_ceiling_orch_per_sec: crate::slot_ceiling(64, 5, measured_ms),
            server_cpu_ms_per_orch: None,
            client_cpu_ms_per_orch: None,
            calls: Vec::new(),
            batches: Vec::new(),
        }
    }

    #[test]
    fn the_ceiling_is_given_nominal_and_measured_with_each_providers_share() {
        let records = [
            w_run(ProviderKind::Postgres, 192.0, 51.2),
            w_run(ProviderKind::Published, 100.0, 51.2),
            w_run(ProviderKind::Postgres, 225.0, 51.2),
            w_run(ProviderKind::Published, 125.0, 51.0),
            w_run(ProviderKind::Postgres, 230.0, 51.4),
            w_run(ProviderKind::Published, 50.0, 51.2),
        ];
        let out = table(&records);
        let tail = &out[out.find("ceiling of the worker slots").expect(&out)..];
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(
            lines,
            [
                "ceiling of the worker slots, parallel 4:64: 256.00 orch/s \
                 (64 slots, 5 activities of 50 ms each)",
                "at the measured activity length: 250.00 orch/s (a 50 ms tokio sleep took \
                 51.20 ms, median of the runs' medians)",
                "postgres   225.00 orch/s: 87.9 % of the ceiling, 90.0 % at the measured length",
                "published  100.00 orch/s: 39.1 % of the ceiling, 40.0 % at the measured length",
            ]
        );
    }

    #[test]
    fn utc_format() {
        let s = utc_now();
        assert_eq!(s.len(), "2026-11-23 07:00:00 UTC".len(), "{s}");
        assert!(s.starts_with("20"));
    }
}
