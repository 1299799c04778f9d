//! `ui`: serves the operator dashboard (duroxide-pg-ui) until Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use duroxide_pg::{MigrationMode, PostgresProvider};
use duroxide_pg_ui::{Auth, DashboardOptions};

use super::{CliError, CliResult, config};
use crate::args::{Target, UiArgs};

/// Every call the dashboard's provider makes is cut off after this.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `ui --listen ADDR [--read-only] [--refresh SECS]`. The address and the
/// credentials are checked, and the port bound, before anything connects.
pub async fn run(args: UiArgs, target: &Target) -> CliResult {
    let UiArgs {
        listen,
        read_only,
        refresh,
    } = args;
    let auth = Auth::from_env().map_err(|e| CliError(e.to_string()))?;
    let options = DashboardOptions::default()
        .read_only(read_only)
        .with_auth(auth)
        .with_refresh(Duration::from_secs(refresh));
    let listener = duroxide_pg_ui::bind(listen, &options)
        .await
        .map_err(|e| CliError(format!("cannot serve on {listen}: {e}")))?;
    let config = config(target, MigrationMode::VerifyOnly)?
        .with_max_connections(4)
        .with_statement_timeout(Some(STATEMENT_TIMEOUT))
        .with_application_name("duroxide-pg-ui");
    let provider = Arc::new(PostgresProvider::connect(config).await?);
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    println!(
        "dashboard for schema {:?} on http://{addr}/{} (Ctrl-C to stop)",
        target.schema,
        if read_only { " (read-only)" } else { "" }
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let served = duroxide_pg_ui::serve_on(listener, provider.clone(), options, shutdown).await;
    provider.close().await;
    served.map_err(|e| CliError(e.to_string()))
}
