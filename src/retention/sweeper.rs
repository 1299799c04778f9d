//! The background sweeper of a provider built with a retention policy: a
//! task that tries a sweep at once and then every interval. Only the
//! sweeper holding the schema's sweep lease sweeps; the others find it held
//! and wait for their next turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::sweep::{Sweep, owner_name};
use crate::config::RetentionPolicy;
use crate::store::Store;

/// How long [`Sweeper::stop`] lets a batch in flight finish before it
/// abandons it (the lease then expires on its own).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running background sweeper; stopped by [`Sweeper::stop`] or on drop.
pub(crate) struct Sweeper {
    stopping: Arc<AtomicBool>,
    wake: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Sweeper {
    /// Starts sweeping `store` by `policy` (already validated).
    pub(crate) fn start(store: Store, policy: RetentionPolicy) -> Self {
        let stopping = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let (flag, woken) = (Arc::clone(&stopping), Arc::clone(&wake));
        let task = tokio::spawn(async move {
            let owner = owner_name("provider");
            let mut ticks = tokio::time::interval(policy.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = woken.notified() => {}
                }
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let sweep = Sweep {
                    store: &store,
                    policy: &policy,
                    owner: owner.clone(),
                    background: true,
                    dry_run: false,
                    stopping: Some(&flag),
                };
                // Failures are logged and counted by the sweep; the next
                // interval tries again.
                let _ = sweep.run().await;
            }
        });
        Self {
            stopping,
            wake,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops the sweeper: a sweep in progress ends after its current batch
    /// (recorded, lease released), waited for up to two seconds.
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let task = self.task.lock().expect("sweeper task").take();
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().expect("sweeper task").take() {
            task.abort();
        }
    }
}
