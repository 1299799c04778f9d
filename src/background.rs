//! [`Periodic`]: a provider's background task that runs a job at once and
//! then every interval until stopped (the retention sweeper, the queue
//! vacuum). Stopping lets a job in progress finish its current step.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long [`Periodic::stop`] lets a job in progress finish before it
/// abandons it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running periodic task; stopped by [`Periodic::stop`] or on drop.
pub(crate) struct Periodic {
    stopping: Arc<AtomicBool>,
    wake: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Periodic {
    /// Runs `job` at once and then every `interval` (start to start; a late
    /// run delays the next). The job gets the stop flag, to end early
    /// between its steps.
    pub(crate) fn start<F, Fut>(interval: Duration, mut job: F) -> Self
    where
        F: FnMut(Arc<AtomicBool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stopping = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let (flag, woken) = (Arc::clone(&stopping), Arc::clone(&wake));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = woken.notified() => {}
                }
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                job(Arc::clone(&flag)).await;
            }
        });
        Self {
            stopping,
            wake,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops the task: a job in progress sees the flag and is waited for up
    /// to two seconds, then abandoned.
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let task = self.task.lock().expect("periodic task").take();
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().expect("periodic task").take() {
            task.abort();
        }
    }
}
