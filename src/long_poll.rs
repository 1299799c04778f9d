//! Long polling: fetches that wait for work instead of returning at once.
//!
//! One dedicated `LISTEN` connection per provider receives the wake-up hints
//! the stored functions send at commit (`notify_work`: queue letter and item
//! count) and wakes that many waiting fetches. A waiting fetch also wakes at
//! the next delayed item's visible time (reported by the fetch function
//! itself) and, in case a hint was lost, after a bounded fallback interval.
//! Hints are never trusted: a woken fetch simply runs its query again.
//!
//! A hint says that work exists, not who may take it: session ownership (each
//! runtime slot owns its sessions), tag filters, the capability filter, a
//! lease held elsewhere, or the runtime's session cap (which changes a
//! fetch's arguments between calls) can make the woken waiter the wrong one.
//! So a hint is never consumed by a waiter that leases nothing: that waiter
//! passes it on to every other waiting fetch of the queue (each looks once)
//! and returns to its caller, which calls again with arguments it may have
//! changed meanwhile. Whatever decides eligibility, a hint reaches every
//! waiter that could take the work, at the cost of one wasted query per
//! waiter when the first one woken could not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use duroxide::providers::ProviderError;
use futures_core::future::BoxFuture;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::codes::{Hint, Queue};

/// A fetch that passed over work another transaction held for a moment
/// reports a wake time this close (`fetch_orchestration_item`,
/// `fetch_work_item`): look again then.
const CONTENDED_MS: i64 = 1;

/// How many waiters one hint may wake (bounds the work of a huge batch).
const MAX_WAKE_PER_HINT: u32 = 64;

/// Outcome of one fetch attempt.
pub(crate) enum Attempt<T> {
    /// Work was leased.
    Found(T),
    /// Nothing ready; something may become visible at this time (ms since epoch).
    Empty { wake_at: Option<i64> },
}

/// Wake-up state of one queue.
#[derive(Default)]
struct QueueWakeups {
    /// Work became visible now: wakes as many waiters as items.
    work: Notify,
    /// A waiter woken for work it could not take passed the hint on: every
    /// waiter registered now looks once.
    passed_on: Notify,
    /// `later_at` changed: waiters recompute when to wake.
    reschedule: Notify,
    /// Earliest announced future visible time (ms since epoch; 0 = none).
    later_at: AtomicI64,
}

impl QueueWakeups {
    /// Records that something becomes visible at `at` (keeps the earliest
    /// time still in the future) and tells waiters to recompute.
    fn later(&self, at: i64) {
        let now = now_ms();
        let mut current = self.later_at.load(Ordering::Acquire);
        while current == 0 || current <= now || at < current {
            match self
                .later_at
                .compare_exchange(current, at, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.reschedule.notify_waiters();
    }

    /// The announced future visible time, if it is still ahead.
    fn later_at(&self) -> Option<i64> {
        let at = self.later_at.load(Ordering::Acquire);
        (at > now_ms()).then_some(at)
    }
}

#[derive(Default)]
struct Wakeups {
    orchestrator: QueueWakeups,
    worker: QueueWakeups,
    /// A worker fetch with a session configuration began: fetches waiting
    /// without one (the runtime was at its session cap when it called them)
    /// return, so their callers decide again.
    sessions_resumed: Notify,
}

impl Wakeups {
    fn of(&self, queue: Queue) -> &QueueWakeups {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    fn wake_all(&self) {
        for q in [&self.orchestrator, &self.worker] {
            q.work.notify_waiters();
        }
    }

    /// Applies one hint ([`Hint`]): items visible now wake as many waiters
    /// (a count that did not parse wakes one; a huge one is bounded), a
    /// future visible time reschedules the waiters.
    fn apply(&self, payload: &str) {
        match Hint::parse(payload) {
            Some(Hint::Ready { queue, count }) => {
                let count = count.unwrap_or(1).clamp(1, MAX_WAKE_PER_HINT);
                for _ in 0..count {
                    self.of(queue).work.notify_one();
                }
            }
            Some(Hint::Later { queue, at }) => self.of(queue).later(at),
            Some(Hint::Heartbeat) | None => {}
        }
    }
}

/// Opens a fresh `LISTEN` connection (not subscribed yet), where the call
/// pool's new connections go now and with the current password.
pub(crate) type OpenListener =
    Arc<dyn Fn() -> BoxFuture<'static, Result<PgListener, sqlx::Error>> + Send + Sync>;

/// Sends one [`Hint::Heartbeat`] through the call pool (bounded like any
/// call; its outcome shows only in whether the listener hears it).
pub(crate) type SendHeartbeat = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// When the listener last heard anything (a hint or a heartbeat).
struct Heard(std::sync::Mutex<Instant>);

impl Heard {
    fn now() -> Self {
        Self(std::sync::Mutex::new(Instant::now()))
    }

    fn last(&self) -> Instant {
        *self.0.lock().expect("heard")
    }

    fn touch(&self) {
        *self.0.lock().expect("heard") = Instant::now();
    }
}

/// The listener task, its heartbeat and the waiters it wakes; stops both
/// tasks when dropped.
pub(crate) struct LongPoll {
    wakeups: Arc<Wakeups>,
    tasks: [JoinHandle<()>; 2],
    /// The provider's schema: the `schema` label of the wake-up metrics.
    schema: String,
    /// Longest a waiting fetch goes without re-checking the tables.
    fallback: Duration,
}

impl LongPoll {
    /// A worker fetch with a session configuration is starting: the caller is
    /// below its session cap, so fetches waiting without sessions (called
    /// while the cap was reached) return to let their callers decide again.
    ///
    /// Why here: the runtime frees a session slot after the ack, without a
    /// provider call; the freeing slot's next fetch is the first sign of it.
    pub(crate) fn sessions_resumed(&self) {
        self.wakeups.sessions_resumed.notify_waiters();
    }

    /// Stops listening: the tasks and the listener's connection end now.
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long the listener may hear nothing before a heartbeat is sent: a
/// quarter of the fallback poll. A listener that then hears nothing for
/// another quarter is replaced, so a silently dead one is gone within half
/// the fallback poll (5 s by default). At idle this costs one statement per
/// quarter of the fallback; under load hints flow and it costs nothing.
fn heartbeat_after(fallback: Duration) -> Duration {
    (fallback / 4).max(Duration::from_millis(50))
}

impl LongPoll {
    /// Subscribes `listener` (connected) to `channel`, starts waking waiters
    /// from what it receives, and keeps it alive: reconnected through `open`
    /// when its connection drops or goes silent (a heartbeat sent by `beat`
    /// was not heard).
    pub(crate) async fn start(
        mut listener: PgListener,
        open: OpenListener,
        beat: SendHeartbeat,
        channel: &str,
        schema: &str,
        fallback: Duration,
    ) -> Result<Self, sqlx::Error> {
        let quiet = heartbeat_after(fallback);
        subscribe(&mut listener, channel, quiet * 2).await?;
        let wakeups = Arc::new(Wakeups::default());
        let heard = Arc::new(Heard::now());
        let listening = Listening {
            open,
            channel: channel.to_owned(),
            wakeups: Arc::clone(&wakeups),
            heard: Arc::clone(&heard),
            silent_after: quiet * 2,
        };
        let tasks = [
            tokio::spawn(listening.run(listener)),
            tokio::spawn(heartbeat(heard, quiet, beat)),
        ];
        Ok(Self {
            wakeups,
            tasks,
            schema: schema.to_owned(),
            fallback,
        })
    }
}

/// `LISTEN` on `channel`, within `limit` (the connection may be silent).
async fn subscribe(
    listener: &mut PgListener,
    channel: &str,
    limit: Duration,
) -> Result<(), sqlx::Error> {
    tokio::time::timeout(limit, listener.listen(channel))
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("LISTEN got no answer within {limit:?}"),
            )))
        })
}

/// Sends a heartbeat whenever the listener has heard nothing for `quiet`,
/// at most one per `quiet`. A heartbeat still unanswered after `quiet` is
/// abandoned (its connection discarded), so a silent call pool without a
/// statement timeout cannot stop the heartbeats.
async fn heartbeat(heard: Arc<Heard>, quiet: Duration, beat: SendHeartbeat) {
    loop {
        let due = heard.last() + quiet;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            continue;
        }
        let sent = Instant::now();
        let _ = tokio::time::timeout(quiet, beat()).await;
        tokio::time::sleep_until(sent + quiet).await;
    }
}

/// The receiving side of the listener.
struct Listening {
    open: OpenListener,
    channel: String,
    wakeups: Arc<Wakeups>,
    heard: Arc<Heard>,
    /// Hearing nothing this long (not even a heartbeat) means the listener's
    /// connection went silent.
    silent_after: Duration,
}

impl Listening {
    /// Receives hints until stopped, replacing the listener whenever its
    /// connection drops, fails or goes silent. Hints may have been lost
    /// meanwhile, so every waiter then looks again.
    async fn run(self, mut listener: PgListener) {
        loop {
            let silent_at = self.heard.last() + self.silent_after;
            let lost = match tokio::time::timeout_at(silent_at, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    self.heard.touch();
                    self.wakeups.apply(notification.payload());
                    continue;
                }
                Ok(Ok(None)) => "lost its connection".to_string(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => format!("heard nothing for {:?}", self.silent_after),
            };
            tracing::warn!(
                target: "duroxide_pg",
                "duroxide-pg wake-up listener {lost}; replacing it"
            );
            // Dropped, not closed: a silent connection would not answer.
            drop(listener);
            listener = self.replacement().await;
        }
    }

    /// A new listener subscribed to the channel, retried with backoff.
    async fn replacement(&self) -> PgListener {
        let mut backoff = Duration::from_millis(100);
        loop {
            self.wakeups.wake_all();
            let opened = match (self.open)().await {
                Ok(mut listener) => subscribe(&mut listener, &self.channel, self.silent_after)
                    .await
                    .map(|()| listener),
                Err(e) => Err(e),
            };
            match opened {
                Ok(listener) => {
                    self.heard.touch();
                    // Work that became visible while nobody listened.
                    self.wakeups.wake_all();
                    return listener;
                }
                Err(e) => {
                    tracing::warn!(target: "duroxide_pg", error = %e, "duroxide-pg wake-up listener could not reconnect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Why a waiting fetch looks at the tables again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    /// A hint was handed to this waiter.
    Hint,
    /// The hint has been passed on to every waiter: by another waiter that
    /// could not use it, or by this one.
    PassedOn,
}

/// Completes when `notified` does; never when there is none.
async fn or_never(notified: Option<Pin<&mut Notified<'_>>>) {
    match notified {
        Some(n) => n.await,
        None => std::future::pending().await,
    }
}

/// Which waiting fetches a fetch is, for the wake-ups that concern only some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// Any fetch not listed below.
    Plain,
    /// A worker fetch without a session configuration: returns when a fetch
    /// with one starts ([`LongPoll::sessions_resumed`]).
    WithoutSessions,
}

/// Runs `attempt` until it finds work or `poll_timeout` has passed. Without a
/// listener (poll-only mode) or with a zero timeout, tries exactly once.
///
/// A fetch woken by a hint (or a passed-on hint) that then leases nothing
/// returns `Ok(None)` at once instead of waiting again; one woken by its own
/// hint first passes it on (see the module doc).
pub(crate) async fn poll<T, F, Fut>(
    long_poll: Option<&LongPoll>,
    queue: Queue,
    waiter: Waiter,
    poll_timeout: Duration,
    mut attempt: F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, ProviderError>>,
{
    let deadline = Instant::now() + poll_timeout;
    let mut woken: Option<Woken> = None;
    loop {
        // Register before querying, so a hint sent after the query's snapshot
        // but before the wait starts is not missed.
        let wakeups = long_poll.map(|lp| lp.wakeups.of(queue));
        let work = wakeups.map(|w| w.work.notified());
        let passed_on = wakeups.map(|w| w.passed_on.notified());
        let resumed = long_poll
            .filter(|_| waiter == Waiter::WithoutSessions)
            .map(|lp| lp.wakeups.sessions_resumed.notified());
        let mut work = std::pin::pin!(work);
        let mut passed_on = std::pin::pin!(passed_on);
        let mut resumed = std::pin::pin!(resumed);
        for n in [
            work.as_mut().as_pin_mut(),
            passed_on.as_mut().as_pin_mut(),
            resumed.as_mut().as_pin_mut(),
        ]
        .into_iter()
        .flatten()
        {
            n.enable();
        }
        let outcome = attempt().await;
        if !matches!(outcome, Ok(Attempt::Found(_)))
            && woken == Some(Woken::Hint)
            && let (Some(w), Some(lp)) = (wakeups, long_poll)
        {
            // The hint was for work this fetch may not take (or its query
            // failed): everyone else looks, whatever filter decided it.
            w.passed_on.notify_waiters();
            crate::metrics::wakeup(&lp.schema, queue, "passed_on");
            // Once: a look again after contention must not wake them all again.
            woken = Some(Woken::PassedOn);
        }
        let wake_at = match outcome? {
            Attempt::Found(found) => return Ok(Some(found)),
            Attempt::Empty { wake_at } => wake_at,
        };
        let (Some(wakeups), Some(lp), Some(work), Some(passed_on)) = (
            wakeups,
            long_poll,
            work.as_mut().as_pin_mut(),
            passed_on.as_mut().as_pin_mut(),
        ) else {
            return Ok(None);
        };
        // Woken for work and found none: the caller decides what to fetch
        // next (the runtime's session cap, for one, changes its arguments).
        // Unless the fetch passed over work another transaction held for a
        // moment (a wake time a millisecond away): then it looks again here,
        // since a caller may sleep its minimum poll interval first.
        let contended = wake_at.is_some_and(|at| at <= now_ms() + CONTENDED_MS);
        if (woken.is_some() && !contended) || Instant::now() >= deadline {
            return Ok(None);
        }
        match wait_for_work(
            lp,
            queue,
            wakeups,
            work,
            passed_on,
            resumed.as_mut().as_pin_mut(),
            wake_at,
            deadline,
            &mut woken,
        )
        .await
        {
            WaitEnd::LookAgain => {}
            WaitEnd::ArgumentsStale => return Ok(None),
        }
    }
}

/// How a wait for work ended.
enum WaitEnd {
    /// Query again: work was announced, a timer is due, or the wait timed out.
    LookAgain,
    /// The caller's arguments are stale: it returns empty without a query,
    /// and calls again with new ones.
    ArgumentsStale,
}

/// Waits for work, for the earliest known future item, for the fallback poll
/// or for the caller's deadline, whichever comes first. An announced future
/// item only moves the alarm: it costs no query. Records in `woken` whether a
/// hint was handed to this waiter, and counts the wake-up's reason.
#[allow(clippy::too_many_arguments)]
async fn wait_for_work(
    lp: &LongPoll,
    queue: Queue,
    wakeups: &QueueWakeups,
    mut work: Pin<&mut Notified<'_>>,
    mut passed_on: Pin<&mut Notified<'_>>,
    mut resumed: Option<Pin<&mut Notified<'_>>>,
    wake_at: Option<i64>,
    deadline: Instant,
    woken: &mut Option<Woken>,
) -> WaitEnd {
    let fallback = Instant::now() + lp.fallback;
    let reason = loop {
        let reschedule = wakeups.reschedule.notified();
        let mut reschedule = std::pin::pin!(reschedule);
        reschedule.as_mut().enable();
        let (until, reason) = alarm(fallback, deadline, [wake_at, wakeups.later_at()]);
        tokio::select! {
            () = work.as_mut() => {
                *woken = Some(Woken::Hint);
                break Some("notification");
            }
            () = passed_on.as_mut() => {
                *woken = Some(Woken::PassedOn);
                break None;
            }
            () = or_never(resumed.as_mut().map(Pin::as_mut)) => {
                crate::metrics::wakeup(&lp.schema, queue, "sessions_resumed");
                return WaitEnd::ArgumentsStale;
            }
            () = reschedule => {}
            () = tokio::time::sleep_until(until) => break reason,
        }
    };
    // `None`: the poll timeout ended the wait (the last look follows), or a
    // passed-on hint (counted once, by the waiter that passed it on).
    if let Some(reason) = reason {
        crate::metrics::wakeup(&lp.schema, queue, reason);
    }
    WaitEnd::LookAgain
}

/// When a waiter wakes by itself, and the wake-up reason to count: the
/// fallback poll, or the earliest known future item (`at`, ms since the
/// epoch), whichever is first, unless the caller's deadline comes before
/// both (no reason: the last look is not a wake-up).
fn alarm(
    fallback: Instant,
    deadline: Instant,
    at: [Option<i64>; 2],
) -> (Instant, Option<&'static str>) {
    let (mut until, mut reason) = if fallback < deadline {
        (fallback, Some("fallback_poll"))
    } else {
        (deadline, None)
    };
    for at in at.into_iter().flatten() {
        let in_ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
        let at = Instant::now() + Duration::from_millis(in_ms);
        if at < until {
            (until, reason) = (at, Some("timer"));
        }
    }
    (until, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hint_wakes_as_many_waiters_as_items() {
        let w = Wakeups::default();
        let a = w.worker.work.notified();
        let b = w.worker.work.notified();
        let mut a = std::pin::pin!(a);
        let mut b = std::pin::pin!(b);
        a.as_mut().enable();
        b.as_mut().enable();
        w.apply("w2");
        tokio::time::timeout(Duration::from_millis(100), a)
            .await
            .expect("first waiter woken");
        tokio::time::timeout(Duration::from_millis(100), b)
            .await
            .expect("second waiter woken");
    }

    #[tokio::test]
    async fn hint_for_one_queue_leaves_the_other_asleep() {
        let w = Wakeups::default();
        let o = w.orchestrator.work.notified();
        let mut o = std::pin::pin!(o);
        o.as_mut().enable();
        w.apply("w1");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), o)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn later_hint_keeps_the_earliest_future_time_and_reschedules() {
        let w = Wakeups::default();
        let r = w.orchestrator.reschedule.notified();
        let mut r = std::pin::pin!(r);
        r.as_mut().enable();
        let soon = now_ms() + 5_000;
        w.apply(&format!("o@{}", soon + 1_000));
        w.apply(&format!("o@{soon}"));
        w.apply(&format!("o@{}", soon + 2_000));
        assert_eq!(w.orchestrator.later_at(), Some(soon));
        assert_eq!(w.worker.later_at(), None);
        tokio::time::timeout(Duration::from_millis(100), r)
            .await
            .expect("waiters told to reschedule");
        // A time already past is replaced by the next announcement.
        w.apply(&format!("w@{}", now_ms() - 10));
        assert_eq!(w.worker.later_at(), None);
        w.apply(&format!("w@{soon}"));
        assert_eq!(w.worker.later_at(), Some(soon));
    }

    #[test]
    fn malformed_payloads_are_ignored_or_bounded() {
        let w = Wakeups::default();
        w.apply("");
        w.apply("x5");
        w.apply("o999999"); // clamped, must not spin for long
        w.apply("o@notanumber");
    }
}
