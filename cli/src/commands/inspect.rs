//! Read-only commands: `instances list`, `instance show`, `instance tree`,
//! `queues`, `metrics`.

use std::collections::BTreeMap;

use duroxide::Event;
use duroxide::providers::{ExecutionInfo, InstanceInfo, Provider, ProviderAdmin};
use duroxide_pg::PostgresProvider;
use serde_json::{Value, json};

use super::{CliError, CliResult, instance_error, is_not_found};
use crate::args::Status;
use crate::output::{Table, clip, or_dash, print_json};
use crate::time::format_ms;

fn info_json(i: &InstanceInfo) -> Value {
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

/// `instances list`: newest first, at most `limit`.
pub async fn list(
    p: &PostgresProvider,
    json: bool,
    status: Option<Status>,
    limit: usize,
) -> CliResult {
    let ids = match status {
        Some(s) => p.list_instances_by_status(s.as_stored()).await?,
        None => p.list_instances().await?,
    };
    let mut infos = Vec::new();
    for id in ids.iter().take(limit) {
        match p.get_instance_info(id).await {
            Ok(info) => infos.push(info),
            // Deleted between the listing and this read: not there any more.
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        print_json(&Value::Array(infos.iter().map(info_json).collect()));
        return Ok(());
    }
    let mut table = Table::new(&[
        "instance",
        "orchestration",
        "version",
        "status",
        "execution",
        "created",
        "updated",
        "parent",
    ]);
    for i in &infos {
        table.row(vec![
            i.instance_id.clone(),
            i.orchestration_name.clone(),
            i.orchestration_version.clone(),
            i.status.clone(),
            i.current_execution_id.to_string(),
            format_ms(i.created_at),
            format_ms(i.updated_at),
            or_dash(i.parent_instance_id.as_ref()),
        ]);
    }
    print!("{}", table.render());
    if ids.len() > infos.len() {
        println!(
            "({} of {} shown; raise --limit for more)",
            infos.len(),
            ids.len()
        );
    }
    Ok(())
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
pub async fn show(p: &PostgresProvider, json: bool, id: &str, execution: Option<u64>) -> CliResult {
    let info = p
        .get_instance_info(id)
        .await
        .map_err(|e| instance_error(id, e))?;
    let mut executions = Vec::new();
    for e in p.list_executions(id).await? {
        executions.push(p.get_execution_info(id, e).await?);
    }
    let shown = execution.unwrap_or(info.current_execution_id);
    if !executions.iter().any(|e| e.execution_id == shown) {
        let known: Vec<String> = executions
            .iter()
            .map(|e| e.execution_id.to_string())
            .collect();
        return Err(CliError(format!(
            "instance {id:?} has no execution {shown} (it has: {})",
            known.join(", ")
        )));
    }
    let custom_status = p.get_custom_status(id, 0).await?;
    let kv: BTreeMap<String, String> = p.get_kv_all_values(id).await?.into_iter().collect();
    let history = p.read_history_with_execution_id(id, shown).await?;

    if json {
        print_json(&json!({
            "info": info_json(&info),
            "executions": executions.iter().map(execution_json).collect::<Vec<_>>(),
            "custom_status": custom_status.map(|(status, version)| json!({ "status": status, "version": version })),
            "kv": kv,
            "history_execution_id": shown,
            "history": history,
        }));
        return Ok(());
    }
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
            match &custom_status {
                Some((Some(s), v)) => format!("{} (version {v})", clip(s, 120)),
                _ => "-".into(),
            },
        ),
    ] {
        head.row(vec![k.into(), v]);
    }
    print!("{}", head.render());

    println!("\nEXECUTIONS");
    let mut t = Table::new(&[
        "execution",
        "status",
        "started",
        "completed",
        "events",
        "output",
    ]);
    for e in &executions {
        t.row(vec![
            e.execution_id.to_string(),
            e.status.clone(),
            format_ms(e.started_at),
            or_dash(e.completed_at.map(format_ms)),
            e.event_count.to_string(),
            or_dash(e.output.as_deref().map(|o| clip(o, 60))),
        ]);
    }
    print!("{}", t.render());

    println!("\nKEY/VALUES");
    let mut t = Table::new(&["key", "value"]);
    for (k, v) in &kv {
        t.row(vec![k.clone(), clip(v, 100)]);
    }
    print!("{}", t.render());

    println!("\nHISTORY (execution {shown})");
    let mut t = Table::new(&["event", "time", "type", "source", "details"]);
    for e in &history {
        let (kind, details) = event_summary(e);
        t.row(vec![
            e.event_id.to_string(),
            format_ms(e.timestamp_ms),
            kind,
            or_dash(e.source_event_id),
            clip(&details, 100),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// One node of an instance tree.
struct Node {
    info: InstanceInfo,
    children: Vec<String>,
}

/// `instance tree`: the instance and its sub-orchestrations.
pub async fn tree(p: &PostgresProvider, json: bool, id: &str) -> CliResult {
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

/// A duration for a table: `850ms`, `12.5s`, `4m05s`, `3h02m`.
fn age(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// `queues`: ready / delayed / locked per queue and the oldest ready age.
pub async fn queues(p: &PostgresProvider, json: bool) -> CliResult {
    let queues = p.queue_overview().await?;
    if json {
        print_json(&Value::Array(
            queues
                .iter()
                .map(|q| {
                    json!({
                        "queue": q.queue,
                        "ready": q.ready,
                        "delayed": q.delayed,
                        "locked": q.locked,
                        "oldest_ready_ms": q.oldest_ready_age.map(|d| d.as_millis() as u64),
                    })
                })
                .collect(),
        ));
        return Ok(());
    }
    let mut t = Table::new(&["queue", "ready", "delayed", "locked", "oldest ready"]);
    for q in &queues {
        t.row(vec![
            q.queue.clone(),
            q.ready.to_string(),
            q.delayed.to_string(),
            q.locked.to_string(),
            or_dash(q.oldest_ready_age.map(age)),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `metrics`: instance, execution and event totals.
pub async fn metrics(p: &PostgresProvider, json: bool) -> CliResult {
    let m = p.get_system_metrics().await?;
    let rows = [
        ("total_instances", m.total_instances),
        ("running_instances", m.running_instances),
        ("completed_instances", m.completed_instances),
        ("failed_instances", m.failed_instances),
        ("total_executions", m.total_executions),
        ("total_events", m.total_events),
    ];
    if json {
        print_json(&Value::Object(
            rows.iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        ));
        return Ok(());
    }
    let mut t = Table::new(&["metric", "value"]);
    for (k, v) in rows {
        t.row(vec![k.into(), v.to_string()]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::age;
    use std::time::Duration;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(12_500)), "12.5s");
        assert_eq!(age(Duration::from_secs(245)), "4m05s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 120)), "3h02m");
    }
}
