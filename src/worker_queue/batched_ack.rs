//! Worker acks that lease their slot's next item, coalesced
//! (`coalesce.rs`): the acks of slots that finish while another ack is on
//! the wire go out together as one `ack_work_items_and_fetch`.
//!
//! Why: with many worker slots (activities waiting on I/O), acks arrive
//! faster than one statement at a time can carry them; sharing a statement
//! shares its transaction, its commit flush and its wake-up hint.

use std::sync::Arc;

use duroxide::providers::ProviderError;
use sqlx::postgres::PgRow;

use super::FetchKey;
use crate::call::{Call, Literal, Statement, read_row};
use crate::clock::now_ms;
use crate::coalesce::{SendMany, Sent, member_index};
use crate::connections::Connections;
use crate::error::sqlstate;
use crate::signatures::{AckWorkItemAndFetch, ActivityFound, LeasedActivity, MemberLeased};

/// One ack: its token, its completion (instance, kind, JSON) and the fetch
/// arguments of its slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AckMember {
    pub token: String,
    pub completion: Option<(String, &'static str, String)>,
    pub key: FetchKey,
}

/// What a member's fetch leased: (work item JSON, lock token, attempts,
/// taken over), or `None`.
pub(crate) type Leased = Option<(String, String, i32, Option<bool>)>;

/// A member's own outcome.
pub(crate) type AckOutcome = Result<Leased, ProviderError>;

/// The leased item of a `fetch_work_item`-shaped row.
pub(crate) fn leased_of_row(op: &str, row: &PgRow) -> Result<Leased, ProviderError> {
    let found: ActivityFound = read_row(op, row)?;
    if found.work_item.is_none() {
        return Ok(None);
    }
    let leased: LeasedActivity = read_row(op, row)?;
    Ok(Some((
        leased.work_item,
        leased.lock_token,
        leased.attempt_count,
        found.taken_over,
    )))
}

/// One member alone: `ack_work_item_and_fetch`.
pub(crate) async fn one(
    pool: &Connections,
    statement: &Statement,
    m: &AckMember,
) -> Result<Leased, ProviderError> {
    const OP: &str = "ack_work_item";
    let row = AckWorkItemAndFetch {
        lock_token: &m.token,
        now_ms: now_ms(),
        completion_instance: m.completion.as_ref().map(|c| c.0.as_str()),
        completion_kind: m.completion.as_ref().map(|c| c.1),
        completion: m.completion.as_ref().map(|c| c.2.as_str()),
        lock_timeout_ms: m.key.lock_timeout_ms,
        owner_id: m.key.owner_id.as_deref(),
        session_lock_ms: m.key.session_lock_ms,
        tag_mode: m.key.tag_mode,
        tags: &m.key.tags,
    }
    .bind_to(Call::new(pool, OP, statement))
    .fetch_one()
    .await?;
    leased_of_row(OP, &row)
}

/// Sends coalesced acks as one `ack_work_items_and_fetch`, each member
/// with its own outcome:
/// - an acked member gets what its fetch leased;
/// - a member whose lease was gone, or whose row another transaction held
///   (the batch never waits for one), changed nothing in the batch and is
///   sent alone: it fails with exactly the error a lone ack gets, or waits
///   for the row as a lone ack does;
/// - when the statement fails with the server's answer (a deadlock, a
///   timeout), nothing was applied, and each member is sent alone;
/// - when no answer came (the connection broke), the outcome is unknown:
///   every member gets that error, and nothing is sent again.
pub(crate) fn many(
    pool: Connections,
    batch: Statement,
    single: Statement,
) -> SendMany<Arc<AckMember>, AckOutcome> {
    Arc::new(move |members: Vec<Arc<AckMember>>| -> Sent<AckOutcome> {
        let (pool, batch, single) = (pool.clone(), batch.clone(), single.clone());
        Box::pin(async move {
            let rows = match send_batch(&pool, &batch, &members).await {
                Ok(rows) => rows,
                Err(e) if sqlstate(&e).is_some() => {
                    let mut out = Vec::with_capacity(members.len());
                    for m in &members {
                        out.push(one(&pool, &single, m).await);
                    }
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            let mut out: Vec<Option<AckOutcome>> = vec![None; members.len()];
            for r in rows {
                let i = member_index(BATCH, members.len(), r.member)?;
                let outcome = if r.acked {
                    Ok(r.work_item.map(|w| {
                        (
                            w,
                            r.lock_token.unwrap_or_default(),
                            r.attempt_count.unwrap_or(0),
                            r.taken_over,
                        )
                    }))
                } else {
                    one(&pool, &single, &members[i]).await
                };
                out[i] = Some(outcome);
            }
            out.into_iter()
                .enumerate()
                .map(|(i, o)| {
                    o.ok_or_else(|| {
                        ProviderError::permanent(BATCH, format!("no row for member {}", i + 1))
                    })
                })
                .collect()
        })
    })
}

/// The batch statement's name in errors and spans.
const BATCH: &str = "ack_work_items_and_fetch";

/// The members as one `ack_work_items_and_fetch` call: member i is element i
/// of every array.
async fn send_batch(
    pool: &Connections,
    batch: &Statement,
    members: &[Arc<AckMember>],
) -> Result<Vec<MemberLeased>, ProviderError> {
    fn each<'m, T>(members: &'m [Arc<AckMember>], f: impl Fn(&'m AckMember) -> T) -> Vec<T> {
        members.iter().map(|m| f(m)).collect()
    }
    // Arrays of arrays cannot be ragged: each member's tags travel as one
    // array literal, cast back on the server.
    let tag_lists = each(members, |m| {
        m.key
            .tags
            .as_slice()
            .text_input()
            .map_or_else(|| "{}".to_string(), |t| t.into_owned())
    });
    Call::new(pool, BATCH, batch)
        .bind(each(members, |m| m.token.as_str()))
        .bind(now_ms())
        .bind(each(members, |m| {
            m.completion.as_ref().map(|c| c.0.as_str())
        }))
        .bind(each(members, |m| m.completion.as_ref().map(|c| c.1)))
        .bind(each(members, |m| {
            m.completion.as_ref().map(|c| c.2.as_str())
        }))
        .bind(each(members, |m| m.key.lock_timeout_ms))
        .bind(each(members, |m| m.key.owner_id.as_deref()))
        .bind(each(members, |m| m.key.session_lock_ms))
        .bind(each(members, |m| m.key.tag_mode))
        .bind(tag_lists)
        .all_as()
        .await
}
