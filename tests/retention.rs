//! Retention sweeps on a real PostgreSQL server: exactly the eligible trees
//! go (not running roots, not trees with a running child, not those younger
//! than their window, not the newest executions of a chain), a dry run lists
//! exactly what the sweep then deletes, two sweepers on one schema never
//! sweep at once, and a batch that hits its statement timeout is retried
//! smaller and the sweep carries on.

use common::{age_completions as age, instance_after_first_turn as instance};
use duroxide_pg_testkit::harness as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use duroxide::providers::ProviderAdmin;
use duroxide_pg::{PostgresProvider, RetentionPolicy};
use sqlx::{Connection, Executor};

const DAY: Duration = Duration::from_secs(86_400);

/// A continue-as-new chain of `executions` executions, the last one Running
/// (or finished with `last_status`), all earlier ones ContinuedAsNew. Rows
/// straight into the tables, with one history event per execution.
async fn chain(p: &PostgresProvider, id: &str, executions: i64, last_status: &str) {
    let s = format!("\"{}\"", p.schema_name());
    let sql = format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, orchestration_version,
                                    current_execution_id, created_at, updated_at)
         VALUES ($1, 'Chain', '1.0.0', $2, 0, 0);
         INSERT INTO {s}.executions (instance_id, execution_id, status, started_at, completed_at)
         SELECT $1, g, CASE WHEN g < $2 THEN 'ContinuedAsNew' ELSE $3 END, 0,
                CASE WHEN g < $2 OR $3 <> 'Running'
                     THEN (extract(epoch FROM now()) * 1000)::bigint END
           FROM generate_series(1, $2) g;
         INSERT INTO {s}.history (instance_id, execution_id, event_id, event_data)
         SELECT $1, g, 1, '{{}}' FROM generate_series(1, $2) g"
    );
    let mut tx = p.pool().begin().await.unwrap();
    for statement in sql.split(';') {
        sqlx::query(statement)
            .bind(id)
            .bind(executions)
            .bind(last_status)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    tx.commit().await.unwrap();
}

async fn all_instances(p: &PostgresProvider) -> BTreeSet<String> {
    p.list_instances().await.unwrap().into_iter().collect()
}

async fn count(p: &PostgresProvider, table: &str) -> u64 {
    let sql = format!("SELECT count(*) FROM \"{}\".{table}", p.schema_name());
    let n: i64 = sqlx::query_scalar(&sql).fetch_one(p.pool()).await.unwrap();
    n as u64
}

fn policy() -> RetentionPolicy {
    RetentionPolicy::new()
        .keep_completed_for(7 * DAY)
        .keep_failed_for(30 * DAY)
        .keep_executions(2)
        .with_batch_size(RetentionPolicy::MIN_BATCH_SIZE)
        .with_batch_pause(Duration::ZERO)
}

#[tokio::test]
async fn a_sweep_deletes_exactly_the_eligible_trees_and_its_dry_run_lists_them() {
    let p = common::fresh_provider("retention").await;

    // Eligible: old completed roots, an old tree whose members all finished,
    // an old failed root, a finished chain (as a whole).
    let old_done: Vec<String> = (0..25).map(|i| format!("old-done-{i:02}")).collect();
    for id in &old_done {
        instance(&p, id, None, Some("Completed")).await;
    }
    instance(&p, "tree", None, Some("Completed")).await;
    instance(&p, "tree-child-a", Some("tree"), Some("Completed")).await;
    instance(&p, "tree-child-b", Some("tree"), Some("Failed")).await;
    instance(
        &p,
        "tree-grandchild",
        Some("tree-child-a"),
        Some("Completed"),
    )
    .await;
    instance(&p, "old-failed", None, Some("Failed")).await;
    chain(&p, "chain-done", 4, "Completed").await;
    // Not eligible: running roots, a finished root with a running child or
    // grandchild, roots younger than their window, a sub-orchestration whose
    // root is running, a chain still running (only pruned), a chain waiting
    // for its next execution (current ContinuedAsNew).
    instance(&p, "running", None, None).await;
    instance(&p, "done-running-child", None, Some("Completed")).await;
    instance(&p, "running-child", Some("done-running-child"), None).await;
    instance(&p, "done-deep", None, Some("Completed")).await;
    instance(&p, "done-deep-child", Some("done-deep"), Some("Completed")).await;
    instance(&p, "running-grandchild", Some("done-deep-child"), None).await;
    instance(&p, "young-done", None, Some("Completed")).await;
    instance(&p, "failed-within-window", None, Some("Failed")).await;
    instance(&p, "running-parent", None, None).await;
    instance(&p, "old-child", Some("running-parent"), Some("Completed")).await;
    chain(&p, "chain-running", 5, "Running").await;
    chain(&p, "chain-continuing", 3, "ContinuedAsNew").await;

    let old: Vec<&str> = old_done
        .iter()
        .map(String::as_str)
        .chain([
            "tree",
            "tree-child-a",
            "tree-child-b",
            "tree-grandchild",
            "done-running-child",
            "done-deep",
            "done-deep-child",
            "old-child",
            "chain-done",
            "chain-continuing",
        ])
        .collect();
    age(&p, &old, 8 * DAY).await;
    age(&p, &["old-failed"], 31 * DAY).await;
    age(&p, &["failed-within-window", "young-done"], 6 * DAY).await;

    let mut expected: BTreeSet<String> = old_done.iter().cloned().collect();
    for id in [
        "tree",
        "tree-child-a",
        "tree-child-b",
        "tree-grandchild",
        "old-failed",
        "chain-done",
    ] {
        expected.insert(id.to_owned());
    }
    let before = all_instances(&p).await;
    let (executions_before, events_before) =
        (count(&p, "executions").await, count(&p, "history").await);

    // The dry run: batches of 10, so the scan goes over several batches.
    let dry = p.run_retention(&policy(), None, true).await.unwrap();
    assert!(dry.dry_run && dry.ran);
    let listed: BTreeSet<String> = dry.instance_ids.iter().cloned().collect();
    assert_eq!(listed.len(), dry.instance_ids.len(), "listed once each");
    assert_eq!(listed, expected);
    assert_eq!(dry.instances, expected.len() as u64);
    assert_eq!(
        dry.pruned,
        [
            ("chain-continuing".to_string(), 1),
            ("chain-running".to_string(), 3)
        ]
    );
    assert!(dry.batches > 3, "{dry:?}");
    assert_eq!(all_instances(&p).await, before, "a dry run deletes nothing");
    assert!(
        p.retention_status().await.unwrap().last.is_none(),
        "nor records a sweep"
    );

    let real = p
        .run_retention(&policy(), Some("test-sweep"), false)
        .await
        .unwrap();
    assert!(real.ran && !real.dry_run);
    let after = all_instances(&p).await;
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(
        deleted, expected,
        "the sweep deleted what the dry run listed"
    );
    assert_eq!(real.instances, dry.instances);
    assert_eq!(real.executions, dry.executions);
    assert_eq!(real.events, dry.events);
    assert_eq!(real.pruned_executions, 4);
    assert_eq!(
        count(&p, "executions").await,
        executions_before - real.executions
    );
    assert_eq!(count(&p, "history").await, events_before - real.events);
    assert_eq!(p.list_executions("chain-running").await.unwrap(), [4, 5]);
    assert_eq!(p.list_executions("chain-continuing").await.unwrap(), [2, 3]);

    // Recorded, and a second sweep finds nothing more.
    let status = p.retention_status().await.unwrap();
    let last = status.last.expect("the sweep was recorded");
    assert_eq!(last.by, "test-sweep");
    assert_eq!(
        (last.instances, last.executions, last.events),
        (real.instances, real.executions, real.events)
    );
    assert_eq!(last.policy, Some(policy()));
    assert_eq!(
        status.policy, None,
        "only background sweepers store their policy"
    );
    assert_eq!(status.sweeping, None);
    assert_eq!(
        status.oldest_completed.map(|o| o.0).as_deref(),
        Some("done-running-child")
    );
    assert_eq!(
        status.oldest_failed.map(|o| o.0).as_deref(),
        Some("failed-within-window")
    );
    let again = p.run_retention(&policy(), None, false).await.unwrap();
    assert_eq!((again.instances, again.executions, again.events), (0, 0, 0));

    p.cleanup_schema().await.unwrap();
}

/// Regression: a retention batch is a literal call, so its rows come back in
/// text format, where sqlx 0.8.6 read a tree member spelled `NULL` as SQL
/// NULL and the dry run failed ("unexpected null"). Ids spelled like SQL
/// NULL or like array syntax are listed, then swept, like any other.
#[tokio::test]
async fn a_dry_run_lists_instance_ids_spelled_like_sql_null() {
    let p = common::fresh_provider("retention_null_ids").await;
    instance(&p, "NULL", None, Some("Completed")).await;
    instance(&p, "null", Some("NULL"), Some("Completed")).await;
    instance(&p, "\"NULL\"", Some("NULL"), Some("Failed")).await;
    instance(&p, "{NULL,\\}", Some("null"), Some("Completed")).await;
    instance(&p, "Null", None, Some("Failed")).await;
    let ids = ["NULL", "null", "\"NULL\"", "{NULL,\\}", "Null"];
    age(&p, &ids, 31 * DAY).await;
    let expected: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();

    let dry = p
        .run_retention(&policy(), None, true)
        .await
        .expect("a dry run over ids spelled like NULL");
    let listed: BTreeSet<String> = dry.instance_ids.iter().cloned().collect();
    assert_eq!(listed.len(), dry.instance_ids.len(), "listed once each");
    assert_eq!(listed, expected);
    assert_eq!(dry.instances, 5);

    let real = p.run_retention(&policy(), None, false).await.unwrap();
    assert_eq!(real.instances, 5);
    assert!(all_instances(&p).await.is_empty());

    p.cleanup_schema().await.unwrap();
}

/// A connection of its own holding `FOR UPDATE` on the instance row of
/// `id` until it rolls back (a sweep deleting that instance waits for it).
async fn hold_instance_row(p: &PostgresProvider, id: &str) -> sqlx::PgConnection {
    let mut holder = sqlx::PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM \"{}\".instances WHERE instance_id = $1 FOR UPDATE",
        p.schema_name()
    ))
    .bind(id)
    .fetch_one(&mut holder)
    .await
    .unwrap();
    holder
}

/// The sessions (pid, start of their statement) whose retention batch waits
/// for a lock.
async fn waiting_sweeps(p: &PostgresProvider) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT pid, query_start::text FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND query LIKE '%retention_delete%'",
    )
    .fetch_all(p.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn two_providers_on_one_schema_never_sweep_at_once() {
    let a = common::fresh_provider("retention_lease").await;
    let b = common::fresh_provider_configured("unused", |c| c.with_schema(a.schema_name())).await;
    for i in 0..3 {
        instance(&a, &format!("old-{i}"), None, Some("Completed")).await;
    }
    age(&a, &["old-0", "old-1", "old-2"], 8 * DAY).await;

    // A's sweep waits on a row another session holds...
    let mut holder = hold_instance_row(&a, "old-1").await;
    let policy = policy().with_statement_timeout(Duration::from_secs(60));
    let a = std::sync::Arc::new(a);
    let task = {
        let (a, policy) = (a.clone(), policy.clone());
        tokio::spawn(async move { a.run_retention(&policy, Some("sweeper-a"), false).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting_sweeps(&a).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "A's sweep never reached the held row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // ... so B, asking meanwhile, does nothing, at once, and says so.
    let asked = Instant::now();
    let b_report = b
        .run_retention(&policy, Some("sweeper-b"), false)
        .await
        .unwrap();
    assert!(!b_report.ran, "{b_report:?}");
    assert_eq!(b_report.instances, 0);
    assert!(asked.elapsed() < Duration::from_secs(10), "B waited for A");
    let status = b.retention_status().await.unwrap();
    assert_eq!(status.sweeping.map(|s| s.0).as_deref(), Some("sweeper-a"));
    assert_eq!(all_instances(&b).await.len(), 3, "B deleted nothing");

    holder.execute("ROLLBACK").await.unwrap();
    let a_report = task.await.unwrap().unwrap();
    assert!(a_report.ran);
    assert_eq!(a_report.instances, 3);
    // A released the lease: B may sweep now (nothing left to delete).
    let b_again = b
        .run_retention(&policy, Some("sweeper-b"), false)
        .await
        .unwrap();
    assert!(b_again.ran);
    assert_eq!(
        b.retention_status().await.unwrap().last.unwrap().by,
        "sweeper-b"
    );

    b.close().await;
    a.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn a_batch_that_hits_its_statement_timeout_shrinks_and_the_sweep_carries_on() {
    let p = common::fresh_provider("retention_timeout").await;
    let ids: Vec<String> = (0..60).map(|i| format!("old-{i:02}")).collect();
    for id in &ids {
        instance(&p, id, None, Some("Completed")).await;
    }
    // Distinct ages, so the scan order is the id order.
    for (i, id) in ids.iter().enumerate() {
        age(&p, &[id], 8 * DAY + Duration::from_secs(1000 - i as u64)).await;
    }

    // Batches of 40 with a 300 ms timeout; instance 25 is held by another
    // session, so the first batch (0-39) waits on it and times out.
    let mut holder = hold_instance_row(&p, "old-25").await;
    let policy = RetentionPolicy::new()
        .keep_completed_for(7 * DAY)
        .with_batch_size(40)
        .with_batch_pause(Duration::ZERO)
        .with_statement_timeout(Duration::from_millis(300));
    let p = std::sync::Arc::new(p);
    let task = {
        let (p, policy) = (p.clone(), policy.clone());
        tokio::spawn(async move { p.run_retention(&policy, None, false).await })
    };
    // The first wait ends when the server cancels it; then let go of the row.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(w) = waiting_sweeps(&p).await.pop() {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never reached the held row"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while waiting_sweeps(&p).await.contains(&first) {
        assert!(Instant::now() < deadline, "the batch was never cancelled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.execute("ROLLBACK").await.unwrap();

    let report = task.await.unwrap().expect("the sweep carried on");
    assert!(report.timeouts >= 1, "{report:?}");
    assert!(report.final_batch_size <= 20, "{report:?}");
    assert_eq!(report.instances, 60);
    assert!(all_instances(&p).await.is_empty());
    let last = p.retention_status().await.unwrap().last.unwrap();
    assert_eq!((last.instances, last.error), (60, None));

    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn a_provider_refuses_an_invalid_policy_before_connecting() {
    let config = duroxide_pg::PostgresConfig::new("postgres://nobody@127.0.0.1:1/none")
        .with_retention(RetentionPolicy::new().keep_executions(0));
    let e = PostgresProvider::connect(config).await.unwrap_err();
    assert!(
        e.to_string().contains("keep_executions must be at least 1"),
        "{e}"
    );
}
