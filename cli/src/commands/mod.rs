//! Runs one parsed command: opens the store, calls the provider, prints.
//!
//! Each command is built on duroxide-pg's public API (the `Provider` and
//! `ProviderAdmin` traits, `duroxide::Client`, and the provider's own operator
//! methods); nothing here writes SQL.

mod control;
mod inspect;
mod maintenance;
mod migrate;
mod retention;
mod ui;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::ProviderError;
use duroxide_pg::{Error, MigrationMode, PollMode, PostgresConfig, PostgresProvider};

use crate::args::{
    Cli, Command, InstanceAction, InstancesAction, MigrateAction, RetentionAction, Target,
};

/// A failed command: one line for stderr.
#[derive(Debug)]
pub struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        match e {
            Error::PendingMigrations { schema, pending } => CliError(format!(
                "schema {schema:?} is missing migrations {pending:?}: run `duroxide-pg migrate` first"
            )),
            other => CliError(other.to_string()),
        }
    }
}

impl From<ProviderError> for CliError {
    fn from(e: ProviderError) -> Self {
        CliError(e.to_string())
    }
}

impl From<String> for CliError {
    fn from(e: String) -> Self {
        CliError(e)
    }
}

/// Result of a command.
pub type CliResult = Result<(), CliError>;

/// Whether the provider reported a missing instance (our SQLSTATE DXN01).
fn is_not_found(e: &ProviderError) -> bool {
    duroxide_pg::sqlstate(e) == Some("DXN01")
}

/// An error for an instance a provider call did not find, else the
/// provider's own message.
fn instance_error(id: &str, e: ProviderError) -> CliError {
    if is_not_found(&e) {
        CliError(format!("instance {id:?} not found"))
    } else {
        e.into()
    }
}

/// The database URL or the error that says how to give one.
fn url(target: &Target) -> Result<&str, CliError> {
    target.database_url.as_deref().ok_or_else(|| {
        CliError("no database given: pass --database-url or set DATABASE_URL".into())
    })
}

/// The configuration every command connects with: a small pool, no listener.
fn config(target: &Target, migrations: MigrationMode) -> Result<PostgresConfig, CliError> {
    Ok(PostgresConfig::new(url(target)?)
        .with_schema(target.schema.clone())
        .with_max_connections(2)
        .with_connect_timeout(Duration::from_secs(10))
        .with_migrations(migrations)
        .with_poll_mode(PollMode::PollOnly))
}

/// A provider on a fully migrated schema (never migrates it).
async fn open(target: &Target) -> Result<Arc<PostgresProvider>, CliError> {
    let config = config(target, MigrationMode::VerifyOnly)?;
    Ok(Arc::new(PostgresProvider::connect(config).await?))
}

/// Runs `cli`'s command. Arguments are checked before anything connects.
pub async fn run(cli: Cli) -> CliResult {
    let t = &cli.target;
    let command = match cli.command {
        Command::Migrate { action: None } => return migrate::apply(t).await,
        Command::Migrate {
            action: Some(MigrateAction::Status),
        } => return migrate::status(t).await,
        other => other,
    };
    let purge_before = match &command {
        Command::Purge {
            completed_before, ..
        } => Some(crate::time::parse_moment(
            completed_before,
            crate::time::now_ms(),
        )?),
        _ => None,
    };
    let retention_policy = match &command {
        Command::Retention {
            action:
                RetentionAction::Run {
                    completed,
                    failed,
                    keep_executions,
                    batch_size,
                    ..
                },
        } => Some(retention::policy(
            completed.as_deref(),
            failed.as_deref(),
            *keep_executions,
            *batch_size,
        )?),
        _ => None,
    };
    if let Command::Ui {
        listen,
        read_only,
        refresh,
    } = command
    {
        return ui::serve(t, listen, read_only, refresh).await;
    }
    let p = open(t).await?;
    let json = t.json;
    match command {
        Command::Migrate { .. } | Command::Ui { .. } => unreachable!("handled above"),
        Command::Instances {
            action: InstancesAction::List { status, limit },
        } => inspect::list(&p, json, status, limit as usize).await,
        Command::Instance {
            action: InstanceAction::Show { id, execution },
        } => inspect::show(&p, json, &id, execution).await,
        Command::Instance {
            action: InstanceAction::Tree { id },
        } => inspect::tree(&p, json, &id).await,
        Command::Queues => inspect::queues(&p, json).await,
        Command::Metrics => inspect::metrics(&p, json).await,
        Command::Delete { id, force } => maintenance::delete(&p, json, &id, force).await,
        Command::Purge {
            limit,
            dry_run,
            batch_size,
            ..
        } => {
            let before = purge_before.expect("parsed above");
            maintenance::purge(&p, json, before, limit, batch_size, dry_run).await
        }
        Command::Retention {
            action: RetentionAction::Run { dry_run, .. },
        } => {
            let policy = retention_policy.expect("checked above");
            retention::run(&p, json, &policy, dry_run).await
        }
        Command::Retention {
            action: RetentionAction::Status,
        } => retention::status(&p, json).await,
        Command::Prune { id, keep_last } => maintenance::prune(&p, json, &id, keep_last).await,
        Command::RaiseEvent { id, name, data } => {
            control::raise_event(p, json, &id, &name, &data).await
        }
        Command::Cancel { id, reason } => control::cancel(p, json, &id, &reason).await,
    }
}
