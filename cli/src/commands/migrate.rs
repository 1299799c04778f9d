//! `migrate` and `migrate status`.

use duroxide_pg::MigrationMode;
use duroxide_pg::migrations;
use serde_json::json;

use super::{CliResult, config};
use crate::args::{MigrateAction, MigrateArgs, Target};
use crate::output::{Table, print_json};

/// `migrate` or `migrate status`.
pub async fn run(args: MigrateArgs, t: &Target) -> CliResult {
    match args.action {
        None => apply(t).await,
        Some(MigrateAction::Status) => status(t).await,
    }
}

/// Applies every pending migration and says which ones it applied.
async fn apply(t: &Target) -> CliResult {
    let pool = config(t, MigrationMode::Apply)?.open_pool().await?;
    let report = migrations::run(&pool, &t.schema, MigrationMode::Apply).await?;
    if t.json {
        print_json(&json!({ "schema": t.schema, "applied": report.applied }));
    } else if report.applied.is_empty() {
        println!(
            "schema {:?} is up to date (version {})",
            t.schema,
            migrations::latest_version()
        );
    } else {
        println!(
            "schema {:?}: applied migrations {}",
            t.schema,
            report
                .applied
                .iter()
                .map(|v| format!("{v:04}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Lists applied, pending and unknown migrations; changes nothing.
async fn status(t: &Target) -> CliResult {
    let pool = config(t, MigrationMode::VerifyOnly)?.open_pool().await?;
    let s = migrations::status(&pool, &t.schema).await?;
    if t.json {
        let applied = |list: &[migrations::AppliedMigration]| {
            list.iter()
                .map(
                    |a| json!({ "version": a.version, "name": a.name, "applied_at": a.applied_at }),
                )
                .collect::<Vec<_>>()
        };
        print_json(&json!({
            "schema": s.schema,
            "bundled_latest": migrations::latest_version(),
            "applied": applied(&s.applied),
            "pending": s.pending.iter().map(|m| json!({ "version": m.version, "name": m.name })).collect::<Vec<_>>(),
            "unknown": applied(&s.unknown),
        }));
        return Ok(());
    }
    let mut table = Table::new(&["version", "name", "state", "applied at"]);
    let mut rows: Vec<(i64, Vec<String>)> = Vec::new();
    for (list, state) in [
        (&s.applied, "applied"),
        (&s.unknown, "unknown (newer than this build)"),
    ] {
        for a in list {
            rows.push((
                a.version,
                vec![
                    format!("{:04}", a.version),
                    a.name.clone(),
                    state.into(),
                    a.applied_at.clone(),
                ],
            ));
        }
    }
    for m in &s.pending {
        rows.push((
            m.version,
            vec![
                format!("{:04}", m.version),
                m.name.into(),
                "pending".into(),
                "-".into(),
            ],
        ));
    }
    rows.sort_by_key(|(v, _)| *v);
    for (_, row) in rows {
        table.row(row);
    }
    print!("{}", table.render());
    println!(
        "schema {:?}: {} applied, {} pending, {} unknown",
        s.schema,
        s.applied.len(),
        s.pending.len(),
        s.unknown.len()
    );
    Ok(())
}
