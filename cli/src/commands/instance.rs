//! `instance show` and `instance tree`.

use std::collections::BTreeMap;

use duroxide::Event;
use duroxide::providers::{ExecutionInfo, InstanceInfo, Provider, ProviderAdmin};
use duroxide_pg::dashboard::ExecutionPage;
use serde_json::{Value, json};

use super::{CliError, CliResult, instance_error, is_not_found, open};
use crate::args::{InstanceAction, InstanceArgs, ShowArgs, Target, TreeArgs};
use crate::output::{Table, clip, or_dash, print_json};
use crate::time::format_ms;

/// `instance ACTION`.
pub async fn run(args: InstanceArgs, t: &Target) -> CliResult {
    match args.action {
        InstanceAction::Show(show_args) => show(show_args, t).await,
        InstanceAction::Tree(tree_args) => tree(tree_args, t).await,
    }
}

/// An instance's info as JSON (also `instances list --json`).
pub(super) fn info_json(i: &InstanceInfo) -> Value {
    json!({
        "instance_id": i.instance_id,
        "orchestration_name": i.orchestration_name,
        "orchestration_version": i.orchestration_version,
        "current_execution_id": i.current_execution_id,
        "status": i.status,
        "output": i.output,
        "created_at": format_ms(i.created_at),
        "updated_at": format_ms(i.updated_at),
        "parent_instance_id": i.parent_instance_id,
    })
}

fn execution_json(e: &ExecutionInfo) -> Value {
    json!({
        "execution_id": e.execution_id,
        "status": e.status,
        "output": e.output,
        "started_at": format_ms(e.started_at),
        "completed_at": e.completed_at.map(format_ms),
        "event_count": e.event_count,
    })
}

/// An event's type name and its payload fields as `name=value` pairs.
fn event_summary(e: &Event) -> (String, String) {
    let (kind, fields) = duroxide_pg::dashboard::event_kind_and_fields(e);
    let details = fields
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    (kind, details)
}

/// `instance show`: info, executions, custom status, key/values, history.
async fn show(args: ShowArgs, t: &Target) -> CliResult {
    let (json, id, execution) = (t.json, args.id.as_str(), args.execution);
    let p = open(t).await?;
    let info = p
        .get_instance_info(id)
        .await
        .map_err(|e| instance_error(id, e))?;
    let page = p.dashboard_executions(id, args.executions).await?;
    // Listed oldest first, as `instance show` always has.
    let executions: Vec<ExecutionInfo> = page.newest.iter().rev().cloned().collect();
    let shown = execution.unwrap_or(info.current_execution_id);
    // An execution older than the page is shown if it exists.
    if !executions.iter().any(|e| e.execution_id == shown) {
        match p.get_execution_info(id, shown).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(no_such_execution(id, shown, &page));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let custom_status = p.get_custom_status(id, 0).await?;
    let kv: BTreeMap<String, String> = p.get_kv_all_values(id).await?.into_iter().collect();
    let history = p.read_history_with_execution_id(id, shown).await?;

    if json {
        print_json(&json!({
            "info": info_json(&info),
            "executions": executions.iter().map(execution_json).collect::<Vec<_>>(),
            "execution_count": page.execution_count,
            "custom_status": custom_status.map(|(status, version)| json!({ "status": status, "version": version })),
            "kv": kv,
            "history_execution_id": shown,
            "history": history,
        }));
        return Ok(());
    }
    print!("{}", head_table(&info, custom_status.as_ref()).render());
    println!("\nEXECUTIONS");
    print!("{}", executions_table(&executions).render());
    if page.execution_count > executions.len() as u64 {
        println!(
            "(the newest {} of {} executions; --executions N lists more)",
            executions.len(),
            page.execution_count
        );
    }
    println!("\nKEY/VALUES");
    let mut t = Table::new(&["key", "value"]);
    for (k, v) in &kv {
        t.row(vec![k.clone(), clip(v, 100)]);
    }
    print!("{}", t.render());
    println!("\nHISTORY (execution {shown})");
    print!("{}", history_table(&history).render());
    Ok(())
}

/// The error for `--execution N` naming no execution of the instance: the
/// ids it has, ascending (the newest page of them when there are more).
fn no_such_execution(id: &str, shown: u64, page: &ExecutionPage) -> CliError {
    let known: Vec<String> = page
        .newest
        .iter()
        .rev()
        .map(|e| e.execution_id.to_string())
        .collect();
    let listed = if page.execution_count > page.newest.len() as u64 {
        format!(
            "it has {}; the newest: {}",
            page.execution_count,
            known.join(", ")
        )
    } else {
        format!("it has: {}", known.join(", "))
    };
    CliError(format!(
        "instance {id:?} has no execution {shown} ({listed})"
    ))
}

/// `instance show`'s first table: the instance's fields and custom status.
fn head_table(info: &InstanceInfo, custom_status: Option<&(Option<String>, u64)>) -> Table {
    let mut head = Table::new(&["field", "value"]);
    for (k, v) in [
        ("instance", info.instance_id.clone()),
        ("orchestration", info.orchestration_name.clone()),
        ("version", info.orchestration_version.clone()),
        ("status", info.status.clone()),
        (
            "output",
            or_dash(info.output.as_deref().map(|o| clip(o, 120))),
        ),
        ("execution", info.current_execution_id.to_string()),
        ("created", format_ms(info.created_at)),
        ("updated", format_ms(info.updated_at)),
        ("parent", or_dash(info.parent_instance_id.as_ref())),
        (
            "custom status",
            match custom_status {
                Some((Some(s), v)) => format!("{} (version {v})", clip(s, 120)),
                _ => "-".into(),
            },
        ),
    ] {
        head.row(vec![k.into(), v]);
    }
    head
}

/// `instance show`'s executions, one row each.
fn executions_table(executions: &[ExecutionInfo]) -> Table {
    let mut t = Table::new(&[
        "execution",
        "status",
        "started",
        "completed",
        "events",
        "output",
    ]);
    for e in executions {
        t.row(vec![
            e.execution_id.to_string(),
            e.status.clone(),
            format_ms(e.started_at),
            or_dash(e.completed_at.map(format_ms)),
            e.event_count.to_string(),
            or_dash(e.output.as_deref().map(|o| clip(o, 60))),
        ]);
    }
    t
}

/// `instance show`'s history of one execution, one row per event.
fn history_table(history: &[Event]) -> Table {
    let mut t = Table::new(&["event", "time", "type", "source", "details"]);
    for e in history {
        let (kind, details) = event_summary(e);
        t.row(vec![
            e.event_id.to_string(),
            format_ms(e.timestamp_ms),
            kind,
            or_dash(e.source_event_id),
            clip(&details, 100),
        ]);
    }
    t
}

/// One node of an instance tree.
struct Node {
    info: InstanceInfo,
    children: Vec<String>,
}

/// `instance tree`: the instance and its sub-orchestrations.
async fn tree(args: TreeArgs, t: &Target) -> CliResult {
    let (json, id) = (t.json, args.id.as_str());
    let p = open(t).await?;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut pending = vec![id.to_string()];
    while let Some(next) = pending.pop() {
        let info = p
            .get_instance_info(&next)
            .await
            .map_err(|e| instance_error(&next, e))?;
        let children = p.list_children(&next).await?;
        pending.extend(children.iter().cloned());
        nodes.insert(next, Node { info, children });
    }
    if json {
        print_json(&node_json(&nodes, id));
    } else {
        let mut out = String::new();
        render_node(&nodes, id, "", "", &mut out);
        print!("{out}");
    }
    Ok(())
}

fn node_json(nodes: &BTreeMap<String, Node>, id: &str) -> Value {
    let n = &nodes[id];
    json!({
        "instance_id": id,
        "orchestration_name": n.info.orchestration_name,
        "status": n.info.status,
        "children": n.children.iter().map(|c| node_json(nodes, c)).collect::<Vec<_>>(),
    })
}

fn render_node(
    nodes: &BTreeMap<String, Node>,
    id: &str,
    first: &str,
    rest: &str,
    out: &mut String,
) {
    let n = &nodes[id];
    out.push_str(&format!(
        "{first}{id}  {} [{}]\n",
        n.info.orchestration_name, n.info.status
    ));
    for (i, child) in n.children.iter().enumerate() {
        let last = i + 1 == n.children.len();
        let (branch, indent) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        render_node(
            nodes,
            child,
            &format!("{rest}{branch}"),
            &format!("{rest}{indent}"),
            out,
        );
    }
}
