//! The dashboard reads (migration 0015) against a real PostgreSQL: keyset
//! pages that add up to the whole filtered list, each filter, the capped
//! count, counts by status equal to counting every current execution,
//! completions per minute, history pages and the bounded tree.

use duroxide_pg_testkit::harness as common;

use duroxide::providers::ProviderAdmin;
use duroxide_pg::PostgresProvider;
use duroxide_pg::dashboard::{InstanceQuery, MAX_PAGE_SIZE};

const T0: u64 = 1_800_000_000_000;

/// 40 instances created a second apart (`job-00` oldest): every 4th failed,
/// every 4th + 1 running, the rest completed (`completed_at` a minute after
/// creation); `job-07` is a child of `job-06`, running `job-09` a child of
/// failed `job-08`; `chain` sits between two
/// executions; `odd_%` has wildcard characters in its id. Each finished
/// instance has three history events.
async fn fill(p: &PostgresProvider) {
    let s = format!("\"{}\"", p.schema_name());
    let sql = format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, orchestration_version, parent_instance_id, created_at, updated_at)
         SELECT 'job-' || lpad(g::text, 2, '0'), CASE WHEN g % 2 = 0 THEN 'Even' ELSE 'Odd' END, '1.0.0',
                CASE WHEN g = 7 THEN 'job-06' WHEN g = 9 THEN 'job-08' END, {T0} + g * 1000, {T0} + g * 1000
           FROM generate_series(0, 39) g;
         INSERT INTO {s}.executions (instance_id, execution_id, status, output, started_at, completed_at)
         SELECT 'job-' || lpad(g::text, 2, '0'), 1,
                CASE g % 4 WHEN 0 THEN 'Failed' WHEN 1 THEN 'Running' ELSE 'Completed' END, NULL,
                {T0} + g * 1000, CASE WHEN g % 4 <> 1 THEN {T0} + g * 1000 + 60000 END
           FROM generate_series(0, 39) g;
         INSERT INTO {s}.history (instance_id, execution_id, event_id, event_data)
         SELECT 'job-' || lpad(g::text, 2, '0'), 1, e, 'x' FROM generate_series(0, 39) g, generate_series(1, 3) e;
         INSERT INTO {s}.instances (instance_id, orchestration_name, orchestration_version, current_execution_id, created_at, updated_at)
         VALUES ('chain', 'Chain', '1.0.0', 2, {T0} + 100000, {T0} + 100000),
                ('odd_%', 'Odd', '1.0.0', 1, {T0} + 100001, {T0} + 100001);
         INSERT INTO {s}.executions (instance_id, execution_id, status, started_at, completed_at)
         VALUES ('chain', 1, 'ContinuedAsNew', {T0}, {T0} + 1), ('chain', 2, 'ContinuedAsNew', {T0} + 2, {T0} + 3);"
    );
    sqlx::raw_sql(&sql).execute(p.pool()).await.unwrap();
}

/// Every page of `query`, `size` at a time.
async fn all_pages(p: &PostgresProvider, query: &InstanceQuery, size: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = p
            .dashboard_instances(query, after.as_ref(), size)
            .await
            .unwrap();
        if page.is_empty() {
            return (ids, pages);
        }
        pages += 1;
        after = page.last().map(|r| r.cursor());
        ids.extend(page.into_iter().map(|r| r.instance_id));
    }
}

#[tokio::test]
async fn pages_add_up_to_the_filtered_list() {
    let p = common::fresh_provider("dash_pages").await;
    fill(&p).await;
    let everything = InstanceQuery::default();
    let (ids, pages) = all_pages(&p, &everything, 7).await;
    assert_eq!(
        ids,
        p.list_instances().await.unwrap(),
        "newest first, like list_instances"
    );
    assert_eq!((ids.len(), pages), (42, 6));

    let status = |s: &str| InstanceQuery {
        status: Some(s.into()),
        ..Default::default()
    };
    for s in ["Running", "Completed", "Failed", "ContinuedAsNew"] {
        let (ids, _) = all_pages(&p, &status(s), 3).await;
        assert_eq!(ids, p.list_instances_by_status(s).await.unwrap(), "{s}");
    }
    let p = &p;
    let by = |q: InstanceQuery| async move { all_pages(p, &q, 500).await.0 };
    assert_eq!(
        by(InstanceQuery {
            name: Some("Even".into()),
            ..Default::default()
        })
        .await
        .len(),
        20
    );
    // The prefix is literal: `_` and `%` are no wildcards.
    assert_eq!(
        by(InstanceQuery {
            id_prefix: Some("odd_".into()),
            ..Default::default()
        })
        .await,
        ["odd_%"]
    );
    assert_eq!(
        by(InstanceQuery {
            id_prefix: Some("job-3".into()),
            ..Default::default()
        })
        .await
        .len(),
        10
    );
    assert!(
        by(InstanceQuery {
            id_prefix: Some("job_".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // Half-open time ranges.
    let created = by(InstanceQuery {
        created_from: Some(T0 + 10_000),
        created_to: Some(T0 + 20_000),
        ..Default::default()
    })
    .await;
    assert_eq!(created.first().map(String::as_str), Some("job-19"));
    assert_eq!(created.last().map(String::as_str), Some("job-10"));
    assert_eq!(created.len(), 10);
    let completed = by(InstanceQuery {
        completed_from: Some(T0 + 60_000),
        completed_to: Some(T0 + 64_000),
        ..Default::default()
    })
    .await;
    assert_eq!(completed, ["job-03", "job-02", "job-00"]);
    // What a purge deletes: finished roots only (job-07 is a child).
    let purgeable = by(InstanceQuery {
        finished_roots_only: true,
        ..Default::default()
    })
    .await;
    // job-08 failed, but its child job-09 still runs: a purge would take
    // the child with it.
    assert_eq!(purgeable.len(), 28);
    for kept in ["job-07", "job-08", "job-09", "chain"] {
        assert!(!purgeable.contains(&kept.to_string()), "{kept}");
    }
    assert_eq!(
        p.dashboard_count(
            &InstanceQuery {
                finished_roots_only: true,
                ..Default::default()
            },
            1000
        )
        .await
        .unwrap(),
        28
    );
    assert_eq!(
        p.dashboard_count(&everything, 10).await.unwrap(),
        10,
        "capped"
    );

    for bad in [0, MAX_PAGE_SIZE + 1] {
        let e = p
            .dashboard_instances(&everything, None, bad)
            .await
            .unwrap_err();
        assert!(e.message.contains("page size"), "{e}");
    }
    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn counts_by_status_equal_counting_every_current_execution() {
    let p = common::fresh_provider("dash_counts").await;
    fill(&p).await;
    let counts = p.dashboard_status_counts().await.unwrap();
    let m = p.get_system_metrics().await.unwrap();
    let get = |s: &str| counts.iter().find(|(k, _)| k == s).unwrap().1;
    assert_eq!(get("Completed"), m.completed_instances);
    assert_eq!(get("Failed"), m.failed_instances);
    assert_eq!(get("ContinuedAsNew"), 1);
    // Running here: job-01, 05, ... (10) plus odd_% (no execution row yet).
    assert_eq!(get("Running"), m.running_instances);
    assert_eq!(get("Running"), 11);
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<u64>(),
        m.total_instances
    );

    // Per minute: every finished execution 60 s after its creation.
    let buckets = p
        .dashboard_activity(T0, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let done: u64 = buckets.iter().map(|b| b.completed).sum();
    let failed: u64 = buckets.iter().map(|b| b.failed).sum();
    assert_eq!((done, failed), (20, 10));
    assert_eq!(buckets.first().unwrap().start_ms, T0 + 60_000);
    assert!(
        p.dashboard_activity(T0, std::time::Duration::ZERO)
            .await
            .is_err()
    );
    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn history_pages_and_the_bounded_tree() {
    let p = common::fresh_provider("dash_history").await;
    common::start_instance(&p, "root", "Root").await;
    let events = p.read_history("root").await.unwrap();
    assert!(!events.is_empty());
    let first = p.dashboard_history("root", 1, None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event_id, events[0].event_id);
    let rest = p
        .dashboard_history("root", 1, Some(first[0].event_id), 500)
        .await
        .unwrap();
    assert_eq!(rest.len(), events.len() - 1);
    assert!(
        p.dashboard_history("nobody", 1, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let s = format!("\"{}\"", p.schema_name());
    sqlx::raw_sql(&format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, parent_instance_id, created_at, updated_at)
         VALUES ('c1', 'Child', 'root', 1, 1), ('c2', 'Child', 'root', 1, 1), ('g1', 'Grand', 'c1', 1, 1)"
    ))
    .execute(p.pool())
    .await
    .unwrap();
    let tree = p.dashboard_tree("root", 10).await.unwrap();
    let shape: Vec<(&str, u32)> = tree
        .iter()
        .map(|m| (m.instance_id.as_str(), m.depth))
        .collect();
    assert_eq!(shape, [("root", 0), ("c1", 1), ("c2", 1), ("g1", 2)]);
    assert_eq!(tree[3].parent_instance_id.as_deref(), Some("c1"));
    assert_eq!(
        p.dashboard_tree("root", 2).await.unwrap().len(),
        2,
        "bounded"
    );
    assert!(p.dashboard_tree("nobody", 10).await.unwrap().is_empty());
    p.cleanup_schema().await.unwrap();
}

/// The plan of `call` (a `SELECT * FROM schema.function(...)` with literal
/// arguments, as the provider sends dashboard calls), as JSON text.
async fn plan(p: &PostgresProvider, call: &str) -> String {
    let (plan,): (serde_json::Value,) = sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) {call}"))
        .fetch_one(p.pool())
        .await
        .unwrap();
    plan.to_string()
}

/// The chart reads one index range per status, and a page deep in the list
/// starts its index walk at the cursor, on a store large enough that a
/// full read would be chosen only by a plan that cannot use the index.
/// (The chart's first version asked for `status IN (...)`, which the
/// partial index's predicate implies: the planner dropped it from the
/// index condition and read the whole index.)
#[tokio::test]
async fn the_chart_and_deep_pages_read_index_ranges() {
    let p = common::fresh_provider("dash_plans").await;
    let s = format!("\"{}\"", p.schema_name());
    sqlx::raw_sql(&format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, created_at, updated_at)
         SELECT 'p-' || g, 'P', {T0} + g * 1000, {T0} + g * 1000 FROM generate_series(1, 50000) g;
         INSERT INTO {s}.executions (instance_id, execution_id, status, started_at, completed_at)
         SELECT 'p-' || g, 1, CASE WHEN g % 10 = 0 THEN 'Failed' ELSE 'Completed' END,
                {T0} + g * 1000, {T0} + g * 1000 FROM generate_series(1, 50000) g;"
    ))
    .execute(p.pool())
    .await
    .unwrap();
    for t in ["instances", "executions"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {s}.{t}"))
            .execute(p.pool())
            .await
            .unwrap();
    }
    let last_hour = T0 + 50_000_000 - 3_600_000;
    let chart = plan(
        &p,
        &format!("SELECT * FROM {s}.dashboard_activity({last_hour}, 60000)"),
    )
    .await;
    assert!(!chart.contains("Seq Scan"), "{chart}");
    for status in ["Completed", "Failed"] {
        assert!(
            chart.contains(&format!("(status = '{status}'::text) AND (completed_at >=")),
            "the chart does not read a range per status: {chart}"
        );
    }
    let deep = plan(
        &p,
        &format!(
            "SELECT * FROM {s}.dashboard_instances(NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, {}, 'p-100', 51)",
            T0 + 100_000
        ),
    )
    .await;
    assert!(
        deep.contains("instances_created_idx") && deep.contains("Index Cond"),
        "{deep}"
    );
    assert!(
        deep.contains("created_at <="),
        "the walk does not start at the cursor: {deep}"
    );
    p.cleanup_schema().await.unwrap();
}

/// The newest executions in one bounded read: newest first, the same
/// details `get_execution_info` gives for each, and the instance's total.
#[tokio::test]
async fn the_newest_executions_in_one_read_match_execution_info() {
    let p = common::fresh_provider("dash_executions").await;
    common::start_instance(&p, "looper", "Looper").await;
    let s = format!("\"{}\"", p.schema_name());
    sqlx::raw_sql(&format!(
        "INSERT INTO {s}.executions (instance_id, execution_id, status, output, started_at, completed_at)
         SELECT 'looper', g, CASE WHEN g = 7 THEN 'Running' ELSE 'ContinuedAsNew' END,
                CASE WHEN g = 7 THEN NULL ELSE 'out ' || g END, {T0} + g, CASE WHEN g = 7 THEN NULL ELSE {T0} + g + 1 END
           FROM generate_series(2, 7) g;
         INSERT INTO {s}.history (instance_id, execution_id, event_id, event_data)
         SELECT 'looper', 6, g, '{{}}' FROM generate_series(1, 3) g;"
    ))
    .execute(p.pool())
    .await
    .unwrap();

    let page = p.dashboard_executions("looper", 4).await.unwrap();
    assert_eq!(page.execution_count, 7);
    let ids: Vec<u64> = page.newest.iter().map(|e| e.execution_id).collect();
    assert_eq!(ids, [7, 6, 5, 4], "the newest, newest first");
    for e in &page.newest {
        let one = p
            .get_execution_info("looper", e.execution_id)
            .await
            .unwrap();
        assert_eq!(format!("{e:?}"), format!("{one:?}"));
    }
    assert_eq!(page.newest[1].event_count, 3);
    assert_eq!(page.newest[1].output.as_deref(), Some("out 6"));
    assert_eq!(page.newest[0].completed_at, None);

    let all = p
        .dashboard_executions("looper", MAX_PAGE_SIZE)
        .await
        .unwrap();
    assert_eq!(all.newest.len(), 7);
    assert_eq!(all.newest.last().unwrap().execution_id, 1);

    let none = p.dashboard_executions("nobody", 10).await.unwrap();
    assert_eq!((none.execution_count, none.newest.len()), (0, 0));
    for bad in [0, MAX_PAGE_SIZE + 1] {
        let e = p.dashboard_executions("looper", bad).await.unwrap_err();
        assert!(e.to_string().contains("page size"), "{e}");
    }
    p.cleanup_schema().await.unwrap();
}
