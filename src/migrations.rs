//! Embedded, numbered SQL migrations and the runner that applies them.
//!
//! Files live in `migrations/NNNN_description.sql` and are compiled into the
//! binary. Each schema has one ledger table, `_duroxide_migrations`. The
//! runner holds a PostgreSQL advisory lock keyed on the schema for the whole
//! run, so any number of processes may start at once: one applies, the others
//! wait and then find nothing to do.

use sqlx::{PgConnection, PgPool, Row};

use crate::config::MigrationMode;
use crate::error::Error;

/// One bundled migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version number (the `NNNN` of the file name).
    pub version: i64,
    /// Description (the rest of the file name).
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $prefix:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/", $prefix, "_", $name, ".sql")),
        }
    };
}

/// Every migration bundled in this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001", "schema"),
    migration!(2, "0002", "orchestrator_queue"),
    migration!(3, "0003", "worker_queue"),
    migration!(4, "0004", "history_and_state"),
    migration!(5, "0005", "admin"),
    migration!(6, "0006", "operator"),
    migration!(7, "0007", "stats_nul"),
    migration!(8, "0008", "prefetch_takeovers"),
    migration!(9, "0009", "ready_scan"),
    migration!(10, "0010", "call_cost"),
    migration!(11, "0011", "contended_wakeups"),
    migration!(12, "0012", "function_contracts"),
    migration!(13, "0013", "retention"),
    migration!(14, "0014", "queue_vacuum"),
    migration!(15, "0015", "dashboard"),
    migration!(16, "0016", "listener_heartbeat"),
    migration!(17, "0017", "dashboard_executions"),
    migration!(18, "0018", "batched_worker_acks"),
    migration!(19, "0019", "generic_plans"),
];

/// Name of the per-schema ledger table.
pub const LEDGER_TABLE: &str = "_duroxide_migrations";

/// The newest bundled migration version.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Quotes a (validated) identifier for SQL text.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Names that follow `marker` in the bundled SQL (e.g. every created table),
/// in order of first appearance, leaving out those that a later
/// `removed_marker` drops again.
fn created_names(marker: &str, removed_marker: Option<&str>) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for m in MIGRATIONS {
        let mut events: Vec<(usize, bool, &'static str)> = Vec::new();
        for (needle, created) in [(Some(marker), true), (removed_marker, false)] {
            let Some(needle) = needle else { continue };
            for (i, _) in m.sql.match_indices(needle) {
                let rest = &m.sql[i + needle.len()..];
                let rest = rest.strip_prefix("IF EXISTS ").unwrap_or(rest);
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                events.push((i, created, &rest[..end]));
            }
        }
        events.sort_unstable();
        for (_, created, name) in events {
            if created && !names.contains(&name) {
                names.push(name);
            } else if !created {
                names.retain(|n| *n != name);
            }
        }
    }
    names
}

/// Tables the bundled migrations create.
pub fn owned_tables() -> Vec<&'static str> {
    created_names("CREATE TABLE IF NOT EXISTS ", None)
}

/// Stored functions the bundled migrations create (and do not drop again).
pub fn owned_functions() -> Vec<&'static str> {
    created_names("CREATE OR REPLACE FUNCTION ", Some("DROP FUNCTION "))
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions this run applied (empty when the schema was up to date).
    pub applied: Vec<i64>,
}

/// Brings `schema` up to date (or, in verify-only mode, checks that it is).
///
/// # Errors
/// [`Error::UnknownMigration`] when the ledger holds a version this build does
/// not bundle, [`Error::PendingMigrations`] in verify-only mode,
/// [`Error::Migration`] when a file fails (its transaction rolls back).
pub async fn run(
    pool: &PgPool,
    schema: &str,
    mode: MigrationMode,
) -> Result<MigrationReport, Error> {
    let mut conn = pool.acquire().await.map_err(db)?;
    run_on(&mut conn, schema, mode).await
}

/// [`run`] on a connection the caller holds.
pub(crate) async fn run_on(
    conn: &mut PgConnection,
    schema: &str,
    mode: MigrationMode,
) -> Result<MigrationReport, Error> {
    let result = async {
        let mut tx = sqlx::Connection::begin(conn).await.map_err(db)?;
        let report = run_in_transaction(&mut tx, schema, mode).await?;
        if report.applied.is_empty() {
            tx.rollback().await.map_err(db)?;
        } else {
            tx.commit().await.map_err(db)?;
        }
        Ok(report)
    }
    .await;
    let outcome = match &result {
        Ok(report) if report.applied.is_empty() => "up_to_date",
        Ok(_) => "applied",
        Err(_) => "failed",
    };
    crate::metrics::migration_run(schema, outcome);
    result
}

/// One row of a schema's migration ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Version number.
    pub version: i64,
    /// Name recorded when it was applied.
    pub name: String,
    /// When it was applied (UTC, RFC 3339).
    pub applied_at: String,
}

/// A schema's ledger compared with the migrations bundled in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The schema inspected.
    pub schema: String,
    /// Ledger rows this build knows, oldest first.
    pub applied: Vec<AppliedMigration>,
    /// Bundled migrations the schema has not had yet, oldest first.
    pub pending: Vec<Migration>,
    /// Ledger rows this build does not bundle (written by a newer duroxide-pg).
    pub unknown: Vec<AppliedMigration>,
}

/// Reads `schema`'s ledger and compares it with [`MIGRATIONS`]; changes nothing.
/// A schema without a ledger (or that does not exist) has every migration pending.
///
/// # Errors
/// [`Error::InvalidSchemaName`] for a bad name, [`Error::Database`] when the
/// server refuses the query.
pub async fn status(pool: &PgPool, schema: &str) -> Result<MigrationStatus, Error> {
    crate::config::validate_schema_name(schema)?;
    let mut conn = pool.acquire().await.map_err(db)?;
    // In a transaction: behind a transaction pooler, an unnamed statement
    // lives only as long as the transaction's server session.
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
    let ledger = read_ledger(&mut tx, schema).await;
    tx.rollback().await.map_err(db)?;
    let (applied, unknown): (Vec<_>, Vec<_>) = ledger?
        .into_iter()
        .partition(|a| MIGRATIONS.iter().any(|m| m.version == a.version));
    let pending = MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .copied()
        .collect();
    Ok(MigrationStatus {
        schema: schema.to_string(),
        applied,
        pending,
        unknown,
    })
}

/// The ledger's rows, oldest first (none when the ledger does not exist).
///
/// Every statement of the runner is unnamed (`persistent(false)`) and runs
/// inside a transaction: nothing is left prepared on a server session that a
/// transaction pooler may hand to another client afterwards.
async fn read_ledger(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<AppliedMigration>, Error> {
    let qschema = quote_ident(schema);
    let ledger_exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .persistent(false)
        .bind(format!("{qschema}.{LEDGER_TABLE}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if !ledger_exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT version, name,
                to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
           FROM {qschema}.{LEDGER_TABLE} ORDER BY version"
    ))
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| AppliedMigration {
            version: r.get(0),
            name: r.get(1),
            applied_at: r.get(2),
        })
        .collect())
}

/// The oldest server the bundled migrations run on (`server_version_num`):
/// PostgreSQL 14, the first with SQL-standard function bodies, which the
/// stored functions use.
pub const MIN_SERVER_VERSION_NUM: i32 = 140_000;

/// Refuses, before anything is changed, a server older than
/// [`MIN_SERVER_VERSION_NUM`]: its parser would reject a migration halfway
/// with a bare syntax error.
async fn check_server_version(conn: &mut PgConnection) -> Result<(), Error> {
    let (num, version): (i32, String) = sqlx::query_as(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
    )
    .persistent(false)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    server_version_supported(num, version)
}

fn server_version_supported(num: i32, version: String) -> Result<(), Error> {
    if num >= MIN_SERVER_VERSION_NUM {
        return Ok(());
    }
    Err(Error::UnsupportedServer {
        server_version: version,
        minimum: (MIN_SERVER_VERSION_NUM / 10_000) as u32,
    })
}

/// Runs a multi-statement script (simple query protocol). A named, concrete
/// function keeps the future `Send` for callers that spawn it.
fn exec_script<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
}

fn db(reason: sqlx::Error) -> Error {
    Error::database("migrate", &reason)
}

async fn run_in_transaction(
    tx: &mut PgConnection,
    schema: &str,
    mode: MigrationMode,
) -> Result<MigrationReport, Error> {
    let qschema = quote_ident(schema);
    // A configured statement_timeout is meant for provider calls, not for
    // schema changes, which may take longer on large tables.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    // Serialise runs on this schema across every process and pool.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('duroxide-pg/migrate/' || $1, 0))")
        .persistent(false)
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(db)?;

    let applied: Vec<(i64, String)> = read_ledger(&mut *tx, schema)
        .await?
        .into_iter()
        .map(|m| (m.version, m.name))
        .collect();

    if let Some((version, name)) = applied
        .iter()
        .find(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == *v))
    {
        return Err(Error::UnknownMigration {
            schema: schema.to_string(),
            version: *version,
            name: name.clone(),
            latest_known: latest_version(),
        });
    }
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .collect();
    if pending.is_empty() {
        return Ok(MigrationReport::default());
    }
    if mode == MigrationMode::VerifyOnly {
        return Err(Error::PendingMigrations {
            schema: schema.to_string(),
            pending: pending.iter().map(|m| m.version).collect(),
        });
    }

    check_server_version(&mut *tx).await?;

    // Unqualified names in the files resolve to the schema; functions capture it.
    let prelude = format!(
        "CREATE SCHEMA IF NOT EXISTS {qschema};
         SET LOCAL search_path TO {qschema};
         CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
    );
    exec_script(&mut *tx, &prelude).await.map_err(db)?;

    let mut report = MigrationReport::default();
    for m in pending {
        exec_script(&mut *tx, m.sql)
            .await
            .map_err(|e| Error::Migration {
                schema: schema.to_string(),
                version: m.version,
                name: m.name.to_string(),
                reason: e.to_string(),
            })?;
        sqlx::query(&format!(
            "INSERT INTO {LEDGER_TABLE} (version, name) VALUES ($1, $2)"
        ))
        .persistent(false)
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tracing::info!(
            schema,
            version = m.version,
            name = m.name,
            "applied duroxide-pg migration"
        );
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in migrations/ is bundled, in order, with a matching name.
    #[test]
    fn bundled_list_matches_files() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let bundled: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, bundled);
        for pair in MIGRATIONS.windows(2) {
            assert_eq!(
                pair[1].version,
                pair[0].version + 1,
                "versions must be consecutive"
            );
        }
    }

    /// A function a later migration drops is not owned; one dropped only to
    /// be recreated with another signature is.
    #[test]
    fn owned_functions_leave_out_dropped_ones() {
        let owned = owned_functions();
        assert!(!owned.contains(&"instance_is_leased"), "{owned:?}");
        for kept in [
            "fetch_work_item",
            "fetch_orchestration_item",
            "notify_channel",
        ] {
            assert!(owned.contains(&kept), "{kept} missing from {owned:?}");
        }
        assert!(owned_tables().contains(&"orchestrator_queue"));
    }

    #[test]
    fn servers_older_than_14_are_refused_with_their_version() {
        assert!(server_version_supported(140_000, "14.0".into()).is_ok());
        assert!(server_version_supported(150_018, "15.18".into()).is_ok());
        let err = server_version_supported(130_012, "13.12".into()).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedServer { server_version, minimum: 14 } if server_version == "13.12"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "PostgreSQL 13.12 is too old: duroxide-pg needs PostgreSQL 14 or newer \
             (its stored functions use SQL-standard function bodies)"
        );
    }
}
