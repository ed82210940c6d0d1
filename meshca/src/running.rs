//! [`Running`]: the library started, owning its background work.

use std::sync::Arc;

use ca_core::{Error, Identity};
use tokio::task::JoinHandle;

use crate::manager::{Manager, ManagerBuilder};
use crate::rotation::scheduler::{spawn_task, Scheduler};
use crate::rotation::WatchReceiver;

/// A started [`Manager`] (see [`ManagerBuilder::start`](crate::ManagerBuilder::start)): it owns
/// the rotation scheduler and the background work — trust-bundle refresh, completion of CA
/// switches, backend health — and stops all of it on [`shutdown`](Self::shutdown) or when
/// dropped.
#[derive(Debug)]
pub struct Running {
    manager: Arc<Manager>,
    scheduler: Scheduler,
    tasks: Vec<JoinHandle<()>>,
}

impl ManagerBuilder {
    /// Builds the manager and starts, on the current tokio runtime, everything it needs running:
    /// the rotation scheduler and the background work (bundle refresh, CA switch completion,
    /// health). The returned [`Running`] owns them and stops them on shutdown or drop.
    pub fn start(self) -> Running {
        let (rotation, housekeeping, bundle_refresh) =
            (self.rotation, self.housekeeping, self.bundle_refresh);
        let manager = Arc::new(self.build());
        let (scheduler, scheduled) = spawn_task(manager.clone(), rotation);
        let background = tokio::spawn(manager.clone().run(housekeeping, bundle_refresh));
        Running {
            manager,
            scheduler,
            tasks: vec![scheduled, background],
        }
    }
}

impl Running {
    /// The manager: apply Meshes, validate, issue.
    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    /// The rotation scheduler (for callers that already hold a first certificate).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Watches `identity`: issues its first certificate (certifying the key of `csr`, or with a
    /// key meshca generates), and the receiver gets it at once, then a new one before each expiry
    /// and whenever the mesh's CA changes. Dropping the receiver ends the watch.
    ///
    /// # Errors
    /// What [`Manager::issue`] returns for the first certificate;
    /// [`ManagerError::Stopped`](ca_core::ManagerError::Stopped) when
    /// the scheduler has stopped.
    pub async fn watch(
        &self,
        identity: Identity,
        csr: Option<Vec<u8>>,
    ) -> Result<WatchReceiver, Error> {
        let first = self.manager.issue(identity.clone(), csr.as_deref()).await?;
        self.scheduler.watch(identity, csr, first)
    }

    /// Stops the background work and the scheduler (open watches end) and waits for them.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            // A task that was aborted answers a cancellation error: what we asked for.
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
