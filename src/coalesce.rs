//! Group commit for provider calls: calls of one operation that arrive while
//! a statement of that operation is on the wire go out together as the next
//! statement (one stored-function call taking arrays, one round trip).
//!
//! Why: under load most of a call's cost is fixed per statement (parse, bind,
//! execute, snapshot, the wire), on the server and in the client; the rows a
//! call touches are a small part. Many callers of one process then share
//! one statement's cost.
//!
//! What a caller sees:
//! - **A lone call goes out at once**, as the single-member statement it
//!   always was: no timer, no task, the same errors. Only calls that find a
//!   statement of their operation already in flight wait, for that statement
//!   to end; they then go out together, at most [`Coalescer::MAX_MEMBERS`]
//!   per statement.
//! - **Nothing is older than the call.** A caller joins only a batch not yet
//!   sent, so what it reads was read after it asked.
//! - **Identical members are sent once** (several waiters of one instance),
//!   each getting a copy of the result.
//! - A statement that fails gives every member of it the same error a lone
//!   call would have got.
//!
//! A batch is sent by a task of its own, so a caller that stops waiting
//! (its future dropped) never strands the others.

use std::sync::{Arc, Mutex};

use duroxide::providers::ProviderError;
use futures_core::future::BoxFuture;
use tokio::sync::oneshot;

/// Sends the distinct members of one batch as one statement; one result per
/// member, in their order.
pub(crate) type SendMany<K, R> = Arc<dyn Fn(Vec<K>) -> Sent<R> + Send + Sync>;

/// A batch on its way: one result per member.
pub(crate) type Sent<R> = BoxFuture<'static, Result<Vec<R>, ProviderError>>;

type Reply<R> = oneshot::Sender<Result<R, ProviderError>>;

struct State<K, R> {
    /// Statements of this operation on the wire (or about to be).
    in_flight: usize,
    /// Calls waiting for the next statement.
    forming: Vec<(K, Reply<R>)>,
}

/// One operation's group commit (see the module doc).
pub(crate) struct Coalescer<K, R> {
    operation: &'static str,
    max_in_flight: usize,
    schema: String,
    state: Arc<Mutex<State<K, R>>>,
    send_many: SendMany<K, R>,
}

impl<K, R> Coalescer<K, R>
where
    K: PartialEq + Clone + Send + 'static,
    R: Clone + Send + 'static,
{
    /// Most members one statement carries: bounds the statement's size and
    /// its time on the server, far below any statement timeout.
    pub(crate) const MAX_MEMBERS: usize = 64;

    /// Statements of one operation on the wire at once before calls wait
    /// to go out together.
    pub(crate) const MAX_IN_FLIGHT: usize = 2;

    /// A coalescer for `operation` (its metrics name) that sends batches
    /// with `send_many`.
    pub(crate) fn new(operation: &'static str, schema: &str, send_many: SendMany<K, R>) -> Self {
        Self {
            operation,
            max_in_flight: Self::MAX_IN_FLIGHT,
            schema: schema.to_string(),
            state: Arc::new(Mutex::new(State {
                in_flight: 0,
                forming: Vec::new(),
            })),
            send_many,
        }
    }

    /// This coalescer with at most `n` statements on the wire at once.
    #[cfg(test)]
    fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// The result for `key`: from `alone` (the single-member call, run here
    /// at once) when no statement of this operation is in flight, else from
    /// the next batch.
    pub(crate) async fn call<F>(&self, key: K, alone: F) -> Result<R, ProviderError>
    where
        F: Future<Output = Result<R, ProviderError>>,
    {
        let waiting = {
            let mut state = self.state.lock().expect("coalescer state");
            if state.in_flight >= self.max_in_flight {
                let (tx, rx) = oneshot::channel();
                state.forming.push((key, tx));
                Some(rx)
            } else {
                state.in_flight += 1;
                None
            }
        };
        match waiting {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                // The sending task ended without answering: the runtime is
                // shutting down, or the task panicked (`Sender`).
                Err(ProviderError::retryable(
                    self.operation,
                    "the batch this call joined was not sent (its sending task ended: \
                     the runtime shutting down, or a panic)",
                ))
            }),
            None => {
                let _handover = Handover(self);
                crate::metrics::batch_members(&self.schema, self.operation, 1);
                alone.await
            }
        }
    }

    /// After a statement: sends what formed meanwhile (in a task of its
    /// own), or marks the operation idle.
    fn hand_over(&self) {
        let mut state = self.state.lock().expect("coalescer state");
        if state.forming.is_empty() {
            state.in_flight -= 1;
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to send from (a lone call dropped while its runtime
            // shuts down): the waiters are told their batch was not sent.
            state.forming.clear();
            state.in_flight -= 1;
            return;
        };
        drop(state);
        let (state, send_many) = (Arc::clone(&self.state), Arc::clone(&self.send_many));
        let (operation, schema) = (self.operation, self.schema.clone());
        runtime.spawn(async move {
            let mut sender = Sender {
                state: &state,
                idle: false,
            };
            while let Some(batch) = next_batch(sender.state) {
                send(batch, &send_many, operation, &schema).await;
            }
            sender.idle = true;
        });
    }
}

/// The index of 1-based `member` in a batch of `len` (as a `*_many`
/// function numbers its rows); a number outside the batch is the function's
/// bug, reported as a permanent error of `operation`.
pub(crate) fn member_index(
    operation: &str,
    len: usize,
    member: i32,
) -> Result<usize, ProviderError> {
    usize::try_from(member)
        .ok()
        .and_then(|m| m.checked_sub(1))
        .filter(|&i| i < len)
        .ok_or_else(|| {
            ProviderError::permanent(
                operation,
                format!("a batch of {len} members returned a row of member {member}"),
            )
        })
}

/// Runs [`Coalescer::hand_over`] when the lone call ends, however it ends
/// (its future may be dropped mid-call).
struct Handover<'c, K, R>(&'c Coalescer<K, R>)
where
    K: PartialEq + Clone + Send + 'static,
    R: Clone + Send + 'static;

impl<K, R> Drop for Handover<'_, K, R>
where
    K: PartialEq + Clone + Send + 'static,
    R: Clone + Send + 'static,
{
    fn drop(&mut self) {
        self.0.hand_over();
    }
}

/// The task sending an operation's batches. If it ends before the
/// operation is idle (it panicked, or its runtime shut down with it
/// mid-batch), the operation is marked idle here and the waiting calls are
/// told their batch was not sent: otherwise every later call would wait for
/// a statement that never ends.
struct Sender<'s, K, R> {
    state: &'s Mutex<State<K, R>>,
    idle: bool,
}

impl<K, R> Drop for Sender<'_, K, R> {
    fn drop(&mut self) {
        if self.idle {
            return;
        }
        // A panic elsewhere may have poisoned the lock; the state is still
        // consistent (every change under it is a single assignment).
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.forming.clear();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// The next batch to send (callers that stopped waiting left out), or
/// `None`, the operation marked idle, when nobody waits.
fn next_batch<K, R>(state: &Mutex<State<K, R>>) -> Option<Vec<(K, Reply<R>)>>
where
    K: PartialEq + Clone + Send + 'static,
    R: Clone + Send + 'static,
{
    let mut state = state.lock().expect("coalescer state");
    state.forming.retain(|(_, reply)| !reply.is_closed());
    if state.forming.is_empty() {
        state.in_flight -= 1;
        return None;
    }
    let take = state.forming.len().min(Coalescer::<K, R>::MAX_MEMBERS);
    Some(state.forming.drain(..take).collect())
}

/// Sends one batch, its identical members once, and answers every caller.
async fn send<K, R>(
    batch: Vec<(K, Reply<R>)>,
    send_many: &SendMany<K, R>,
    operation: &'static str,
    schema: &str,
) where
    K: PartialEq + Clone + Send + 'static,
    R: Clone + Send + 'static,
{
    let mut distinct: Vec<K> = Vec::with_capacity(batch.len());
    let slots: Vec<usize> = batch
        .iter()
        .map(|(key, _)| match distinct.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                distinct.push(key.clone());
                distinct.len() - 1
            }
        })
        .collect();
    crate::metrics::batch_members(schema, operation, distinct.len());
    let expected = distinct.len();
    let results = match send_many(distinct).await {
        Ok(results) if results.len() == expected => Ok(results),
        Ok(results) => Err(ProviderError::permanent(
            operation,
            format!(
                "a batch of {expected} members returned {} results",
                results.len()
            ),
        )),
        Err(e) => Err(e),
    };
    let mut results = match results {
        Ok(results) => results.into_iter().map(Some).collect::<Vec<_>>(),
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    // The last caller of each member takes its result; others get copies.
    let mut uses = vec![0usize; results.len()];
    for &slot in &slots {
        uses[slot] += 1;
    }
    for ((_, reply), slot) in batch.into_iter().zip(slots) {
        uses[slot] -= 1;
        let result = if uses[slot] == 0 {
            results[slot].take()
        } else {
            results[slot].clone()
        };
        // A caller that stopped waiting is simply not answered.
        if let Some(result) = result {
            let _ = reply.send(Ok(result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Sizes = Arc<Mutex<Vec<usize>>>;

    /// A coalescer whose batches double their members (or fail with
    /// `failure`), recording each statement's size.
    fn doubler(sizes: &Sizes, failure: Option<ProviderError>) -> Arc<Coalescer<u32, u32>> {
        doubler_with(1, sizes, failure)
    }

    fn doubler_with(
        max_in_flight: usize,
        sizes: &Sizes,
        failure: Option<ProviderError>,
    ) -> Arc<Coalescer<u32, u32>> {
        let sizes = Arc::clone(sizes);
        Arc::new(
            Coalescer::new(
                "test",
                "test",
                Arc::new(move |keys: Vec<u32>| -> Sent<u32> {
                    sizes.lock().unwrap().push(keys.len());
                    let result = match &failure {
                        Some(e) => Err(e.clone()),
                        None => Ok(keys.iter().map(|k| k * 2).collect()),
                    };
                    Box::pin(async move { result })
                }),
            )
            .with_max_in_flight(max_in_flight),
        )
    }

    /// Starts a lone call of `key` that stays on the wire until the returned
    /// sender fires (or is dropped), and waits until it is in flight.
    async fn lead(
        c: &Arc<Coalescer<u32, u32>>,
        key: u32,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<u32, ProviderError>>,
    ) {
        let (release, gate) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let c = Arc::clone(c);
            async move {
                c.call(key, async move {
                    let _ = gate.await;
                    Ok(key * 2)
                })
                .await
            }
        });
        let before = c.state.lock().unwrap().in_flight;
        while c.state.lock().unwrap().in_flight == before {
            tokio::task::yield_now().await;
        }
        (release, task)
    }

    /// Calls that find a statement in flight, started once it is, and
    /// waited for until all have joined the forming batch.
    async fn followers(
        c: &Arc<Coalescer<u32, u32>>,
        keys: &[u32],
        alone_calls: &Arc<AtomicUsize>,
    ) -> Vec<(u32, tokio::task::JoinHandle<Result<u32, ProviderError>>)> {
        let tasks = keys
            .iter()
            .map(|&k| {
                let (c, calls) = (Arc::clone(c), Arc::clone(alone_calls));
                let task = tokio::spawn(async move {
                    c.call(k, async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(k * 2)
                    })
                    .await
                });
                (k, task)
            })
            .collect();
        while c.state.lock().unwrap().forming.len() < keys.len() {
            tokio::task::yield_now().await;
        }
        tasks
    }

    #[tokio::test]
    async fn a_lone_call_goes_out_alone_and_at_once() {
        let sizes = Sizes::default();
        let c = doubler(&sizes, None);
        for k in 0..3 {
            assert_eq!(c.call(k, async move { Ok(k * 2) }).await, Ok(k * 2));
        }
        assert!(sizes.lock().unwrap().is_empty(), "no batch was sent");
        assert_eq!(c.state.lock().unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn calls_during_a_statement_go_out_together_identical_ones_once() {
        let sizes = Sizes::default();
        let c = doubler(&sizes, None);
        let alone_calls = Arc::new(AtomicUsize::new(0));
        let (release, lead) = lead(&c, 100).await;
        let followers = followers(&c, &[1, 2, 2, 3, 1], &alone_calls).await;
        release.send(()).unwrap();
        assert_eq!(lead.await.unwrap(), Ok(200));
        for (k, f) in followers {
            assert_eq!(f.await.unwrap(), Ok(k * 2));
        }
        assert_eq!(
            alone_calls.load(Ordering::SeqCst),
            0,
            "only the lead went alone"
        );
        assert_eq!(
            *sizes.lock().unwrap(),
            [3],
            "one statement, distinct members"
        );
        assert_eq!(c.state.lock().unwrap().in_flight, 0, "idle again");
    }

    #[tokio::test]
    async fn more_than_the_bound_go_out_in_several_statements() {
        let sizes = Sizes::default();
        let c = doubler(&sizes, None);
        let max = Coalescer::<u32, u32>::MAX_MEMBERS as u32;
        let (release, lead) = lead(&c, 0).await;
        let keys: Vec<u32> = (1..=max + 5).collect();
        let followers = followers(&c, &keys, &Arc::default()).await;
        release.send(()).unwrap();
        lead.await.unwrap().unwrap();
        for (k, f) in followers {
            assert_eq!(f.await.unwrap(), Ok(k * 2));
        }
        assert_eq!(*sizes.lock().unwrap(), [max as usize, 5]);
    }

    #[tokio::test]
    async fn up_to_the_in_flight_bound_calls_go_alone() {
        let sizes = Sizes::default();
        let c = doubler_with(2, &sizes, None);
        let (release_a, a) = lead(&c, 1).await;
        let (release_b, b) = lead(&c, 2).await;
        let followers = followers(&c, &[3, 4], &Arc::default()).await;
        release_a.send(()).unwrap();
        release_b.send(()).unwrap();
        assert_eq!((a.await.unwrap(), b.await.unwrap()), (Ok(2), Ok(4)));
        for (k, f) in followers {
            assert_eq!(f.await.unwrap(), Ok(k * 2));
        }
        assert_eq!(
            *sizes.lock().unwrap(),
            [2],
            "the third and fourth waited, together"
        );
        assert_eq!(c.state.lock().unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn a_dropped_lead_does_not_strand_the_waiters() {
        let sizes = Sizes::default();
        let c = doubler(&sizes, None);
        let (_release, lead) = lead(&c, 9).await;
        let followers = followers(&c, &[4], &Arc::default()).await;
        lead.abort();
        for (k, f) in followers {
            assert_eq!(f.await.unwrap(), Ok(k * 2));
        }
        assert_eq!(*sizes.lock().unwrap(), [1]);
    }

    #[tokio::test]
    async fn a_sending_task_that_panics_leaves_the_operation_usable() {
        let c = Arc::new(
            Coalescer::new(
                "test",
                "test",
                Arc::new(|_: Vec<u32>| -> Sent<u32> { Box::pin(async { panic!("send failed") }) }),
            )
            .with_max_in_flight(1),
        );
        let (release, lead) = lead(&c, 1).await;
        let followers = followers(&c, &[2, 3], &Arc::default()).await;
        release.send(()).unwrap();
        assert_eq!(lead.await.unwrap(), Ok(2));
        for (_, f) in followers {
            let e = f.await.unwrap().unwrap_err();
            assert!(e.message.contains("not sent"), "{e:?}");
        }
        // Idle again: the next call goes out alone instead of waiting for a
        // statement that will never end.
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.call(5, async { Ok(10) }),
        )
        .await
        .expect("the call after the panic went out");
        assert_eq!(next, Ok(10));
        assert_eq!(c.state.lock().unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_member_with_its_error() {
        let sizes = Sizes::default();
        let c = doubler(
            &sizes,
            Some(ProviderError::retryable("test", "server gone")),
        );
        let (release, lead) = lead(&c, 1).await;
        let followers = followers(&c, &[2, 3], &Arc::default()).await;
        release.send(()).unwrap();
        assert_eq!(lead.await.unwrap(), Ok(2));
        for (_, f) in followers {
            let e = f.await.unwrap().unwrap_err();
            assert!(e.retryable && e.message == "server gone", "{e:?}");
        }
    }
}
