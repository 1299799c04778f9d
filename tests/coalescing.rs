//! Coalesced worker acks (`ack_work_items_and_fetch`): acks that arrive while
//! another ack of the same provider is on the wire go out together as one
//! statement, and each caller still gets exactly its own outcome: a stale
//! member fails alone with the error a lone ack gets, a member the server
//! refuses fails alone while the others commit, and batches running at once
//! on shared sessions lock in one order (no deadlock).
//!
//! A batch forms deterministically: another transaction holds the rows of
//! the first `Coalescer::MAX_IN_FLIGHT` acks until both wait for them, so
//! they go out alone and cannot finish before `join_all` has polled the
//! rest, which join the statement that follows them (see [`ack_together`]).

use duroxide_pg_testkit::harness as common;

use std::time::Duration;

use common::{Via, database_url};
use duroxide::providers::{Provider, ProviderError, SessionFetchConfig, TagFilter, WorkItem};
use duroxide_pg::metrics as m;
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider, ProviderSqlState};
use futures_util::future::join_all;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sqlx::{Connection, PgPool};

const LOCK: Duration = Duration::from_secs(30);
/// Acks sent at once: more than can go out alone.
const ACKS: u64 = 10;

fn completion(instance: &str, id: u64) -> WorkItem {
    WorkItem::ActivityCompleted {
        instance: instance.into(),
        execution_id: 1,
        id,
        result: format!("r{id}"),
    }
}

/// `n` activities of instances `c0..`, each fetched (leased) by `p`, in
/// enqueue order: their lock tokens.
async fn leased(p: &PostgresProvider, n: u64, session: Option<&str>) -> Vec<(String, u64)> {
    for k in 0..n {
        p.enqueue_for_worker(common::activity_item_in(&format!("c{k}"), k, session, None))
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(lease_one(p, session.is_some()).await);
    }
    out
}

/// Leases the next activity (as the session owner `owner` when `as_owner`):
/// its token and activity id.
async fn lease_one(p: &PostgresProvider, as_owner: bool) -> (String, u64) {
    let owner = SessionFetchConfig {
        owner_id: "owner".into(),
        lock_timeout: LOCK,
    };
    let (item, token, _) = p
        .fetch_work_item(
            LOCK,
            Duration::ZERO,
            as_owner.then_some(&owner),
            &TagFilter::default(),
        )
        .await
        .unwrap()
        .expect("an activity to lease");
    let WorkItem::ActivityExecute { id, .. } = item else {
        panic!("not an activity: {item:?}")
    };
    (token, id)
}

/// Acks going out alone before the rest of [`ack_together`]'s acks wait to
/// go out together (`Coalescer::MAX_IN_FLIGHT`).
const ALONE: usize = 2;

/// Acks every token at once, each with its activity's completion: the first
/// [`ALONE`] go out alone, the rest as one batch.
///
/// `join_all` polls every ack once, in order, before polling any again, but
/// a lone ack can finish within that first poll: on a busy machine the
/// client may be descheduled between sending and reading, and find the
/// server's answer already there. Then the next ack found nothing in flight
/// and went out alone too, and no batch formed. So another transaction holds
/// the lone acks' rows until both wait for them on the server, by which
/// time every other ack has joined the batch.
async fn ack_together(
    p: &PostgresProvider,
    tokens: &[(String, u64)],
) -> Vec<Result<(), ProviderError>> {
    let mut holder = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let holder_pid = common::backend_pid(&mut holder).await;
    let mut held = holder.begin().await.unwrap();
    let alone = &tokens[..ALONE.min(tokens.len())];
    for (token, _) in alone {
        sqlx::query(&format!(
            "SELECT id FROM \"{}\".worker_queue WHERE lock_token = $1 FOR UPDATE",
            p.schema_name()
        ))
        .bind(token)
        .execute(&mut *held)
        .await
        .unwrap();
    }
    let acks = join_all(
        tokens
            .iter()
            .map(|(t, id)| p.ack_work_item(t, Some(completion(&format!("c{id}"), *id)))),
    );
    let release = async {
        let watcher = PgPool::connect(&database_url()).await.unwrap();
        let lone = alone.len() as i64;
        common::wait_for_waiters(&watcher, holder_pid, |n| n == lone, "the lone acks' waits").await;
        held.rollback().await.unwrap();
    };
    tokio::join!(acks, release).0
}

/// The completions waiting in the orchestrator queue, by instance.
async fn completions(admin: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT instance_id FROM \"{schema}\".orchestrator_queue ORDER BY instance_id"
    ))
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Worker rows still in the queue.
async fn worker_rows(admin: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".worker_queue"))
        .fetch_one(admin)
        .await
        .unwrap()
}

fn sorted_instances(tokens: &[(String, u64)]) -> Vec<String> {
    let mut v: Vec<String> = tokens.iter().map(|(_, id)| format!("c{id}")).collect();
    v.sort();
    v
}

/// Runs `body` on a current-thread runtime with a metrics recorder local to
/// this thread (every task of the provider runs on it), handing it the
/// recorder's reader.
fn with_recorder<F: Future<Output = ()>>(body: impl FnOnce(Snapshotter) -> F) {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(body(snap)));
}

/// What the recorder recorded: (metric key, value).
type Recorded = Vec<(metrics::Key, DebugValue)>;

/// Everything recorded since the last call (a snapshot drains histograms).
fn recorded(snap: &Snapshotter) -> Recorded {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().clone(), value))
        .collect()
}

/// The batch sizes recorded for worker acks (one value per statement).
fn batch_sizes(recorded: &Recorded) -> Vec<f64> {
    recorded
        .iter()
        .filter(|(key, _)| {
            key.name() == m::BATCH_MEMBERS
                && key
                    .labels()
                    .any(|l| l.key() == "operation" && l.value() == "ack_work_item")
        })
        .flat_map(|(_, v)| match v {
            DebugValue::Histogram(values) => {
                values.iter().map(|v| v.into_inner()).collect::<Vec<f64>>()
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .collect()
}

/// One member whose lease is gone (its row deleted, as a cancelled activity's
/// is) among good ones, sent together: the good ones commit, the stale one
/// fails with the error a lone ack of a stale token gets, and one statement
/// carried more than one ack.
fn a_stale_member_among_good_ones(via: Via) {
    with_recorder(|snap| async move {
        let p =
            common::fresh_provider_via(via, "coalstale", |c| c.with_poll_mode(PollMode::PollOnly))
                .await;
        let schema = p.schema_name().to_string();
        let admin = PgPool::connect(&database_url()).await.unwrap();
        let tokens = leased(&p, ACKS, None).await;
        let stale = &tokens[5];
        sqlx::query(&format!(
            "DELETE FROM \"{schema}\".worker_queue WHERE lock_token = $1"
        ))
        .bind(&stale.0)
        .execute(&admin)
        .await
        .unwrap();

        let results = ack_together(&p, &tokens).await;

        for (i, r) in results.iter().enumerate() {
            if i == 5 {
                let e = r.as_ref().unwrap_err();
                assert_eq!(
                    ProviderSqlState::of_error(e),
                    Some(ProviderSqlState::LeaseExpired),
                    "{e:?}"
                );
                // Exactly what a lone ack of that token says.
                let alone = p
                    .ack_work_item(&stale.0, Some(completion("c5", 5)))
                    .await
                    .unwrap_err();
                assert_eq!(e, &alone);
            } else {
                r.as_ref().unwrap_or_else(|e| panic!("member {i}: {e:?}"));
            }
        }
        let good: Vec<(String, u64)> = tokens
            .iter()
            .filter(|(t, _)| t != &stale.0)
            .cloned()
            .collect();
        assert_eq!(completions(&admin, &schema).await, sorted_instances(&good));
        assert_eq!(worker_rows(&admin, &schema).await, 0);
        let sizes = batch_sizes(&recorded(&snap));
        assert_eq!(sizes.iter().sum::<f64>(), ACKS as f64, "{sizes:?}");
        assert!(
            sizes.iter().any(|&s| s > 1.0),
            "no statement carried more than one ack: {sizes:?}"
        );
        p.cleanup_schema().await.unwrap();
    });
}

#[test]
fn a_stale_member_fails_alone_with_the_lone_error() {
    a_stale_member_among_good_ones(Via::Direct);
}

/// The same batch through PgBouncer in transaction mode: the arrays travel
/// as literals in one simple query.
#[test]
fn a_batch_through_pgbouncer_gives_each_member_its_outcome() {
    a_stale_member_among_good_ones(Via::PgBouncer);
}

/// Tags an array literal must quote (a comma, braces, a quote, a backslash,
/// the word NULL, the empty tag) travel through a batch intact: every acked
/// member's fetch, filtered by those tags, leases the slot's next activity,
/// and each is later released unused (nobody fetches it).
fn tags_travel_through_a_batch(via: Via) {
    with_recorder(|snap| async move {
        let p =
            common::fresh_provider_via(via, "coaltags", |c| c.with_poll_mode(PollMode::PollOnly))
                .await;
        let tags = ["a,b", "{x}", "q\"uote", "back\\slash", "NULL", ""];
        let filter = TagFilter::Tags(tags.iter().map(|t| (*t).to_string()).collect());
        for k in 0..2 * ACKS {
            let tag = tags[usize::try_from(k).unwrap() % tags.len()];
            p.enqueue_for_worker(common::activity_item_in(
                &format!("c{k}"),
                k,
                None,
                Some(tag),
            ))
            .await
            .unwrap();
        }
        let mut tokens = Vec::new();
        for _ in 0..ACKS {
            let (item, token, _) = p
                .fetch_work_item(LOCK, Duration::ZERO, None, &filter)
                .await
                .unwrap()
                .expect("a tagged activity");
            let WorkItem::ActivityExecute { id, .. } = item else {
                panic!("not an activity: {item:?}")
            };
            tokens.push((token, id));
        }
        for r in ack_together(&p, &tokens).await {
            r.unwrap();
        }
        // Every ack leased ahead (the batch's members with the tags it
        // carried as literals); each held item is released within the hold.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let recorded = recorded(&snap);
            if seen.is_empty() {
                seen = batch_sizes(&recorded);
            }
            let leased_ahead: u64 = recorded
                .iter()
                .filter(|(key, _)| key.name() == m::PREFETCH)
                .map(|(_, v)| match v {
                    DebugValue::Counter(n) => *n,
                    other => panic!("not a counter: {other:?}"),
                })
                .sum();
            if leased_ahead == ACKS {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{leased_ahead} of {ACKS} acks leased ahead"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen.iter().any(|&s| s > 1.0), "no batch formed: {seen:?}");
        p.cleanup_schema().await.unwrap();
    });
}

#[test]
fn tags_travel_through_a_batch_direct() {
    tags_travel_through_a_batch(Via::Direct);
}

#[test]
fn tags_travel_through_a_batch_through_pgbouncer() {
    tags_travel_through_a_batch(Via::PgBouncer);
}

/// A member the server refuses (here a trigger raises for its completion,
/// as a constraint would): the batch statement fails as a whole, nothing of
/// it is applied, and each member is sent alone, so the refused one fails
/// with its own error while every other commits.
#[test]
fn a_failing_member_fails_alone_and_the_others_commit() {
    with_recorder(|snap| async move {
        let p =
            common::fresh_provider_configured("coalfail", |c| c.with_poll_mode(PollMode::PollOnly))
                .await;
        let schema = p.schema_name().to_string();
        let admin = PgPool::connect(&database_url()).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION \"{schema}\".refuse_c3() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'c3 refused' USING ERRCODE = '23514'; END $$;
         CREATE TRIGGER refuse_c3 BEFORE INSERT ON \"{schema}\".orchestrator_queue
         FOR EACH ROW WHEN (NEW.instance_id = 'c3') EXECUTE FUNCTION \"{schema}\".refuse_c3();"
        ))
        .execute(&admin)
        .await
        .unwrap();
        let tokens = leased(&p, ACKS, None).await;

        let results = ack_together(&p, &tokens).await;

        for (i, r) in results.iter().enumerate() {
            if i == 3 {
                let e = r.as_ref().unwrap_err();
                assert!(
                    e.message.contains("c3 refused") && e.message.contains("(SQLSTATE 23514)"),
                    "{e:?}"
                );
            } else {
                r.as_ref().unwrap_or_else(|e| panic!("member {i}: {e:?}"));
            }
        }
        let good: Vec<(String, u64)> = tokens.iter().filter(|(_, id)| *id != 3).cloned().collect();
        assert_eq!(completions(&admin, &schema).await, sorted_instances(&good));
        // The refused member's row is still leased to it: nothing of it applied.
        let left: Vec<String> =
            sqlx::query_scalar(&format!("SELECT lock_token FROM \"{schema}\".worker_queue"))
                .fetch_all(&admin)
                .await
                .unwrap();
        assert_eq!(left, [tokens[3].0.clone()]);
        let sizes = batch_sizes(&recorded(&snap));
        assert!(sizes.iter().any(|&s| s > 1.0), "no batch formed: {sizes:?}");
        p.cleanup_schema().await.unwrap();
    });
}

/// Four providers (four runtimes' worth of worker slots) ack activities of
/// the same sessions at once, each batch touching several of them in an
/// order its random lock tokens give. Batches lock worker rows in token
/// order and sessions in session order, so none deadlocks: no call of any
/// provider fails, not even the batch statements that a deadlock would fail
/// before their members are resent one by one.
#[test]
fn batches_on_shared_sessions_from_four_providers_never_deadlock() {
    with_recorder(|snap| async move {
        let first =
            common::fresh_provider_configured("coallock", |c| c.with_poll_mode(PollMode::PollOnly))
                .await;
        let schema = first.schema_name().to_string();
        let admin = PgPool::connect(&database_url()).await.unwrap();
        let mut providers = vec![first];
        for _ in 1..4 {
            let config = PostgresConfig::new(database_url())
                .with_schema(&schema)
                .with_poll_mode(PollMode::PollOnly);
            providers.push(PostgresProvider::connect(config).await.unwrap());
        }
        let sessions = ["s-a", "s-b", "s-c", "s-d"];
        const PER_PROVIDER: u64 = 8;
        const ROUNDS: u64 = 10;
        for round in 0..ROUNDS {
            let mut per_provider = Vec::new();
            for (n, p) in providers.iter().enumerate() {
                for k in 0..PER_PROVIDER {
                    let id = round * 1000 + n as u64 * 100 + k;
                    let session = sessions[k as usize % sessions.len()];
                    p.enqueue_for_worker(common::activity_item_in(
                        &format!("c{id}"),
                        id,
                        Some(session),
                        None,
                    ))
                    .await
                    .unwrap();
                }
                let mut tokens = Vec::new();
                for _ in 0..PER_PROVIDER {
                    tokens.push(lease_one(p, true).await);
                }
                per_provider.push(tokens);
            }
            let results = join_all(
                providers
                    .iter()
                    .zip(&per_provider)
                    .map(|(p, tokens)| ack_together(p, tokens)),
            )
            .await;
            for r in results.into_iter().flatten() {
                r.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            }
        }
        let recorded = recorded(&snap);
        let failed: Vec<String> = recorded
            .iter()
            .filter(|(key, _)| key.name() == m::ERRORS)
            .map(|(key, value)| format!("{key:?} {value:?}"))
            .collect();
        assert!(failed.is_empty(), "calls failed: {failed:?}");
        assert!(
            batch_sizes(&recorded).iter().any(|&s| s > 1.0),
            "no acks went out together"
        );
        assert_eq!(worker_rows(&admin, &schema).await, 0);
        let expected = usize::try_from(ROUNDS * 4 * PER_PROVIDER).unwrap();
        assert_eq!(completions(&admin, &schema).await.len(), expected);
        providers[0].cleanup_schema().await.unwrap();
    });
}

/// A batch never waits for a worker row another transaction holds. That
/// transaction (a cancellation or a delete taking several activities of one
/// instance, here a raw one) holds one member's row and then asks for the
/// row of a member the batch locks before it. Were the batch to wait, the
/// two would deadlock (40P01 after the deadlock timeout); instead the batch
/// leaves the held member to be sent alone, which waits safely.
#[test]
fn a_batch_never_waits_for_a_row_another_transaction_holds() {
    with_recorder(|snap| async move {
        let p = std::sync::Arc::new(
            common::fresh_provider_configured("coalheld", |c| c.with_poll_mode(PollMode::PollOnly))
                .await,
        );
        let schema = p.schema_name().to_string();
        let tokens = leased(&p, ACKS, None).await;
        // The first ALONE acks go out alone; the batch takes the rest in
        // token order. `first` is the batch's first row, `held` its last.
        let mut batch: Vec<&str> = tokens[ALONE..].iter().map(|(t, _)| t.as_str()).collect();
        batch.sort_unstable();
        let (first, held) = (batch[0].to_string(), batch[batch.len() - 1].to_string());

        let mut other = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        let other_pid = common::backend_pid(&mut other).await;
        let mut tx = other.begin().await.unwrap();
        let lock_row =
            format!("SELECT id FROM \"{schema}\".worker_queue WHERE lock_token = $1 FOR UPDATE");
        sqlx::query_scalar::<_, i64>(&lock_row)
            .bind(&held)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();

        let acks = tokio::spawn({
            let (p, tokens) = (std::sync::Arc::clone(&p), tokens.clone());
            async move { ack_together(&p, &tokens).await }
        });
        // Until an ack waits for the held row.
        let admin = PgPool::connect(&database_url()).await.unwrap();
        common::wait_for_waiters(&admin, other_pid, |n| n > 0, "an ack's wait").await;
        // The other transaction goes on to the batch's first row.
        sqlx::query_scalar::<_, i64>(&lock_row)
            .bind(&first)
            .fetch_optional(&mut *tx)
            .await
            .expect("the other transaction must not deadlock");
        tx.commit().await.unwrap();

        for r in acks.await.unwrap() {
            r.unwrap();
        }
        let recorded = recorded(&snap);
        let failed: Vec<String> = recorded
            .iter()
            .filter(|(key, _)| key.name() == m::ERRORS)
            .map(|(key, value)| format!("{key:?} {value:?}"))
            .collect();
        assert!(failed.is_empty(), "calls failed: {failed:?}");
        assert_eq!(worker_rows(&admin, &schema).await, 0);
        p.cleanup_schema().await.unwrap();
    });
}
