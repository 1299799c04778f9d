//! The SQL text of every provider call: one `SELECT` of one stored function,
//! schema-qualified so the calling connection's `search_path` never matters.
//! Built once per provider; `sqlx` caches each text as a prepared statement per
//! connection, so after a connection's first use a call is one round trip.
//! Behind a transaction pooler the same call is written out with literal
//! arguments instead (`call.rs`).

use crate::call::Statement;
use crate::migrations::quote_ident;

macro_rules! statements {
    ($( $field:ident => $function:literal ( $arity:literal ) ),* $(,)?) => {
        /// Schema-qualified call text for each stored function.
        #[derive(Debug)]
        pub(crate) struct Statements {
            $( pub $field: Statement, )*
        }

        impl Statements {
            pub(crate) fn new(schema: &str) -> Self {
                let schema = quote_ident(schema);
                Self { $( $field: call(&schema, $function, $arity), )* }
            }

            /// Every (function, call text) pair, for checks against the database.
            #[cfg(test)]
            pub(crate) fn all(&self) -> Vec<(&'static str, &str)> {
                vec![$( ($function, self.$field.prepared.as_str()), )*]
            }
        }
    };
}

fn call(schema: &str, function: &str, arity: usize) -> Statement {
    let params: Vec<String> = (1..=arity).map(|i| format!("${i}")).collect();
    let function = format!("{schema}.{function}");
    Statement {
        prepared: format!("SELECT * FROM {function}({})", params.join(", ")),
        function,
    }
}

statements! {
    notify_channel => "notify_channel"(0),
    listener_heartbeat => "listener_heartbeat"(0),
    enqueue_orchestrator_item => "enqueue_orchestrator_item"(5),
    fetch_orchestration_item => "fetch_orchestration_item"(4),
    ack_orchestration_item => "ack_orchestration_item"(30),
    abandon_orchestration_item => "abandon_orchestration_item"(4),
    renew_orchestration_item_lock => "renew_orchestration_item_lock"(3),
    enqueue_worker_item => "enqueue_worker_item"(7),
    fetch_work_item => "fetch_work_item"(6),
    ack_work_item => "ack_work_item"(5),
    ack_work_item_and_fetch => "ack_work_item_and_fetch"(10),
    ack_work_items_and_fetch => "ack_work_items_and_fetch"(10),
    renew_work_item_lock => "renew_work_item_lock"(3),
    abandon_work_item => "abandon_work_item"(4),
    renew_session_lock => "renew_session_lock"(4),
    cleanup_orphaned_sessions => "cleanup_orphaned_sessions"(1),
    read_history => "read_history"(2),
    append_history => "append_history"(4),
    get_custom_status => "get_custom_status"(2),
    get_kv_values => "get_kv_values"(2),
    get_instance_stats => "get_instance_stats"(1),
    list_instances => "list_instances"(1),
    list_executions => "list_executions"(1),
    latest_execution_id => "latest_execution_id"(1),
    get_instance_info => "get_instance_info"(1),
    get_execution_info => "get_execution_info"(2),
    get_system_metrics => "get_system_metrics"(0),
    get_queue_depths => "get_queue_depths"(1),
    list_children => "list_children"(1),
    get_parent_id => "get_parent_id"(1),
    get_instance_tree => "get_instance_tree"(1),
    delete_instances_atomic => "delete_instances_atomic"(2),
    delete_instance => "delete_instance"(2),
    delete_instance_bulk => "delete_instance_bulk"(3),
    prune_executions => "prune_executions"(3),
    prune_executions_bulk => "prune_executions_bulk"(5),
    queue_overview => "queue_overview"(1),
    bulk_delete_roots => "bulk_delete_roots"(3),
    retention_acquire => "retention_acquire"(4),
    retention_finish => "retention_finish"(8),
    retention_candidates => "retention_candidates"(6),
    retention_delete => "retention_delete"(8),
    retention_prune_candidates => "retention_prune_candidates"(3),
    retention_prune => "retention_prune"(6),
    retention_status => "retention_status"(1),
    queue_tables_to_vacuum => "queue_tables_to_vacuum"(1),
    dashboard_instances => "dashboard_instances"(11),
    dashboard_count => "dashboard_count"(9),
    dashboard_status_counts => "dashboard_status_counts"(0),
    dashboard_activity => "dashboard_activity"(2),
    dashboard_history => "dashboard_history"(4),
    dashboard_tree => "dashboard_tree"(2),
    dashboard_executions => "dashboard_executions"(2),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call text prepares against a migrated schema: the function exists
    /// with exactly that many parameters (a wrong arity fails here, not in use).
    #[tokio::test]
    async fn every_statement_matches_its_function() {
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let schema = format!("dxtest_stmt_check_{}", std::process::id());
        let provider = crate::PostgresProvider::new_with_schema(&url, Some(&schema))
            .await
            .expect("provider");
        for (function, sql) in Statements::new(&schema).all() {
            if let Err(e) = sqlx::Executor::prepare(provider.pool(), sql).await {
                panic!("{function}: {sql}: {e}");
            }
        }
        let bundled = crate::migrations::owned_functions();
        for (function, _) in Statements::new(&schema).all() {
            assert!(
                bundled.contains(&function),
                "{function} is not created by any migration"
            );
        }
        provider.cleanup_schema().await.expect("cleanup");
    }

    #[test]
    fn calls_are_schema_qualified() {
        let s = Statements::new("tenant_a");
        assert_eq!(
            s.get_system_metrics.prepared,
            "SELECT * FROM \"tenant_a\".get_system_metrics()"
        );
        assert_eq!(
            s.read_history.prepared,
            "SELECT * FROM \"tenant_a\".read_history($1, $2)"
        );
        assert_eq!(s.read_history.function, "\"tenant_a\".read_history");
    }
}
