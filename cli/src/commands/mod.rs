//! Runs one parsed command. Each command has its module here, whose
//! `run(args, target)` checks the arguments, opens the store, calls the
//! provider and prints; [`run`] dispatches to it.
//!
//! Each command is built on duroxide-pg's public API (the `Provider` and
//! `ProviderAdmin` traits, `duroxide::Client`, and the provider's own operator
//! methods); nothing here writes SQL.

mod cancel;
mod delete;
mod instance;
mod instances;
mod metrics;
mod migrate;
mod prune;
mod purge;
mod queues;
mod raise_event;
mod retention;
mod ui;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::{ProviderAdmin, ProviderError};
use duroxide_pg::{Error, MigrationMode, PollMode, PostgresConfig, PostgresProvider};

use crate::args::{Cli, Command, Target};

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

/// Whether the provider reported a missing instance.
fn is_not_found(e: &ProviderError) -> bool {
    duroxide_pg::ProviderSqlState::of_error(e)
        == Some(duroxide_pg::ProviderSqlState::InstanceNotFound)
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

/// Refuses instances that do not exist or no longer run: a message sent to
/// them (`raise-event`, `cancel`) would be dropped silently by the runtime.
async fn require_running(p: &PostgresProvider, id: &str, what: &str) -> CliResult {
    let info = p
        .get_instance_info(id)
        .await
        .map_err(|e| instance_error(id, e))?;
    if info.status != "Running" {
        return Err(CliError(format!(
            "instance {id:?} is {}, not Running: {what} would be ignored",
            info.status
        )));
    }
    Ok(())
}

/// Runs `cli`'s command. Each command checks its arguments before it
/// connects.
pub async fn run(cli: Cli) -> CliResult {
    let t = &cli.target;
    match cli.command {
        Command::Migrate(args) => migrate::run(args, t).await,
        Command::Instances(args) => instances::run(args, t).await,
        Command::Instance(args) => instance::run(args, t).await,
        Command::Queues => queues::run(t).await,
        Command::Metrics => metrics::run(t).await,
        Command::Delete(args) => delete::run(args, t).await,
        Command::Purge(args) => purge::run(args, t).await,
        Command::Prune(args) => prune::run(args, t).await,
        Command::Retention(args) => retention::run(args, t).await,
        Command::RaiseEvent(args) => raise_event::run(args, t).await,
        Command::Ui(args) => ui::run(args, t).await,
        Command::Cancel(args) => cancel::run(args, t).await,
    }
}
