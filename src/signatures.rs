//! The Rust side of the stored functions' signatures, by name: the argument
//! structs of the wide calls and the result row of every function that
//! returns more than one column.
//!
//! Why: the seam between Rust and SQL is positional on the wire (`$1, $2, …`
//! or literals in order). A struct whose fields are named after the
//! function's parameters (without `p_`) binds them in declaration order, and
//! a row struct reads each column by its name (without `o_`), so a reader
//! sees which value goes where, and the tests at the end of this file check
//! both against `schema/functions/*.sql`: an argument struct must list
//! exactly the function's parameters in order (or, declared with `leads`,
//! exactly its leading ones); a row struct may read fewer
//! columns than a function returns, but only columns it has, of every
//! function it serves.
//!
//! Calls with six arguments or fewer bind in place (`Call::bind`), where the
//! order is visible on the screen; a single-column result is read with
//! `Call::scalar`/`Call::scalars`.

use sqlx::postgres::PgRow;

use crate::call::Call;
use crate::codec::Texts;

/// Declares argument structs: each field one parameter, in the function's
/// order. `Name for ["f"]` lists all of `f`'s parameters; `Name leads ["f",
/// "g"]` the leading ones that several functions share (the call binds the
/// few that follow in place). `bind_to` binds every field, in declaration
/// order, to a call.
macro_rules! arguments {
    ($(
        $(#[$meta:meta])*
        $name:ident<$lt:lifetime> $kind:ident [$($function:literal),+] {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            pub(crate) struct $name<$lt> {
                $( $(#[$field_meta])* pub $field: $ty, )*
            }

            impl<$lt> $name<$lt> {
                /// Binds every field, in the function's parameter order.
                pub(crate) fn bind_to<'s>(self, call: Call<'s>) -> Call<'s> {
                    call $( .bind(self.$field) )*
                }
            }
        )*

        /// (`for` or `leads`, functions, parameter names without `p_`) of
        /// every argument struct.
        #[cfg(test)]
        const ARGUMENTS: &[(&str, &[&str], &[&str])] = &[
            $( (stringify!($kind), &[$($function),+], &[ $( stringify!($field) ),* ]), )*
        ];
    };
}

/// Declares result rows: each field one column (named without `o_`) of every
/// function listed, read by name.
macro_rules! rows {
    ($(
        $(#[$meta:meta])*
        $name:ident for [$($function:literal),+] {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug)]
            pub(crate) struct $name {
                $( $(#[$field_meta])* pub $field: $ty, )*
            }

            impl sqlx::FromRow<'_, PgRow> for $name {
                fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
                    use sqlx::Row;
                    Ok(Self {
                        $( $field: row.try_get(concat!("o_", stringify!($field)))?, )*
                    })
                }
            }
        )*

        /// (functions, column names without `o_`) of every row struct.
        #[cfg(test)]
        const ROWS: &[(&[&str], &[&str])] = &[
            $( (&[$($function),+], &[ $( stringify!($field) ),* ]), )*
        ];
    };
}

arguments! {
    /// `ack_orchestration_item`: one orchestration turn's whole outcome.
    /// The `w_`/`o_`/`kv_`/`c_` arrays are columns of one list each (worker
    /// items, orchestrator items, KV operations, cancelled activities),
    /// element `i` of each describing member `i`.
    AckOrchestrationItem<'a> for ["ack_orchestration_item"] {
        lock_token: &'a str,
        now_ms: i64,
        execution_id: i64,
        event_ids: Vec<i64>,
        event_data: Vec<String>,
        w_work_items: Vec<&'a str>,
        w_instance_ids: Vec<&'a str>,
        w_execution_ids: Vec<i64>,
        w_activity_ids: Vec<i64>,
        w_session_ids: Vec<Option<&'a str>>,
        w_tags: Vec<Option<&'a str>>,
        o_instance_ids: Vec<&'a str>,
        o_kinds: Vec<&'a str>,
        o_work_items: Vec<&'a str>,
        o_visible_at: Vec<i64>,
        status: Option<&'a str>,
        output: Option<std::borrow::Cow<'a, str>>,
        orch_name: Option<&'a str>,
        orch_version: Option<&'a str>,
        parent_instance: Option<&'a str>,
        /// `[major, minor, patch]`.
        pinned_version: Option<Vec<i64>>,
        custom_status_action: i16,
        custom_status: Option<String>,
        kv_ops: Vec<i16>,
        kv_keys: Vec<Option<String>>,
        kv_values: Vec<Option<String>>,
        kv_updated_at: Vec<Option<i64>>,
        c_instance_ids: Vec<&'a str>,
        c_execution_ids: Vec<i64>,
        c_activity_ids: Vec<i64>,
    }

    /// `enqueue_worker_item`: one activity and its routing columns.
    EnqueueWorkerItem<'a> for ["enqueue_worker_item"] {
        work_item: &'a str,
        now_ms: i64,
        instance_id: &'a str,
        execution_id: i64,
        activity_id: i64,
        session_id: Option<&'a str>,
        tag: Option<&'a str>,
    }

    /// `ack_work_item_and_fetch`: the ack, then the slot's next fetch.
    AckWorkItemAndFetch<'a> for ["ack_work_item_and_fetch"] {
        lock_token: &'a str,
        now_ms: i64,
        completion_instance: Option<&'a str>,
        completion_kind: Option<&'a str>,
        completion: Option<&'a str>,
        lock_timeout_ms: i64,
        owner_id: Option<&'a str>,
        session_lock_ms: i64,
        tag_mode: i16,
        tags: &'a [String],
    }

    /// The instance filter that `dashboard_instances` (then the keyset
    /// cursor and the page size) and `dashboard_count` (then the cap) begin with.
    DashboardFilter<'a> leads ["dashboard_instances", "dashboard_count"] {
        status: Option<&'a str>,
        name: Option<&'a str>,
        id_prefix: Option<&'a str>,
        created_from: Option<i64>,
        created_to: Option<i64>,
        completed_from: Option<i64>,
        completed_to: Option<i64>,
        finished_roots_only: bool,
    }

    /// `retention_finish`: the sweep's totals, recorded by its lease holder.
    RetentionFinish<'a> for ["retention_finish"] {
        owner: &'a str,
        now_ms: i64,
        started_at: i64,
        policy: String,
        instances: i64,
        executions: i64,
        events: i64,
        error: Option<&'a str>,
    }

    /// `retention_delete`: one batch of finished roots, after the cursor.
    RetentionDelete<'a> for ["retention_delete"] {
        owner: &'a str,
        now_ms: i64,
        lease_ms: i64,
        status: &'a str,
        before: i64,
        after_at: Option<i64>,
        after_id: Option<String>,
        limit: i32,
    }
}

rows! {
    /// What a fetch of an orchestration turn found: an instance it leased
    /// (read on as [`LeasedTurn`]), or none and the next wake time.
    TurnFound for ["fetch_orchestration_item", "lease_instance"] {
        instance_id: Option<String>,
        wake_at: Option<i64>,
        taken_over: Option<bool>,
    }

    /// A leased orchestration turn (the row of a [`TurnFound`] with an instance).
    LeasedTurn for ["fetch_orchestration_item", "lease_instance"] {
        instance_id: String,
        lock_token: String,
        orchestration_name: Option<String>,
        orchestration_version: Option<String>,
        execution_id: i64,
        attempt_count: i32,
        messages: Texts,
        history: Texts,
        kv_keys: Texts,
        kv_values: Texts,
        kv_updated_at: Vec<i64>,
    }

    /// What a worker fetch found: an activity it leased (read on as
    /// [`LeasedActivity`]) when `work_item` is not NULL.
    ActivityFound for ["fetch_work_item", "ack_work_item_and_fetch"] {
        work_item: Option<String>,
        taken_over: Option<bool>,
    }

    /// A leased activity (the row of an [`ActivityFound`] with an item).
    LeasedActivity for ["fetch_work_item", "ack_work_item_and_fetch"] {
        work_item: String,
        lock_token: String,
        attempt_count: i32,
    }

    /// What one member's fetch leased in `ack_work_items_and_fetch`.
    MemberLeased for ["ack_work_items_and_fetch"] {
        member: i32,
        acked: bool,
        work_item: Option<String>,
        lock_token: Option<String>,
        attempt_count: Option<i32>,
        taken_over: Option<bool>,
    }

    /// When the next activity becomes eligible, if one is known.
    ActivityWakeAt for ["fetch_work_item"] {
        wake_at: Option<i64>,
    }

    /// The four counters every delete function returns.
    DeleteCounts for ["delete_instance", "delete_instance_bulk", "delete_instances_atomic"] {
        instances_deleted: i64,
        executions_deleted: i64,
        events_deleted: i64,
        queue_messages_deleted: i64,
    }

    /// The three counters every prune function returns.
    PruneCounts for ["prune_executions", "prune_executions_bulk"] {
        instances_processed: i64,
        executions_deleted: i64,
        events_deleted: i64,
    }

    /// An instance's custom status and its version.
    CustomStatus for ["get_custom_status"] {
        custom_status: Option<String>,
        version: i64,
    }

    /// One key of the merged KV view.
    KvValue for ["get_kv_values"] {
        key: String,
        value: String,
    }

    /// One instance's counters.
    InstanceStats for ["get_instance_stats"] {
        history_event_count: i64,
        history_size_bytes: i64,
        queue_pending_count: i64,
        kv_user_key_count: i64,
        kv_total_value_bytes: i64,
    }

    /// An instance as `get_instance_info` describes it.
    InstanceInfo for ["get_instance_info"] {
        instance_id: String,
        orchestration_name: String,
        orchestration_version: String,
        current_execution_id: i64,
        status: String,
        output: Option<String>,
        created_at: i64,
        updated_at: i64,
        parent_instance_id: Option<String>,
    }

    /// An execution as `get_execution_info` describes it.
    ExecutionInfo for ["get_execution_info", "dashboard_executions"] {
        execution_id: i64,
        status: String,
        output: Option<String>,
        started_at: i64,
        completed_at: Option<i64>,
        event_count: i64,
    }

    /// Whole-store counters.
    SystemMetrics for ["get_system_metrics"] {
        total_instances: i64,
        total_executions: i64,
        running_instances: i64,
        completed_instances: i64,
        failed_instances: i64,
        total_events: i64,
    }

    /// Visible messages per queue.
    QueueDepths for ["get_queue_depths"] {
        orchestrator_queue: i64,
        worker_queue: i64,
    }

    /// One queue as an operator sees it.
    QueueOverview for ["queue_overview"] {
        queue: String,
        ready: i64,
        delayed: i64,
        locked: i64,
        oldest_ready_ms: Option<i64>,
    }

    /// One instance of the dashboard's list.
    DashboardInstance for ["dashboard_instances"] {
        instance_id: String,
        orchestration_name: String,
        orchestration_version: Option<String>,
        status: String,
        execution_id: i64,
        created_at: i64,
        updated_at: i64,
        completed_at: Option<i64>,
        parent_instance_id: Option<String>,
    }

    /// Instances per status.
    StatusCount for ["dashboard_status_counts"] {
        status: String,
        count: i64,
    }

    /// Completions and failures in one time bucket.
    ActivityBucket for ["dashboard_activity"] {
        bucket_ms: i64,
        completed: i64,
        failed: i64,
    }

    /// One member of an instance tree.
    TreeMember for ["dashboard_tree"] {
        instance_id: String,
        parent_instance_id: Option<String>,
        depth: i32,
        orchestration_name: String,
        status: String,
    }

    /// How many executions the instance has in all (beside each
    /// [`ExecutionInfo`] of `dashboard_executions`).
    ExecutionCount for ["dashboard_executions"] {
        execution_count: i64,
    }

    /// A root retention would delete (dry run).
    RetentionCandidate for ["retention_candidates"] {
        root_id: String,
        completed_at: i64,
        eligible: bool,
        tree_ids: Option<Texts>,
        executions: Option<i64>,
        events: Option<i64>,
    }

    /// What one retention delete batch did, and where the next starts.
    RetentionDeleted for ["retention_delete"] {
        roots_scanned: Option<i64>,
        instances_deleted: Option<i64>,
        executions_deleted: Option<i64>,
        events_deleted: Option<i64>,
        last_at: Option<i64>,
        last_id: Option<String>,
    }

    /// An instance whose old executions retention would prune (dry run).
    RetentionPruneCandidate for ["retention_prune_candidates"] {
        instance_id: String,
        executions: Option<i64>,
        events: Option<i64>,
    }

    /// What one retention prune batch did, and where the next starts.
    RetentionPruned for ["retention_prune"] {
        scanned: Option<i64>,
        executions_deleted: Option<i64>,
        events_deleted: Option<i64>,
        last_id: Option<String>,
    }

    /// The retention state: policy, lease, last sweep, oldest finished roots.
    RetentionState for ["retention_status"] {
        policy: Option<String>,
        policy_by: Option<String>,
        policy_at: Option<i64>,
        owner: Option<String>,
        lease_until: Option<i64>,
        last_by: Option<String>,
        last_policy: Option<String>,
        last_started_at: Option<i64>,
        last_finished_at: Option<i64>,
        last_instances: Option<i64>,
        last_executions: Option<i64>,
        last_events: Option<i64>,
        last_error: Option<String>,
        oldest_completed_id: Option<String>,
        oldest_completed_at: Option<i64>,
        oldest_failed_id: Option<String>,
        oldest_failed_at: Option<i64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function's parameters and result columns, prefixes removed, as
    /// `schema/functions/<function>.sql` declares them.
    fn declared(function: &str) -> (Vec<String>, Vec<String>) {
        let path = format!(
            "{}/schema/functions/{function}.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let header = format!("CREATE OR REPLACE FUNCTION {function}(");
        let params = text
            .lines()
            .find_map(|l| l.strip_prefix(&header))
            .unwrap_or_else(|| panic!("{path}: no `{header}` line"));
        let returns = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("RETURNS "))
            .unwrap_or_else(|| panic!("{path}: no RETURNS line"));
        let names = |list: &str, prefix: &str| -> Vec<String> {
            list.split(", ")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let name = p.split(' ').next().unwrap_or_default();
                    name.strip_prefix(prefix)
                        .unwrap_or_else(|| panic!("{path}: `{name}` lacks `{prefix}`"))
                        .to_string()
                })
                .collect()
        };
        let params = names(params.strip_suffix(')').unwrap_or(params), "p_");
        let columns = match returns
            .strip_prefix("TABLE(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Some(list) => names(list, "o_"),
            None => Vec::new(),
        };
        (params, columns)
    }

    #[test]
    fn argument_structs_list_each_parameter_in_order() {
        assert!(!ARGUMENTS.is_empty());
        for (kind, functions, fields) in ARGUMENTS {
            for function in *functions {
                let (mut params, _) = declared(function);
                match *kind {
                    "for" => {}
                    "leads" => params.truncate(fields.len()),
                    other => panic!("{other}: an argument struct is `for` or `leads`"),
                }
                assert_eq!(
                    fields.to_vec(),
                    params,
                    "the argument struct of {function} does not match its signature"
                );
            }
        }
    }

    #[test]
    fn row_structs_read_only_columns_their_functions_return() {
        assert!(!ROWS.is_empty());
        for (functions, fields) in ROWS {
            for function in *functions {
                let (_, columns) = declared(function);
                for field in *fields {
                    assert!(
                        columns.iter().any(|c| c == field),
                        "{function} returns no column o_{field} (it returns {columns:?})"
                    );
                }
            }
        }
    }

    /// The check itself fails on a mismatch, so it cannot pass vacuously.
    #[test]
    fn the_signature_reader_sees_names_and_order() {
        let (params, columns) = declared("get_custom_status");
        assert_eq!(params, ["instance_id", "last_seen_version"]);
        assert_eq!(columns, ["custom_status", "version"]);
        let (params, columns) = declared("listener_heartbeat");
        assert!(params.is_empty() && columns.is_empty());
    }
}
