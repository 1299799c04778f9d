//! The `duroxide-pg` operator CLI against a real PostgreSQL: every command on
//! a schema filled by a real duroxide runtime, the migration commands on a
//! fresh schema, and bad arguments (one clear line, non-zero exit, nothing
//! changed).

use duroxide_pg_testkit::harness as common;

/// The end-to-end helpers reach the server directly.
const VIA: common::Via = common::Via::Direct;

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::process::Output;
use std::sync::Arc;

use duroxide::runtime::Runtime;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{ActivityContext, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use serde_json::Value;

use support::Env;

/// Runs the CLI on `schema` of the test server (URL through `DATABASE_URL`).
fn cli(schema: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_duroxide-pg"))
        .env("DATABASE_URL", common::database_url())
        .args(["--schema", schema])
        .args(args)
        .output()
        .expect("run duroxide-pg")
}

/// stdout of a run that must succeed.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// stdout of a `--json` run that must succeed, parsed.
fn json(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The one stderr line of a run that must fail with exit status 1.
fn fails(out: Output) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Hello", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("Hello, {name}!"))
        })
        .build()
}

/// Greet (activity, KV, custom status), Broken (fails), Family (two Greet
/// children), Waiter (waits for "Go"), Looper (three continue-as-new hops).
fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register("Greet", |ctx: OrchestrationContext, name: String| async move {
            ctx.set_kv_value("greeted", name.clone());
            ctx.set_custom_status("greeting");
            ctx.schedule_activity("Hello", name).await
        })
        .register("Broken", |_ctx: OrchestrationContext, _in: String| async move {
            Err::<String, _>("boom".to_string())
        })
        .register("Family", |ctx: OrchestrationContext, _in: String| async move {
            let a = ctx.schedule_sub_orchestration("Greet", "ann").await?;
            let b = ctx.schedule_sub_orchestration("Greet", "bob").await?;
            Ok(format!("{a} {b}"))
        })
        .register("Waiter", |ctx: OrchestrationContext, _in: String| async move {
            Ok(ctx.schedule_wait("Go").await)
        })
        .register("Looper", |ctx: OrchestrationContext, n: String| async move {
            let n: u32 = n.parse().unwrap_or(0);
            if n < 3 {
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok("looped".to_string())
        })
        .build()
}

/// A schema filled by a real runtime: greet, broken, family (+2 children),
/// looper completed or failed; waiter and waiter-2 running, subscribed to "Go".
async fn filled() -> (Env, Arc<Runtime>) {
    let env = Env::new().await;
    let rt = env.start(activities(), orchestrations()).await;
    for (id, name, input) in [
        ("greet", "Greet", "world"),
        ("broken", "Broken", ""),
        ("family", "Family", ""),
        ("waiter", "Waiter", ""),
        ("waiter-2", "Waiter", ""),
        ("looper", "Looper", "0"),
    ] {
        env.client
            .start_orchestration(id, name, input)
            .await
            .unwrap();
    }
    assert_eq!(env.wait_completed("greet").await, "Hello, world!");
    env.wait_failed("broken").await;
    env.wait_completed("family").await;
    assert_eq!(env.wait_completed("looper").await, "looped");
    env.wait_subscribed("waiter", "Go").await;
    env.wait_subscribed("waiter-2", "Go").await;
    (env, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_describe_a_store_filled_by_a_runtime() {
    let (env, rt) = filled().await;
    let s = env.schema().to_string();

    // instances list: every instance, newest first; JSON; status filter; limit.
    let text = ok(cli(&s, &["instances", "list"]));
    assert!(text.starts_with("INSTANCE  "), "{text}");
    for id in ["greet", "broken", "family", "waiter", "waiter-2", "looper"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id} missing: {text}"
        );
    }
    let all = json(cli(&s, &["--json", "instances", "list"]));
    assert_eq!(
        all.as_array().unwrap().len(),
        8,
        "6 roots + 2 children: {all}"
    );
    let failed = json(cli(
        &s,
        &["instances", "list", "--status", "failed", "--json"],
    ));
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["instance_id"], "broken");
    assert_eq!(failed[0]["status"], "Failed");
    let running = json(cli(
        &s,
        &["instances", "list", "--status", "running", "--json"],
    ));
    let mut ids: Vec<&str> = running
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["waiter", "waiter-2"]);
    let limited = ok(cli(&s, &["instances", "list", "--limit", "2"]));
    assert_eq!(
        limited.lines().count(),
        4,
        "header, 2 rows, note: {limited}"
    );
    assert!(limited.contains("(2 of 8 shown"), "{limited}");

    // instance show: info, executions, custom status, KV, history.
    let text = ok(cli(&s, &["instance", "show", "greet"]));
    for needle in [
        "Completed",
        "Hello, world!",
        "greeting (version",
        "EXECUTIONS",
        "KEY/VALUES",
        "greeted",
        "HISTORY (execution 1)",
        "OrchestrationStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "OrchestrationCompleted",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    let shown = json(cli(&s, &["instance", "show", "greet", "--json"]));
    assert_eq!(shown["info"]["orchestration_name"], "Greet");
    assert_eq!(shown["custom_status"]["status"], "greeting");
    assert_eq!(shown["kv"]["greeted"], "world");
    let history = shown["history"].as_array().unwrap();
    let stored = env.history("greet").await;
    assert_eq!(history.len(), stored.len());
    assert_eq!(history[0]["type"], "OrchestrationStarted");
    assert_eq!(history.last().unwrap()["type"], "OrchestrationCompleted");

    // Older executions of a continue-as-new instance, and one that does not exist.
    let looper = json(cli(
        &s,
        &["instance", "show", "looper", "--json", "--execution", "1"],
    ));
    assert_eq!(looper["executions"].as_array().unwrap().len(), 4);
    assert_eq!(looper["history_execution_id"], 1);
    assert_eq!(
        looper["history"].as_array().unwrap().last().unwrap()["type"],
        "OrchestrationContinuedAsNew"
    );
    let err = fails(cli(&s, &["instance", "show", "looper", "--execution", "9"]));
    assert!(
        err.contains("has no execution 9 (it has: 1, 2, 3, 4)"),
        "{err}"
    );
    // A bounded list of executions: the newest, the total, and an older
    // execution's history still shown.
    let newest = json(cli(
        &s,
        &[
            "instance",
            "show",
            "looper",
            "--json",
            "--executions",
            "2",
            "--execution",
            "1",
        ],
    ));
    let ids: Vec<u64> = newest["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 4], "the newest two, oldest first as always");
    assert_eq!(newest["execution_count"], 4);
    assert_eq!(newest["history_execution_id"], 1);
    let text = ok(cli(
        &s,
        &["instance", "show", "looper", "--executions", "2"],
    ));
    assert!(text.contains("(the newest 2 of 4 executions"), "{text}");
    let err = fails(cli(
        &s,
        &[
            "instance",
            "show",
            "looper",
            "--executions",
            "2",
            "--execution",
            "9",
        ],
    ));
    assert!(
        err.contains("has no execution 9 (it has 4; the newest: 3, 4)"),
        "{err}"
    );

    // instance tree: the family and its two children.
    let text = ok(cli(&s, &["instance", "tree", "family"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("family  Family [Completed]"), "{text}");
    assert!(
        lines[1].starts_with("├─ ") && lines[2].starts_with("└─ "),
        "{text}"
    );
    let tree = json(cli(&s, &["instance", "tree", "family", "--json"]));
    let children = tree["children"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    assert!(
        children
            .iter()
            .all(|c| c["orchestration_name"] == "Greet" && c["status"] == "Completed")
    );

    // queues and metrics agree with what the runtime left behind.
    let text = ok(cli(&s, &["queues"]));
    for q in ["orchestrator", "timer", "worker"] {
        assert!(
            text.lines().any(|l| l.starts_with(q)),
            "{q} missing: {text}"
        );
    }
    let queues = json(cli(&s, &["queues", "--json"]));
    assert_eq!(queues.as_array().unwrap().len(), 3);
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["locked"] == 0 && q["delayed"] == 0),
        "{queues}"
    );
    let m = json(cli(&s, &["metrics", "--json"]));
    assert_eq!(m["total_instances"], 8);
    assert_eq!(m["running_instances"], 2);
    assert_eq!(m["failed_instances"], 1);
    assert_eq!(m["completed_instances"], 5);
    assert!(ok(cli(&s, &["metrics"])).contains("total_executions"));

    env.finish([rt]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_counts_ready_delayed_and_locked_messages() {
    use duroxide::providers::Provider;
    let env = Env::new().await;
    let s = env.schema().to_string();
    let p = &env.provider;
    let lock = std::time::Duration::from_secs(60);
    // Orchestrator: a, b ready and c delayed; then a fetch leases one
    // instance, and a message arriving for it meanwhile waits too (locked).
    for (id, delay) in [
        ("a", None),
        ("b", None),
        ("c", Some(std::time::Duration::from_secs(600))),
    ] {
        p.enqueue_for_orchestrator(common::start_item(id, "X"), delay)
            .await
            .unwrap();
    }
    let (leased, _token, _) = p
        .fetch_orchestration_item(lock, std::time::Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    p.enqueue_for_orchestrator(common::start_item(&leased.instance, "X"), None)
        .await
        .unwrap();
    // Timers: one due in ten minutes.
    let timer = duroxide::providers::WorkItem::TimerFired {
        instance: "b".into(),
        execution_id: 1,
        id: 7,
        fire_at_ms: 0,
    };
    p.enqueue_for_orchestrator(timer, Some(std::time::Duration::from_secs(600)))
        .await
        .unwrap();
    // Worker: one held by a fetch, one ready.
    p.enqueue_for_worker(common::activity_item("a", 1))
        .await
        .unwrap();
    p.enqueue_for_worker(common::activity_item("a", 2))
        .await
        .unwrap();
    let held = p
        .fetch_work_item(
            lock,
            std::time::Duration::ZERO,
            None,
            &duroxide::providers::TagFilter::default(),
        )
        .await
        .unwrap()
        .expect("a work item");
    let q = json(cli(&s, &["queues", "--json"]));
    let by_name = |n: &str| {
        q.as_array()
            .unwrap()
            .iter()
            .find(|r| r["queue"] == n)
            .unwrap()
            .clone()
    };
    let counts = |r: &Value| {
        (
            r["ready"].as_u64(),
            r["delayed"].as_u64(),
            r["locked"].as_u64(),
        )
    };
    let orch = by_name("orchestrator");
    assert_eq!(counts(&orch), (Some(1), Some(1), Some(2)), "{q}");
    assert!(orch["oldest_ready_ms"].as_u64().is_some(), "{q}");
    let timers = by_name("timer");
    assert_eq!(counts(&timers), (Some(0), Some(1), Some(0)), "{q}");
    assert_eq!(timers["oldest_ready_ms"], Value::Null);
    assert_eq!(
        counts(&by_name("worker")),
        (Some(1), Some(0), Some(1)),
        "{q}"
    );
    let text = ok(cli(&s, &["queues"]));
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["timer", "0", "1", "0", "-"]),
        "{text}"
    );
    drop(held);
    env.finish([]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_event_and_cancel_reach_a_running_runtime() {
    let (env, rt) = filled().await;
    let s = env.schema().to_string();

    let text = ok(cli(
        &s,
        &["raise-event", "waiter", "Go", "payload \"quoted\""],
    ));
    assert!(
        text.contains("raised event \"Go\" on instance \"waiter\""),
        "{text}"
    );
    assert_eq!(env.wait_completed("waiter").await, "payload \"quoted\"");

    // Refusals: a finished instance, a missing one. Nothing reaches either:
    // with the runtime stopped, a message sent anyway would sit in the queue.
    rt.clone().shutdown(None).await;
    let err = fails(cli(&s, &["raise-event", "waiter", "Go", "again"]));
    assert!(err.contains("is Completed, not Running"), "{err}");
    let err = fails(cli(&s, &["cancel", "nope"]));
    assert_eq!(err.trim_end(), "error: instance \"nope\" not found");
    let err = fails(cli(&s, &["raise-event", "nope", "Go", "x"]));
    assert_eq!(err.trim_end(), "error: instance \"nope\" not found");
    let depth = json(cli(&s, &["queues", "--json"]));
    assert!(
        depth
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["ready"] == 0 && q["delayed"] == 0),
        "{depth}"
    );
    let rt = env.start(activities(), orchestrations()).await;

    let out = json(cli(
        &s,
        &["cancel", "waiter-2", "operator says stop", "--json"],
    ));
    assert_eq!(out["cancel_requested"], true);
    match env.wait_terminal("waiter-2").await {
        OrchestrationStatus::Failed { details, .. } => {
            assert!(
                format!("{details:?}").contains("operator says stop"),
                "{details:?}"
            )
        }
        other => panic!("expected a cancelled (failed) instance, got {other:?}"),
    }
    env.finish([rt]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_purge_and_prune_remove_exactly_what_they_say() {
    let (env, rt) = filled().await;
    let s = env.schema().to_string();
    let count = |status: &str| {
        json(cli(
            &s,
            &["instances", "list", "--json", "--status", status],
        ))
        .as_array()
        .unwrap()
        .len()
    };

    // delete: a running instance needs --force; a child goes through its root.
    let err = fails(cli(&s, &["delete", "waiter"]));
    assert!(err.contains("waiter is still running"), "{err}");
    for args in [
        &["delete", "nope"][..],
        &["prune", "nope", "--keep-last", "1"],
        &["instance", "tree", "nope"],
    ] {
        let err = fails(cli(&s, args));
        assert_eq!(
            err.trim_end(),
            "error: instance \"nope\" not found",
            "{args:?}"
        );
    }
    let child =
        json(cli(&s, &["instance", "tree", "family", "--json"]))["children"][0]["instance_id"]
            .as_str()
            .unwrap()
            .to_string();
    let err = fails(cli(&s, &["delete", &child]));
    assert!(err.contains("Delete root instance instead"), "{err}");
    let r = json(cli(&s, &["delete", "waiter", "--force", "--json"]));
    assert_eq!(r["instances_deleted"], 1);
    assert_eq!(count("running"), 1);

    // prune: looper keeps only its newest execution.
    let text = ok(cli(&s, &["prune", "looper", "--keep-last", "1"]));
    assert!(text.contains("pruned 3 executions"), "{text}");
    let looper = json(cli(&s, &["instance", "show", "looper", "--json"]));
    assert_eq!(looper["executions"].as_array().unwrap().len(), 1);

    // purge: nothing completed a day ago; the dry run lists and deletes nothing.
    let r = json(cli(&s, &["purge", "--completed-before", "1d", "--json"]));
    assert_eq!(r["instances_deleted"], 0);
    let dry = json(cli(
        &s,
        &["purge", "--completed-before", "0s", "--dry-run", "--json"],
    ));
    let mut roots: Vec<(String, u64)> = dry["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["instance_id"].as_str().unwrap().to_string(),
                r["tree_size"].as_u64().unwrap(),
            )
        })
        .collect();
    roots.sort();
    assert_eq!(
        roots,
        [
            ("broken".to_string(), 1),
            ("family".to_string(), 3),
            ("greet".to_string(), 1),
            ("looper".to_string(), 1)
        ]
    );
    assert_eq!(
        json(cli(&s, &["metrics", "--json"]))["total_instances"],
        7,
        "dry run deleted something"
    );
    let text = ok(cli(&s, &["purge", "--completed-before", "0s", "--dry-run"]));
    assert!(
        text.contains("would delete 4 root instances (6 with sub-orchestrations)"),
        "{text}"
    );

    // --limit bounds the roots; then the rest; the running instance stays.
    let r = json(cli(
        &s,
        &[
            "purge",
            "--completed-before",
            "0s",
            "--limit",
            "1",
            "--json",
        ],
    ));
    assert_eq!(r["instances_deleted"], 1, "{r}");
    // The rest, one root per batch (so several batches).
    let r = json(cli(
        &s,
        &[
            "purge",
            "--completed-before",
            "0s",
            "--batch-size",
            "1",
            "--json",
        ],
    ));
    assert_eq!(r["instances_deleted"], 5, "{r}");
    let left = json(cli(&s, &["instances", "list", "--json"]));
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["instance_id"], "waiter-2");
    env.finish([rt]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_run_deletes_what_its_dry_run_listed() {
    let (env, rt) = filled().await;
    let s = env.schema().to_string();
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instance_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&json(cli(&s, &["instances", "list", "--json"])));
    assert_eq!(before.len(), 8);

    let args = [
        "retention",
        "run",
        "--completed",
        "1d",
        "--failed",
        "1d",
        "--keep-executions",
        "1",
    ];
    // Everything finished seconds ago: a day's window keeps it all.
    let r = json(cli(&s, &[&args[..], &["--json"]].concat()));
    assert_eq!(
        (r["ran"].as_bool(), r["instances"].as_u64()),
        (Some(true), Some(0)),
        "{r}"
    );

    // Two days later (the rows made older): the dry run lists, deletes nothing.
    sqlx::query(&format!(
        "UPDATE \"{s}\".executions SET completed_at = completed_at - 2 * 86400000"
    ))
    .execute(env.provider.pool())
    .await
    .unwrap();
    let dry = json(cli(&s, &[&args[..], &["--dry-run", "--json"]].concat()));
    let mut listed: Vec<String> = dry["instance_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let expected: Vec<String> = before
        .iter()
        .filter(|id| !id.starts_with("waiter"))
        .cloned()
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(dry["instances"], 6);
    assert_eq!(
        ids(&json(cli(&s, &["instances", "list", "--json"]))),
        before
    );
    let text = ok(cli(&s, &[&args[..], &["--dry-run"]].concat()));
    assert!(text.contains("dry run: would delete 6 instances"), "{text}");

    let real = json(cli(&s, &[&args[..], &["--json"]].concat()));
    for field in ["instances", "executions", "events"] {
        assert_eq!(real[field], dry[field], "{field}: {real} vs {dry}");
    }
    assert_eq!(
        ids(&json(cli(&s, &["instances", "list", "--json"]))),
        ["waiter", "waiter-2"]
    );

    let status = json(cli(&s, &["retention", "status", "--json"]));
    let last = &status["last_sweep"];
    assert!(last["by"].as_str().unwrap().starts_with("cli:"), "{status}");
    assert_eq!(last["instances"], 6);
    assert_eq!(last["policy"]["keep_executions"], 1);
    assert_eq!(status["policy"], Value::Null, "{status}");
    assert_eq!(status["oldest_completed"], Value::Null, "{status}");
    let text = ok(cli(&s, &["retention", "status"]));
    assert!(text.contains("last sweep: done by cli:"), "{text}");
    env.finish([rt]).await;
}

#[tokio::test]
async fn migrate_and_migrate_status_on_a_fresh_schema() {
    let s = common::fresh_schema_name("cli_migrate");
    let pool = sqlx::PgPool::connect(&common::database_url())
        .await
        .unwrap();
    let schema_exists = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(&s)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let latest = duroxide_pg::migrations::latest_version();

    // Before: everything pending, nothing created by looking.
    let st = json(cli(&s, &["migrate", "status", "--json"]));
    assert_eq!(st["applied"].as_array().unwrap().len(), 0);
    assert_eq!(st["pending"].as_array().unwrap().len() as i64, latest);
    assert!(!schema_exists().await);
    let err = fails(cli(&s, &["instances", "list"]));
    assert!(err.contains("run `duroxide-pg migrate` first"), "{err}");
    assert!(!schema_exists().await);

    let out = json(cli(&s, &["migrate", "--json"]));
    let applied: Vec<i64> = out["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(applied, (1..=latest).collect::<Vec<_>>());
    let text = ok(cli(&s, &["migrate"]));
    assert!(text.contains("is up to date"), "{text}");
    let text = ok(cli(&s, &["migrate", "status"]));
    assert!(
        text.contains(&format!("{latest} applied, 0 pending, 0 unknown")),
        "{text}"
    );
    let first = text.lines().nth(1).unwrap();
    assert!(
        first.starts_with("0001") && first.contains(" schema ") && first.contains(" applied "),
        "{text}"
    );

    // A version from a newer build: reported by status, refused by migrate.
    sqlx::query(&format!(
        "INSERT INTO \"{s}\"._duroxide_migrations (version, name) VALUES (999, 'future')"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let st = json(cli(&s, &["migrate", "status", "--json"]));
    assert_eq!(st["unknown"][0]["version"], 999);
    assert!(ok(cli(&s, &["migrate", "status"])).contains("unknown (newer than this build)"));
    let err = fails(cli(&s, &["migrate"]));
    assert!(err.contains("migration 999 (future)"), "{err}");

    sqlx::query(&format!("DROP SCHEMA \"{s}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

#[test]
fn bad_arguments_fail_with_one_clear_line_before_connecting() {
    let bin = env!("CARGO_BIN_EXE_duroxide-pg");
    let run = |url: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(bin);
        c.env_remove("DATABASE_URL");
        if let Some(u) = url {
            c.env("DATABASE_URL", u);
        }
        c.args(args).output().unwrap()
    };
    // Nothing listens on port 1: each of these must fail on its argument first.
    let nowhere = "postgres://admin:hunter2secret@127.0.0.1:1/db";

    let err = fails(run(None, &["metrics"]));
    assert!(
        err.contains("pass --database-url or set DATABASE_URL"),
        "{err}"
    );
    let err = fails(run(
        Some(nowhere),
        &["purge", "--completed-before", "last tuesday"],
    ));
    assert!(
        err.contains("cannot read \"last tuesday\" as a time"),
        "{err}"
    );
    let err = fails(run(
        Some(nowhere),
        &["purge", "--completed-before", "2999-01-01"],
    ));
    assert!(err.contains("is in the future"), "{err}");
    for (args, words) in [
        (
            &["retention", "run"][..],
            "deletes nothing without --completed",
        ),
        (
            &["retention", "run", "--completed", "7x"],
            "--completed: cannot read \"7x\" as an age",
        ),
        (
            &["retention", "run", "--failed", "0s"],
            "the failed window must be at least 1 ms",
        ),
        (
            &["retention", "run", "--completed", "7d", "--batch-size", "5"],
            "batch size 5 is outside 10..=10000",
        ),
    ] {
        let err = fails(run(Some(nowhere), args));
        assert!(err.contains(words), "{args:?}: {err}");
    }
    let err = fails(run(Some(nowhere), &["--schema", "Bad-Name", "queues"]));
    assert!(err.contains("invalid schema name \"Bad-Name\""), "{err}");
    let err = fails(run(Some(nowhere), &["queues"]));
    assert!(
        err.contains("127.0.0.1:1") && !err.contains("hunter2secret"),
        "{err}"
    );
    let err = fails(run(
        None,
        &[
            "--database-url",
            "postgres://u:hunter2secret@[bad/db",
            "metrics",
        ],
    ));
    assert!(!err.contains("hunter2secret"), "{err}");

    // clap's own refusals: exit 2, the first line says what is wrong.
    for args in [
        &["instances", "list", "--status", "bogus"][..],
        &["prune", "x", "--keep-last", "-1"],
        &["purge", "--completed-before", "1d", "--limit", "0"],
        &["instances", "list", "--limit", "0"],
        &["instance", "show", "x", "--executions", "501"],
        &["instance", "show", "x", "--executions", "0"],
        &["purge"],
        &["retention", "run", "--keep-executions", "0"],
        &["retention"],
        &["frobnicate"],
    ] {
        let out = run(Some(nowhere), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_every_command_and_its_arguments() {
    let bin = env!("CARGO_BIN_EXE_duroxide-pg");
    let help = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&[]);
    for c in [
        "migrate",
        "instances",
        "instance",
        "queues",
        "metrics",
        "delete",
        "purge",
        "prune",
        "raise-event",
        "cancel",
        "retention",
        "--database-url",
        "--schema",
        "--json",
    ] {
        assert!(top.contains(c), "{c} missing from --help:\n{top}");
    }
    for (args, needles) in [
        (&["migrate"][..], &["status"][..]),
        (
            &["instances", "list"],
            &["--status", "--limit", "continued-as-new"],
        ),
        (&["instance", "show"], &["<ID>", "--execution"]),
        (&["instance", "tree"], &["<ID>"]),
        (&["delete"], &["<ID>", "--force"]),
        (
            &["purge"],
            &["--completed-before", "--dry-run", "--limit", "30d"],
        ),
        (&["prune"], &["<ID>", "--keep-last"]),
        (&["raise-event"], &["<ID>", "<NAME>", "<DATA>"]),
        (&["cancel"], &["<ID>", "[REASON]"]),
        (&["retention"], &["run", "status"]),
        (
            &["retention", "run"],
            &[
                "--completed",
                "--failed",
                "--keep-executions",
                "--dry-run",
                "--batch-size",
            ],
        ),
    ] {
        let text = help(args);
        for n in needles {
            assert!(
                text.contains(n),
                "{n} missing from {args:?} --help:\n{text}"
            );
        }
    }
}

#[test]
fn ui_refuses_an_open_address_without_credentials_before_connecting() {
    let bin = env!("CARGO_BIN_EXE_duroxide-pg");
    let run = |envs: &[(&str, &str)], listen: &str| {
        let mut c = std::process::Command::new(bin);
        c.env(
            "DATABASE_URL",
            "postgres://admin:hunter2secret@127.0.0.1:1/db",
        );
        for v in [
            "DUROXIDE_PG_UI_TOKEN",
            "DUROXIDE_PG_UI_TOKEN_FILE",
            "DUROXIDE_PG_UI_BASIC_AUTH",
            "DUROXIDE_PG_UI_BASIC_AUTH_FILE",
        ] {
            c.env_remove(v);
        }
        c.envs(envs.iter().copied());
        c.args(["ui", "--listen", listen]).output().unwrap()
    };
    let err = fails(run(&[], "0.0.0.0:0"));
    assert!(err.contains("without authentication"), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");
    let err = fails(run(
        &[
            ("DUROXIDE_PG_UI_TOKEN", "t"),
            ("DUROXIDE_PG_UI_BASIC_AUTH", "a:b"),
        ],
        "127.0.0.1:0",
    ));
    assert!(err.contains("set only one of"), "{err}");
    let err = fails(run(
        &[("DUROXIDE_PG_UI_BASIC_AUTH", "nopassword")],
        "127.0.0.1:0",
    ));
    assert!(err.contains("user:password"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_serves_the_dashboard_until_interrupted() {
    use std::io::{BufRead, Read, Write};
    let env = Env::new().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duroxide-pg"))
        .env("DATABASE_URL", common::database_url())
        .args([
            "--schema",
            env.schema(),
            "ui",
            "--listen",
            "127.0.0.1:0",
            "--read-only",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("(read-only)"), "{line}");
    assert!(!line.contains("postgres://"), "the URL was printed: {line}");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /instances HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("read-only"), "{reply}");
    // Ctrl-C: a clean stop.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    env.finish([]).await;
}
