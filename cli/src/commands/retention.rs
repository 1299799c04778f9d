//! `retention run` and `retention status`: the provider's retention sweep
//! from the command line (for cron), and what the store says about it.

use std::time::Duration;

use duroxide_pg::{PostgresProvider, RetentionPolicy, RetentionReport};
use serde_json::{Value, json};

use super::{CliResult, open};
use crate::args::{RetentionAction, RetentionArgs, RetentionRunArgs, Target};
use crate::output::{Table, print_json};
use crate::time::{format_ms, parse_age};

/// `retention run ...` or `retention status`. A sweep's policy is checked
/// before anything connects.
pub async fn run(args: RetentionArgs, t: &Target) -> CliResult {
    match args.action {
        RetentionAction::Run(run_args) => {
            let policy = policy(&run_args)?;
            let p = open(t).await?;
            sweep(&p, t.json, &policy, run_args.dry_run).await
        }
        RetentionAction::Status => {
            let p = open(t).await?;
            status(&p, t.json).await
        }
    }
}

/// The policy `retention run`'s flags describe, checked.
fn policy(args: &RetentionRunArgs) -> Result<RetentionPolicy, String> {
    let (completed, failed) = (args.completed.as_deref(), args.failed.as_deref());
    let (keep_executions, batch_size) = (args.keep_executions, args.batch_size);
    let age = |flag: &str, text: Option<&str>| {
        text.map(|t| parse_age(t).map_err(|e| format!("--{flag}: {e}")))
            .transpose()
    };
    let mut policy = RetentionPolicy::new().with_batch_size(batch_size);
    if let Some(w) = age("completed", completed)? {
        policy = policy.keep_completed_for(w);
    }
    if let Some(w) = age("failed", failed)? {
        policy = policy.keep_failed_for(w);
    }
    if let Some(n) = keep_executions {
        policy = policy.keep_executions(n);
    }
    if completed.is_none() && failed.is_none() && keep_executions.is_none() {
        return Err(
            "retention run deletes nothing without --completed, --failed or --keep-executions"
                .into(),
        );
    }
    policy.validate().map_err(|e| e.to_string())?;
    Ok(policy)
}

fn window(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs()))
}

fn policy_json(p: &RetentionPolicy) -> Value {
    json!({
        "completed_secs": window(p.completed_window()),
        "failed_secs": window(p.failed_window()),
        "keep_executions": p.executions_kept(),
    })
}

/// `retention run ...`: one sweep (or its dry run), the counts printed.
async fn sweep(
    p: &PostgresProvider,
    json: bool,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> CliResult {
    let owner = format!("cli:{}", std::process::id());
    let r: RetentionReport = p.run_retention(policy, Some(&owner), dry_run).await?;
    if json {
        let mut out = json!({
            "dry_run": r.dry_run,
            "ran": r.ran,
            "instances": r.instances,
            "executions": r.executions,
            "events": r.events,
            "pruned_executions": r.pruned_executions,
            "batches": r.batches,
            "timeouts": r.timeouts,
            "policy": policy_json(policy),
        });
        if dry_run {
            out["instance_ids"] = json!(r.instance_ids);
            out["pruned"] = r
                .pruned
                .iter()
                .map(|(id, n)| json!({ "instance_id": id, "executions": n }))
                .collect();
        }
        print_json(&out);
        return Ok(());
    }
    if !r.ran {
        println!("another sweeper holds the sweep lease on this schema: nothing done");
        return Ok(());
    }
    if dry_run {
        let mut t = Table::new(&["instance", "would lose"]);
        for id in &r.instance_ids {
            t.row(vec![id.clone(), "all".into()]);
        }
        for (id, n) in &r.pruned {
            t.row(vec![id.clone(), format!("{n} old executions")]);
        }
        print!("{}", t.render());
    }
    println!(
        "{} {} instances, {} executions ({} pruned from chains), {} events ({})",
        if dry_run {
            "dry run: would delete"
        } else {
            "deleted"
        },
        r.instances,
        r.executions,
        r.pruned_executions,
        r.events,
        policy
    );
    Ok(())
}

/// `retention status`.
async fn status(p: &PostgresProvider, json: bool) -> CliResult {
    let s = p.retention_status().await?;
    let oldest = |o: &Option<(String, u64)>| {
        o.as_ref()
            .map(|(id, at)| json!({ "instance_id": id, "finished_at": format_ms(*at) }))
    };
    if json {
        print_json(&json!({
            "policy": s.policy.as_ref().map(policy_json),
            "policy_by": s.policy_by.as_ref().map(|(by, _)| by),
            "policy_at": s.policy_by.as_ref().map(|(_, at)| format_ms(*at)),
            "sweeping": s.sweeping.as_ref().map(|(by, until)| json!({ "by": by, "lease_until": format_ms(*until) })),
            "last_sweep": s.last.as_ref().map(|l| json!({
                "by": l.by,
                "policy": l.policy.as_ref().map(policy_json),
                "started_at": format_ms(l.started_at_ms),
                "finished_at": format_ms(l.finished_at_ms),
                "instances": l.instances,
                "executions": l.executions,
                "events": l.events,
                "error": l.error,
            })),
            "oldest_completed": oldest(&s.oldest_completed),
            "oldest_failed": oldest(&s.oldest_failed),
        }));
        return Ok(());
    }
    match (&s.policy, &s.policy_by) {
        (Some(policy), Some((by, at))) => {
            println!("policy: {} (stored by {by} at {})", policy, format_ms(*at))
        }
        _ => println!("policy: none stored (no provider here runs a retention policy)"),
    }
    match &s.sweeping {
        Some((by, until)) => println!("sweeping now: {by} (lease until {})", format_ms(*until)),
        None => println!("sweeping now: no"),
    }
    match &s.last {
        Some(l) => println!(
            "last sweep: {} by {}, {} to {}: {} instances, {} executions, {} events{}",
            if l.error.is_some() { "failed" } else { "done" },
            l.by,
            format_ms(l.started_at_ms),
            format_ms(l.finished_at_ms),
            l.instances,
            l.executions,
            l.events,
            l.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        ),
        None => println!("last sweep: none"),
    }
    let mut t = Table::new(&["status", "oldest root", "finished at"]);
    for (status, o) in [
        ("Completed", &s.oldest_completed),
        ("Failed", &s.oldest_failed),
    ] {
        let (id, at) = o
            .as_ref()
            .map_or(("-".to_string(), "-".to_string()), |(id, at)| {
                (id.clone(), format_ms(*at))
            });
        t.row(vec![status.into(), id, at]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Property tests of `retention run --completed/--failed`, from the
    //! command line to the checked policy. `PROPTEST_CASES=5000 cargo
    //! nextest run -p duroxide-pg-cli --bin duroxide-pg retention::` runs
    //! them longer.

    use std::time::Duration;

    use clap::Parser;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::{RetentionPolicy, policy};
    use crate::args::{Cli, Command, RetentionAction, RetentionArgs};
    use crate::time::tests::{check, count, time_soup, unit, unit_secs};

    /// The policy `retention run <args>` checks before connecting.
    fn policy_of(args: &[&str]) -> Result<Result<RetentionPolicy, String>, TestCaseError> {
        let cli = Cli::try_parse_from(
            ["duroxide-pg", "retention", "run"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match cli.command {
            Command::Retention(RetentionArgs {
                action: RetentionAction::Run(args),
            }) => Ok(policy(&args)),
            other => Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    /// `--completed=<n><unit>` and `--failed=<n><unit>` keep trees exactly
    /// n units; a zero window, one too long for the store's millisecond
    /// arithmetic, and one whose seconds overflow are refused with the
    /// flag's name (never wrapped into a short window that would delete
    /// recent work).
    #[test]
    fn retention_windows_read_as_whole_units() {
        check((count(), unit(), any::<bool>()), |(n, unit, failed)| {
            let flag = if failed { "failed" } else { "completed" };
            let arg = format!("--{flag}={n}{unit}");
            let got = policy_of(&[arg.as_str()])?;
            let secs = n.checked_mul(unit_secs(unit));
            let fits = secs.is_some_and(|s| s > 0 && u128::from(s) * 1000 <= i64::MAX as u128 / 2);
            match got {
                Ok(p) => {
                    prop_assert!(fits, "{} accepted", arg);
                    let window = if failed {
                        p.failed_window()
                    } else {
                        p.completed_window()
                    };
                    prop_assert_eq!(window, secs.map(Duration::from_secs));
                }
                Err(e) => {
                    prop_assert!(!fits, "{}: {}", arg, e);
                    if secs.is_none() {
                        prop_assert!(e.contains(&format!("--{flag}")), "{}", e);
                    }
                }
            }
            Ok(())
        });
    }

    /// Any text after `--completed=` or `--failed=` never panics the CLI;
    /// a window it accepts is at least a second.
    #[test]
    fn retention_flags_never_panic() {
        check((time_soup(), time_soup()), |(completed, failed)| {
            let (c, f) = (
                format!("--completed={completed}"),
                format!("--failed={failed}"),
            );
            if let Ok(p) = policy_of(&[c.as_str(), f.as_str()])? {
                for w in [p.completed_window(), p.failed_window()]
                    .into_iter()
                    .flatten()
                {
                    prop_assert!(w >= Duration::from_secs(1), "{:?}", w);
                }
            }
            Ok(())
        });
    }
}
