//! The command line: every command, argument and flag, with the help text
//! `--help` prints.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// See and fix what a duroxide-pg store holds, without writing SQL.
///
/// Every command works on one schema of one database. Commands other than
/// `migrate` refuse a schema whose migrations are not all applied.
#[derive(Debug, Parser)]
#[command(name = "duroxide-pg", version)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// Which store to work on.
#[derive(Debug, Args)]
pub struct Target {
    /// PostgreSQL URL (postgres://user:password@host:port/db); the password is never printed.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Schema holding the store.
    #[arg(long, default_value = "public", global = true)]
    pub schema: String,
    /// Print JSON instead of tables (read commands and command results).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands, each with its arguments.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (or, with `status`, compare applied and bundled ones).
    Migrate(MigrateArgs),
    /// Instance listings.
    Instances(InstancesArgs),
    /// One instance: its details or its tree of sub-orchestrations.
    Instance(InstanceArgs),
    /// Queue depths: ready, delayed and locked messages, age of the oldest ready one.
    Queues,
    /// Instance, execution and event totals.
    Metrics,
    /// Delete a root instance with its whole tree of sub-orchestrations.
    Delete(DeleteArgs),
    /// Delete terminal root instances (with their trees) completed before a moment.
    Purge(PurgeArgs),
    /// Delete old executions (ContinueAsNew generations) of one instance.
    Prune(PruneArgs),
    /// Delete finished work by policy (for cron), or show the retention state.
    Retention(RetentionArgs),
    /// Send an external event to a running instance.
    RaiseEvent(RaiseEventArgs),
    /// Serve the operator dashboard in a browser (until Ctrl-C).
    ///
    /// Listens on loopback by default. Any other address needs credentials,
    /// read from the environment (never from an argument):
    /// DUROXIDE_PG_UI_TOKEN or DUROXIDE_PG_UI_TOKEN_FILE (a bearer token; a
    /// browser gives it as the basic-auth password), or
    /// DUROXIDE_PG_UI_BASIC_AUTH or DUROXIDE_PG_UI_BASIC_AUTH_FILE
    /// (user:password).
    Ui(UiArgs),
    /// Ask a running instance (and its sub-orchestrations) to cancel.
    Cancel(CancelArgs),
}

// A command's help is its variant's doc comment above (it takes precedence
// over the argument struct's own doc comment, written for readers here).

/// Arguments of `migrate [status]`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: Option<MigrateAction>,
}

/// `migrate` sub-actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Applied versus bundled migrations: applied, pending, unknown (newer than this build).
    Status,
}

/// Arguments of `instances ACTION`.
#[derive(Debug, Args)]
pub struct InstancesArgs {
    #[command(subcommand)]
    pub action: InstancesAction,
}

/// `instances` sub-actions.
#[derive(Debug, Subcommand)]
pub enum InstancesAction {
    /// List instances, newest first.
    List(ListArgs),
}

/// Arguments of `instances list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only instances with this status.
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// At most this many instances.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
}

/// Arguments of `instance ACTION`.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    #[command(subcommand)]
    pub action: InstanceAction,
}

/// `instance` sub-actions.
#[derive(Debug, Subcommand)]
pub enum InstanceAction {
    /// Info, executions, custom status, key/values and history of one instance.
    Show(ShowArgs),
    /// The instance and its sub-orchestrations, as a tree.
    Tree(TreeArgs),
}

/// Arguments of `instance show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Instance id.
    pub id: String,
    /// Show the history of this execution instead of the current one.
    #[arg(long, value_name = "N")]
    pub execution: Option<u64>,
    /// List the newest N executions (1 to 500).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(duroxide_pg::dashboard::MAX_PAGE_SIZE)))]
    pub executions: u32,
}

/// Arguments of `instance tree`.
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Instance id.
    pub id: String,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Instance id (a root; delete a sub-orchestration through its root).
    pub id: String,
    /// Delete even if the instance is still running.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// A UTC date or time (2026-01-31, 2026-01-31T12:00:00Z) or an age (30d, 12h, 15m).
    #[arg(long, value_name = "WHEN")]
    pub completed_before: String,
    /// Delete at most this many root instances.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Root instances deleted per statement (each batch commits on its own).
    #[arg(long, value_name = "N", default_value_t = 500, hide = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Instance id.
    pub id: String,
    /// How many of the newest executions to keep (the current one is always kept).
    #[arg(long, value_name = "N")]
    pub keep_last: u32,
}

/// Arguments of `retention ACTION`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub action: RetentionAction,
}

/// `retention` sub-actions.
#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// One sweep: delete finished trees past their window and prune old
    /// executions of continue-as-new chains, in batches (each commits on its
    /// own). Trees with a running member are never touched. Does nothing
    /// while another sweeper (a provider's background one) holds the lease.
    Run(RetentionRunArgs),
    /// The policy a background sweeper stored, the sweep running now, the
    /// last sweep and the oldest finished root instance per status.
    Status,
}

/// Arguments of `retention run`.
#[derive(Debug, Args)]
pub struct RetentionRunArgs {
    /// Delete trees whose root completed longer ago than this (30d, 12h, 15m, 45s).
    #[arg(long, value_name = "AGE")]
    pub completed: Option<String>,
    /// Delete trees whose root failed or was cancelled longer ago than this.
    #[arg(long, value_name = "AGE")]
    pub failed: Option<String>,
    /// Keep this many of the newest executions of every continue-as-new chain.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_executions: Option<u32>,
    /// Root instances (or chains) per batch.
    #[arg(long, value_name = "N", default_value_t = duroxide_pg::RetentionPolicy::DEFAULT_BATCH_SIZE)]
    pub batch_size: u32,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `raise-event`.
#[derive(Debug, Args)]
pub struct RaiseEventArgs {
    /// Instance id.
    pub id: String,
    /// Event name the orchestration waits for.
    pub name: String,
    /// Event payload, passed to the orchestration as is.
    pub data: String,
}

/// Arguments of `ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Show everything, allow no action (cancel, raise, delete, purge).
    #[arg(long)]
    pub read_only: bool,
    /// Seconds between refreshes of an open overview.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh: u64,
}

/// Arguments of `cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Instance id.
    pub id: String,
    /// Reason recorded in the history.
    #[arg(default_value = "cancelled by operator")]
    pub reason: String,
}

/// Instance statuses as duroxide records them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Running,
    Completed,
    Failed,
    #[value(name = "continued-as-new")]
    ContinuedAsNew,
}

impl Status {
    /// The status string the store holds.
    pub fn as_stored(self) -> &'static str {
        match self {
            Status::Running => "Running",
            Status::Completed => "Completed",
            Status::Failed => "Failed",
            Status::ContinuedAsNew => "ContinuedAsNew",
        }
    }
}
