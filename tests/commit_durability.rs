//! Which transactions wait for their commit to reach the disk. An
//! orchestration lease does not (`commit_lease_asynchronously`: a lost lease
//! only makes its work run again); every transaction that acknowledges work
//! does, since its `Ok` means durable. Checked on the server: each call runs
//! inside a transaction of this test, which then reads the
//! `synchronous_commit` its commit would use.

use duroxide_pg_testkit::harness as common;

use std::time::Duration;

use duroxide::providers::{Provider, TagFilter};
use duroxide_pg::PollMode;
use sqlx::{Connection, PgConnection};

/// The `synchronous_commit` a transaction that ran `call` would commit with,
/// starting from `on` (the throwaway cluster's own default is `off`); the
/// transaction is rolled back: nothing of it stays.
async fn commit_setting(conn: &mut PgConnection, schema: &str, call: &str) -> String {
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET LOCAL search_path TO \"{schema}\"; SET LOCAL synchronous_commit TO on"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql(call).execute(&mut *tx).await.unwrap();
    let setting: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    setting
}

#[tokio::test]
async fn leases_commit_asynchronously_and_acks_synchronously() {
    let p = common::fresh_provider_with("durability", PollMode::PollOnly).await;
    let schema = p.schema_name().to_string();
    let mut conn = PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    let configured = "on";
    let now = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

    // An orchestration waiting: the fetch that leases it commits asynchronously.
    p.enqueue_for_orchestrator(common::start_item("i1", "Greet"), None)
        .await
        .unwrap();
    let lease = format!("SELECT * FROM fetch_orchestration_item({now}, 30000, NULL, NULL)");
    assert_eq!(commit_setting(&mut conn, &schema, &lease).await, "off");

    // A fetch that leases nothing changes nothing.
    let (_, token, _) = common::fetch_orchestration_now(&p)
        .await
        .expect("the started instance");
    assert_eq!(commit_setting(&mut conn, &schema, &lease).await, configured);

    // The ack of that turn, scheduling an activity: synchronous.
    common::ack_first_turn(&p, &token, "i1", "Greet").await;
    p.enqueue_for_worker(common::activity_item("i1", 2))
        .await
        .unwrap();
    let (_, worker_token, _) = p
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::default(),
        )
        .await
        .unwrap()
        .expect("the activity");

    // A worker ack that leases ahead runs a fetch inside: still synchronous,
    // alone and batched.
    p.enqueue_for_worker(common::activity_item("i1", 3))
        .await
        .unwrap();
    let single = format!(
        "SELECT * FROM ack_work_item_and_fetch('{worker_token}', {now}, 'i1', 'ActivityCompleted',
            '{{}}', 30000, NULL, 0, 3::smallint, '{{}}')"
    );
    assert_eq!(
        commit_setting(&mut conn, &schema, &single).await,
        configured
    );
    let batched = format!(
        "SELECT * FROM ack_work_items_and_fetch(ARRAY['{worker_token}'], {now}, ARRAY['i1'],
            ARRAY['ActivityCompleted'], ARRAY['{{}}'], ARRAY[30000::bigint], ARRAY[NULL::text],
            ARRAY[0::bigint], ARRAY[3::smallint], ARRAY['{{}}'])"
    );
    assert_eq!(
        commit_setting(&mut conn, &schema, &batched).await,
        configured
    );
    p.cleanup_schema().await.unwrap();
}

/// Only the orchestration fetch commits asynchronously, and no function
/// calls it: no transaction that acknowledges work can (the check reads the
/// current text of every stored function, `schema/functions/`).
#[test]
fn only_the_orchestration_fetch_commits_asynchronously() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/functions");
    let mut callers = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let body = text.split("COMMENT ON FUNCTION").next().unwrap();
        if name != "commit_lease_asynchronously" && body.contains("commit_lease_asynchronously(") {
            callers.push(name.clone());
        }
        if name != "fetch_orchestration_item" {
            assert!(
                !body.contains("fetch_orchestration_item("),
                "{name} calls fetch_orchestration_item"
            );
        }
    }
    assert_eq!(callers, ["fetch_orchestration_item"]);
}
