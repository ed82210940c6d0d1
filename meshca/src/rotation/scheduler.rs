//! The scheduler: one `DelayQueue` entry per watched identity (not one task each), a re-issue
//! pushed to the watcher before each expiry and whenever the mesh's CA changes, backoff on failure
//! while the watcher keeps its current certificate.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca_core::{Error, IdempotencyKey, Identity, ManagerError};
use rand::RngExt as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::time::{delay_queue, DelayQueue};

use super::channel::{watch_channel, WatchSender};
use super::{Rotated, RotationPolicy, RotationReason, WatchReceiver};
use crate::guard::{lock, BackendKey, Guard};
use crate::manager::{Issued, Manager, Snapshot};

/// A new watcher, registered after its first certificate.
#[derive(Debug)]
pub struct Watch {
    identity: Identity,
    csr: Option<Vec<u8>>,
    first_not_before: SystemTime,
    first_not_after: SystemTime,
    first_effective_not_after: SystemTime,
    rotate_at: SystemTime,
    backend: String,
    generation: u64,
    out: WatchSender,
}

/// Handle to the scheduler task.
#[derive(Clone, Debug)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Watch>,
    policy: RotationPolicy,
}

impl Scheduler {
    /// Watches `identity`, whose first certificate is `first` (from [`Manager::issue`], with
    /// `csr` when the caller keeps its key): the receiver gets `first` at once (reason
    /// [`RotationReason::Initial`]), then a new certificate before each expiry and whenever the
    /// mesh's CA changes. Dropping the receiver ends the watch.
    ///
    /// # Errors
    /// [`ManagerError::Stopped`](ca_core::ManagerError::Stopped) when the scheduler has stopped.
    pub fn watch(
        &self,
        identity: Identity,
        csr: Option<Vec<u8>>,
        first: Issued,
    ) -> Result<WatchReceiver, Error> {
        // The first certificate must be this identity's: the rotations that follow re-issue
        // `identity`, and a watcher must never get one identity's certificate, then another's.
        if first.certificate.identity() != &identity {
            return Err(Error::invalid_argument(
                "first",
                format!(
                    "is a certificate of {}, not of the watched {identity}",
                    first.certificate.identity()
                ),
            ));
        }
        let (tx, rx) = watch_channel();
        let rotate_at = self.policy.rotate_at(&first.certificate);
        let watch = Watch {
            identity,
            csr,
            first_not_before: first.certificate.not_before(),
            first_not_after: first.certificate.not_after(),
            first_effective_not_after: first.certificate.effective_not_after(),
            rotate_at,
            backend: first.backend.name.to_string(),
            generation: first.mesh.generation,
            out: tx,
        };
        let trust_bundle_pem = first.trust_bundle_pem();
        let initial = Rotated {
            rotate_at,
            backend: first.backend.name.to_string(),
            trust_bundle_pem,
            certificate: first.certificate,
            reason: RotationReason::Initial,
        };
        // The receiver is right here: this cannot fail.
        let _ = watch.out.push(Ok(Box::new(initial)));
        self.tx.send(watch).map_err(|_| {
            Error::from(ManagerError::Stopped {
                what: "the rotation scheduler",
            })
        })?;
        Ok(rx)
    }

    /// The policy certificates are rotated by.
    pub fn policy(&self) -> RotationPolicy {
        self.policy
    }
}

#[derive(Debug)]
struct Entry {
    /// Compact (about a hundred bytes): kept for as long as the watch lives.
    identity: Identity,
    /// Shared with the issue task instead of copied for every rotation.
    csr: Option<Arc<[u8]>>,
    out: WatchSender,
    backend: String,
    generation: u64,
    not_after: SystemTime,
    lifetime: Duration,
    key: Option<delay_queue::Key>,
    /// The idempotency key of the rotation under way, the same for all its retries; `None`
    /// between rotations.
    request: Option<IdempotencyKey>,
    attempt: u32,
    in_flight: bool,
    /// Due, waiting in its backend's lane for an issue slot.
    waiting: bool,
}

/// A re-issue that went through.
#[derive(Debug)]
struct Pushed {
    msg: Box<Rotated>,
    backend: String,
    generation: u64,
    serial: String,
    not_after: SystemTime,
    lifetime: Duration,
    at: SystemTime,
}

#[derive(Debug)]
struct Done {
    id: u64,
    lane: BackendKey,
    result: Result<Pushed, Error>,
}

/// Due watchers of one backend beyond its concurrency limit wait here (FIFO) instead of as
/// spawned tasks parked on the issuer's semaphore: a rotation wave then costs a queue slot per
/// identity, not a task with a whole issue future.
#[derive(Debug, Default)]
struct Lane {
    in_flight: usize,
    waiting: VecDeque<u64>,
}

/// Starts the scheduler task (on the current tokio runtime) for the meshes of `manager`. The task
/// ends when every [`Scheduler`] handle is dropped.
/// [`ManagerBuilder::start`](crate::ManagerBuilder::start)
/// starts it with the manager's other background work and owns all of it.
pub fn spawn(manager: Arc<Manager>, policy: RotationPolicy) -> Scheduler {
    spawn_task(manager, policy).0
}

/// [`spawn`], with the task's handle.
pub(crate) fn spawn_task(
    manager: Arc<Manager>,
    policy: RotationPolicy,
) -> (Scheduler, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Loop {
        issuer: manager.guard().clone(),
        manager,
        policy,
        entries: HashMap::new(),
        queue: DelayQueue::new(),
        lanes: HashMap::new(),
        next_id: 0,
    };
    let handle = tokio::spawn(task.run(rx));
    (Scheduler { tx, policy }, handle)
}

struct Loop {
    manager: Arc<Manager>,
    issuer: Arc<Guard>,
    policy: RotationPolicy,
    entries: HashMap<u64, Entry>,
    queue: DelayQueue<u64>,
    lanes: HashMap<BackendKey, Lane>,
    next_id: u64,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Watch>) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut meshes = self.manager.subscribe();
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                w = rx.recv() => match w {
                    Some(w) => self.add(w),
                    None => return,
                },
                Some(expired) = self.queue.next(), if !self.queue.is_empty() => {
                    let id = expired.into_inner();
                    self.fire(id, &done_tx);
                }
                Some(done) = done_rx.recv() => self.done(done, &done_tx),
                changed = meshes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snap = meshes.borrow_and_update().clone();
                    self.mesh_changed(&snap);
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    fn add(&mut self, w: Watch) {
        let mesh = w.identity.mesh().to_string();
        let id = self.next_id;
        self.next_id += 1;
        let at = w.rotate_at;
        let lifetime = w
            .first_effective_not_after
            .duration_since(w.first_not_before)
            .unwrap_or_default();
        let key = self.queue.insert(id, until(at));
        self.count(w.identity.mesh().as_str(), &w.backend, 1);
        tracing::debug!(identity = %w.identity, rotate_at = ?at, "watching");
        self.entries.insert(
            id,
            Entry {
                not_after: w.first_not_after,
                identity: w.identity.clone(),
                csr: w.csr.map(Arc::from),
                out: w.out,
                backend: w.backend,
                generation: w.generation,
                lifetime,
                key: Some(key),
                request: None,
                attempt: 0,
                in_flight: false,
                waiting: false,
            },
        );
        self.issuer.observer().watched(self.entries.len());
        // The mesh may have gone between the first certificate and now.
        if self.manager.mesh(&mesh).is_none() {
            self.end_removed(id);
        }
    }

    fn count(&self, mesh: &str, backend: &str, delta: isize) {
        let mut m = lock(&self.manager.watched_on);
        let c = m.entry((mesh.to_owned(), backend.to_owned())).or_default();
        *c = c.saturating_add_signed(delta);
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            if let Some(k) = e.key {
                self.queue.try_remove(&k);
            }
            self.count(e.identity.mesh().as_str(), &e.backend, -1);
            tracing::debug!(identity = %e.identity, "watch ended");
        }
    }

    fn fire(&mut self, id: u64, done_tx: &mpsc::UnboundedSender<Done>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.key = None;
        if e.out.is_closed() {
            self.remove(id);
            return;
        }
        if e.in_flight || e.waiting {
            return;
        }
        let Some(state) = self.manager.mesh(e.identity.mesh().as_str()) else {
            self.end_removed(id);
            return;
        };
        let Some(active) = state.enabled.clone() else {
            tracing::warn!(identity = %e.identity, "mesh has mTLS disabled; retrying later");
            self.retry(id);
            return;
        };
        let lane_key = (
            e.identity.mesh().as_str().to_owned(),
            active.name.to_string(),
        );
        let lane = self.lanes.entry(lane_key.clone()).or_default();
        // Twice the issuer's limit: the extra tasks wait on its semaphore, so a slot freed
        // there is taken at once, not only after this loop has handled the `Done`.
        if lane.in_flight >= 2 * self.issuer.concurrency() {
            e.waiting = true;
            lane.waiting.push_back(id);
            return;
        }
        let identity = e.identity.clone();
        lane.in_flight += 1;
        e.in_flight = true;
        let generation = state.generation;
        let reason = if generation == e.generation {
            RotationReason::Rotation
        } else {
            RotationReason::CaChange
        };
        let csr = e.csr.clone();
        let request = e.request.get_or_insert_with(IdempotencyKey::new).clone();
        let issuer = self.issuer.clone();
        let policy = self.policy;
        let manager = self.manager.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let result = issuer
                .issue(&active, identity, csr.as_deref(), request)
                .await
                .map(|cert| {
                    // Rotation counts from issuance, so compute it here, right after.
                    let at = policy.rotate_at(&cert);
                    let backend = active.name.to_string();
                    // The bundle as of now: a switch may have ended meanwhile.
                    let trust_bundle_pem = manager
                        .mesh(state.name.as_str())
                        .unwrap_or_else(|| state.clone())
                        .bundle_pem_for(&cert);
                    Pushed {
                        serial: cert.serial_hex().to_owned(),
                        not_after: cert.not_after(),
                        lifetime: cert
                            .effective_not_after()
                            .duration_since(cert.not_before())
                            .unwrap_or_default(),
                        msg: Box::new(Rotated {
                            certificate: cert,
                            reason,
                            rotate_at: at,
                            backend: backend.clone(),
                            trust_bundle_pem,
                        }),
                        backend,
                        generation,
                        at,
                    }
                });
            let _ = done_tx.send(Done {
                id,
                lane: lane_key,
                result,
            });
        });
    }

    /// An issue slot of `lane` came free: start the next watcher waiting there, if any.
    fn release(&mut self, lane: &BackendKey, done_tx: &mpsc::UnboundedSender<Done>) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
        while let Some(next) = self.lanes.get_mut(lane).and_then(|l| l.waiting.pop_front()) {
            let Some(e) = self.entries.get_mut(&next) else {
                continue;
            };
            e.waiting = false;
            self.fire(next, done_tx);
            if self
                .entries
                .get(&next)
                .is_some_and(|e| e.in_flight || e.waiting)
            {
                break;
            }
        }
        if self
            .lanes
            .get(lane)
            .is_some_and(|l| l.in_flight == 0 && l.waiting.is_empty())
        {
            self.lanes.remove(lane);
        }
    }

    fn retry(&mut self, id: u64) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.attempt = e.attempt.saturating_add(1);
        // Exponential from 500 ms, capped at a tenth of the lifetime (between 1 s and 30 s).
        let cap = (e.lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let base = Duration::from_millis(500).saturating_mul(1u32 << e.attempt.min(16));
        let delay = base.min(cap).mul_f64(rand::rng().random_range(0.75..1.0));
        if let Some(k) = e.key.take() {
            self.queue.try_remove(&k);
        }
        e.key = Some(self.queue.insert(id, delay));
    }

    fn done(&mut self, done: Done, done_tx: &mpsc::UnboundedSender<Done>) {
        self.release(&done.lane, done_tx);
        let id = done.id;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.in_flight = false;
        match done.result {
            Ok(p) => {
                match e.out.push(Ok(p.msg)) {
                    Err(()) => {
                        self.remove(id);
                        return;
                    }
                    Ok(dropped) => {
                        if dropped > 0 {
                            tracing::warn!(identity = %e.identity, "watcher is not reading; an older unread certificate was replaced by this one");
                        }
                        tracing::info!(identity = %e.identity, backend = %p.backend, generation = p.generation, serial = p.serial, "certificate pushed");
                    }
                }
                let moved = e.backend != p.backend;
                let old_backend = std::mem::replace(&mut e.backend, p.backend);
                e.generation = p.generation;
                e.not_after = p.not_after;
                e.lifetime = p.lifetime;
                e.attempt = 0;
                e.request = None;
                if let Some(k) = e.key.take() {
                    self.queue.try_remove(&k);
                }
                // A CA change while this issue was in flight: re-issue from the new CA now.
                let stale = self
                    .manager
                    .mesh(e.identity.mesh().as_str())
                    .is_some_and(|s| s.enabled.is_some() && s.generation != p.generation);
                let delay = if stale { Duration::ZERO } else { until(p.at) };
                e.key = Some(self.queue.insert(id, delay));
                if moved {
                    let mesh = e.identity.mesh().as_str().to_owned();
                    let backend = e.backend.clone();
                    self.count(&mesh, &old_backend, -1);
                    self.count(&mesh, &backend, 1);
                }
            }
            Err(err) => {
                let left = e.not_after.duration_since(SystemTime::now()).ok();
                tracing::warn!(
                    identity = %e.identity,
                    error = %err,
                    attempt = e.attempt + 1,
                    current_expires_in = ?left,
                    "rotation failed; keeping the current certificate and retrying"
                );
                self.retry(id);
            }
        }
    }

    /// Ends the watch of a mesh that is no longer served: the watcher reads `MeshNotFound`, then
    /// the end of its stream, instead of waiting for retries that cannot succeed.
    fn end_removed(&mut self, id: u64) {
        if let Some(e) = self.entries.get(&id) {
            tracing::info!(identity = %e.identity, "mesh removed; ending the watch");
            let _ = e.out.push(Err(Error::from(ManagerError::MeshNotFound(
                e.identity.mesh().as_str().to_owned(),
            ))));
        }
        self.remove(id);
    }

    fn mesh_changed(&mut self, snap: &Snapshot) {
        let gone: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight && !snap.contains_key(e.identity.mesh().as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.end_removed(id);
        }
        let mut due = Vec::new();
        for (id, e) in &self.entries {
            if let Some(state) = snap.get(e.identity.mesh().as_str()) {
                if state.enabled.is_some()
                    && state.generation != e.generation
                    && !e.in_flight
                    && !e.waiting
                {
                    due.push(*id);
                }
            }
        }
        if !due.is_empty() {
            tracing::info!(
                watchers = due.len(),
                "mesh CA changed; re-issuing watched certificates"
            );
        }
        // Spread over up to a second per 100 watchers so a switch does not burst.
        let spread =
            Duration::from_millis(10).saturating_mul(u32::try_from(due.len()).unwrap_or(u32::MAX));
        for id in due {
            let delay = spread.mul_f64(rand::rng().random_range(0.0..1.0));
            if let Some(e) = self.entries.get_mut(&id) {
                if let Some(k) = e.key.take() {
                    self.queue.try_remove(&k);
                }
                e.key = Some(self.queue.insert(id, delay));
            }
        }
    }

    fn sweep(&mut self) {
        let closed: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.out.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            self.remove(id);
        }
        let mut earliest: BTreeMap<&str, SystemTime> = BTreeMap::new();
        for e in self.entries.values() {
            let v = earliest
                .entry(e.identity.mesh().as_str())
                .or_insert(e.not_after);
            *v = (*v).min(e.not_after);
        }
        let earliest = earliest
            .into_iter()
            .map(|(m, t)| (m.to_owned(), t))
            .collect();
        self.issuer.observer().watched(self.entries.len());
        self.issuer.observer().earliest_expiry(earliest);
    }
}

fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
