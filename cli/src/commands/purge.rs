//! `purge`.

use duroxide::providers::{DeleteInstanceResult, InstanceFilter, ProviderAdmin, ProviderError};
use duroxide_pg::PostgresProvider;
use serde_json::json;

use super::delete::print_deleted;
use super::{CliError, CliResult, open};
use crate::args::{PurgeArgs, Target};
use crate::output::{Table, print_json};
use crate::time::{format_ms, now_ms, parse_moment};

/// `purge --completed-before WHEN [--limit N] [--dry-run]`. The moment is
/// checked before anything connects.
pub async fn run(args: PurgeArgs, t: &Target) -> CliResult {
    let before_ms = parse_moment(&args.completed_before, now_ms())?;
    let p = open(t).await?;
    purge(
        &p,
        t.json,
        before_ms,
        args.limit,
        args.batch_size,
        args.dry_run,
    )
    .await
}

/// `purge --completed-before WHEN [--limit N] [--dry-run]`: terminal roots
/// completed before `before_ms`, with their trees, `batch` roots per
/// statement (so one purge never locks an unbounded set) until none is left.
async fn purge(
    p: &PostgresProvider,
    json: bool,
    before_ms: u64,
    limit: Option<u32>,
    batch: u32,
    dry_run: bool,
) -> CliResult {
    let filter = |ids: Option<Vec<String>>, n: u32| InstanceFilter {
        instance_ids: ids,
        completed_before: Some(before_ms),
        limit: Some(n),
    };
    if dry_run {
        let roots = p
            .bulk_delete_candidates(&filter(None, limit.unwrap_or(u32::MAX)))
            .await?;
        let mut rows = Vec::new();
        for root in &roots {
            rows.push((root.clone(), p.get_instance_tree(root).await?.size()));
        }
        if json {
            print_json(&json!({
                "dry_run": true,
                "completed_before": format_ms(before_ms),
                "roots": rows.iter().map(|(id, size)| json!({ "instance_id": id, "tree_size": size })).collect::<Vec<_>>(),
            }));
        } else {
            let mut t = Table::new(&["instance", "instances in tree"]);
            for (id, size) in &rows {
                t.row(vec![id.clone(), size.to_string()]);
            }
            print!("{}", t.render());
            println!(
                "dry run: would delete {} root instances ({} with sub-orchestrations) completed before {}",
                rows.len(),
                rows.iter().map(|(_, s)| s).sum::<usize>(),
                format_ms(before_ms)
            );
        }
        return Ok(());
    }

    let mut total = DeleteInstanceResult::default();
    let mut remaining = limit.unwrap_or(u32::MAX);
    // Batches commit one by one: a failure must say what is already gone.
    let partial = |e: ProviderError, t: &DeleteInstanceResult| {
        CliError(format!(
            "{e} (before this failure the purge had deleted {} instances, {} executions, {} events)",
            t.instances_deleted, t.executions_deleted, t.events_deleted
        ))
    };
    while remaining > 0 {
        let roots = p
            .bulk_delete_candidates(&filter(None, remaining.min(batch)))
            .await
            .map_err(|e| partial(e, &total))?;
        if roots.is_empty() {
            break;
        }
        let n = roots.len() as u32;
        let r = p
            .delete_instance_bulk(filter(Some(roots), n))
            .await
            .map_err(|e| partial(e, &total))?;
        if r.instances_deleted == 0 {
            break; // someone else deleted them first; nothing left for us
        }
        total.instances_deleted += r.instances_deleted;
        total.executions_deleted += r.executions_deleted;
        total.events_deleted += r.events_deleted;
        total.queue_messages_deleted += r.queue_messages_deleted;
        remaining = remaining.saturating_sub(n);
    }
    print_deleted(
        json,
        &format!("purge before {}", format_ms(before_ms)),
        &total,
    );
    Ok(())
}
