//! The background sweeper of a provider built with a retention policy: a
//! sweep at once and then every interval. Only the sweeper holding the
//! schema's sweep lease sweeps; the others find it held and wait for their
//! next turn.

use std::sync::Arc;

use super::sweep::{Sweep, owner_name};
use crate::background::Periodic;
use crate::config::RetentionPolicy;
use crate::store::Store;

/// Starts sweeping `store` by `policy` (already validated). A sweep in
/// progress when the task stops ends after its current batch (recorded,
/// lease released).
pub(crate) fn start(store: Store, policy: RetentionPolicy) -> Periodic {
    let owner = owner_name("provider");
    let (store, policy) = (Arc::new(store), Arc::new(policy));
    Periodic::start(policy.interval, move |stopping| {
        let (store, policy, owner) = (Arc::clone(&store), Arc::clone(&policy), owner.clone());
        async move {
            let sweep = Sweep {
                store: &store,
                policy: &policy,
                owner,
                background: true,
                dry_run: false,
                stopping: Some(&stopping),
            };
            // Failures are logged and counted by the sweep; the next
            // interval tries again.
            let _ = sweep.run().await;
        }
    })
}
