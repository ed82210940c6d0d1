//! The rotation scheduler: one `DelayQueue` entry per watched identity (not one task each), a
//! re-issue pushed to the watcher before each expiry and whenever the mesh's CA changes, backoff
//! on failure while the watcher keeps its current certificate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca_core::{Identity, IssuedCertificate};
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::time::{delay_queue, DelayQueue};
use tonic::Status;

use crate::issuer::{lock, Issuer};
use crate::proto::WatchCertificateResponse;
use crate::state::{Manager, Snapshot};
use crate::status::{message, ApiError};
use crate::util::unix;

/// What the stream receives.
pub(crate) type WatchSender = mpsc::Sender<Result<WatchCertificateResponse, Status>>;

/// When to rotate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RotationPolicy {
    /// Fraction of the lifetime after which to rotate (Kuma: 0.8).
    pub(crate) fraction: f64,
    /// Up to this fraction of the delay is taken off at random, spreading a zone's rotations.
    pub(crate) jitter: f64,
}

impl RotationPolicy {
    /// When a holder of `cert` should rotate, jittered.
    /// Call right after issuance: the lifetime counts from now, not from the backdated
    /// not-before (`IssuedCertificate::rotate_at` counts the 10 s backdate, which matters for
    /// short lifetimes).
    pub(crate) fn rotate_at(&self, cert: &IssuedCertificate) -> SystemTime {
        let now = SystemTime::now();
        let start = cert.not_before().max(now);
        let life = cert
            .effective_not_after()
            .duration_since(start)
            .unwrap_or_default();
        let delay = life.mul_f64(self.fraction.clamp(0.0, 1.0));
        let cut =
            delay.mul_f64(self.jitter.clamp(0.0, 0.5) * rand::thread_rng().gen_range(0.0..1.0));
        now + (delay - cut)
    }
}

/// A new watcher: its first certificate was already sent.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) identity: Identity,
    pub(crate) csr: Option<Vec<u8>>,
    pub(crate) first: IssuedCertificate,
    pub(crate) backend: String,
    pub(crate) generation: u64,
    pub(crate) out: WatchSender,
}

/// Handle to the scheduler task.
#[derive(Clone, Debug)]
pub(crate) struct Scheduler {
    tx: mpsc::UnboundedSender<Watch>,
}

impl Scheduler {
    pub(crate) fn add(&self, w: Watch) -> Result<(), ApiError> {
        self.tx
            .send(w)
            .map_err(|_| ApiError::Unavailable("rotation scheduler stopped".into()))
    }
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    csr: Option<Vec<u8>>,
    out: WatchSender,
    backend: String,
    generation: u64,
    not_after: SystemTime,
    lifetime: Duration,
    key: Option<delay_queue::Key>,
    attempt: u32,
    in_flight: bool,
}

#[derive(Debug)]
struct Done {
    id: u64,
    result: Result<(IssuedCertificate, String, u64), ApiError>,
}

/// Starts the scheduler task.
pub(crate) fn spawn(
    manager: Arc<Manager>,
    issuer: Arc<Issuer>,
    policy: RotationPolicy,
) -> Scheduler {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Loop {
        manager,
        issuer,
        policy,
        entries: HashMap::new(),
        queue: DelayQueue::new(),
        next_id: 0,
    };
    tokio::spawn(task.run(rx));
    Scheduler { tx }
}

struct Loop {
    manager: Arc<Manager>,
    issuer: Arc<Issuer>,
    policy: RotationPolicy,
    entries: HashMap<u64, Entry>,
    queue: DelayQueue<u64>,
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
                Some(done) = done_rx.recv() => self.done(done),
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
        let id = self.next_id;
        self.next_id += 1;
        let at = self.policy.rotate_at(&w.first);
        let lifetime = w
            .first
            .effective_not_after()
            .duration_since(w.first.not_before())
            .unwrap_or_default();
        let key = self.queue.insert(id, until(at));
        self.count(w.identity.mesh().as_str(), &w.backend, 1);
        tracing::debug!(identity = %w.identity, rotate_at = unix(at), "watching");
        self.entries.insert(
            id,
            Entry {
                not_after: w.first.not_after(),
                identity: w.identity,
                csr: w.csr,
                out: w.out,
                backend: w.backend,
                generation: w.generation,
                lifetime,
                key: Some(key),
                attempt: 0,
                in_flight: false,
            },
        );
        self.issuer.metrics.set_watched(self.entries.len());
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
        if e.in_flight {
            return;
        }
        let Some(state) = self.manager.mesh(e.identity.mesh().as_str()) else {
            tracing::warn!(identity = %e.identity, "mesh is gone; retrying later");
            self.retry(id);
            return;
        };
        let Some(active) = state.enabled.clone() else {
            tracing::warn!(identity = %e.identity, "mesh has mTLS disabled; retrying later");
            self.retry(id);
            return;
        };
        e.in_flight = true;
        let generation = state.generation;
        let identity = e.identity.clone();
        let csr = e.csr.clone();
        let issuer = self.issuer.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let result = issuer
                .issue(&active, identity, csr.as_deref())
                .await
                .map(|c| (c, active.name.to_string(), generation));
            let _ = done_tx.send(Done { id, result });
        });
    }

    fn retry(&mut self, id: u64) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.attempt = e.attempt.saturating_add(1);
        // Exponential from 500 ms, capped at a tenth of the lifetime (between 1 s and 30 s).
        let cap = (e.lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let base = Duration::from_millis(500).saturating_mul(1u32 << e.attempt.min(16));
        let delay = base
            .min(cap)
            .mul_f64(rand::thread_rng().gen_range(0.75..1.0));
        if let Some(k) = e.key.take() {
            self.queue.try_remove(&k);
        }
        e.key = Some(self.queue.insert(id, delay));
    }

    fn done(&mut self, done: Done) {
        let id = done.id;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.in_flight = false;
        match done.result {
            Ok((cert, backend, generation)) => {
                let reason = if generation != e.generation {
                    "ca-change"
                } else {
                    "rotation"
                };
                let bundle = self
                    .manager
                    .mesh(e.identity.mesh().as_str())
                    .and_then(|s| s.bundle.clone())
                    .unwrap_or_else(|| cert.bundle().clone());
                let at = self.policy.rotate_at(&cert);
                let msg = WatchCertificateResponse {
                    certificate: Some(crate::service::to_proto(&cert, &bundle, at, &backend)),
                    reason: reason.into(),
                };
                match e.out.try_send(Ok(msg)) {
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.remove(id);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(identity = %e.identity, "watcher is not reading; certificate dropped");
                    }
                    Ok(()) => {
                        tracing::info!(identity = %e.identity, backend = %backend, reason, serial = cert.serial_hex(), "certificate pushed");
                    }
                }
                let old_backend = std::mem::replace(&mut e.backend, backend.clone());
                e.generation = generation;
                e.not_after = cert.not_after();
                e.lifetime = cert
                    .effective_not_after()
                    .duration_since(cert.not_before())
                    .unwrap_or_default();
                e.attempt = 0;
                if let Some(k) = e.key.take() {
                    self.queue.try_remove(&k);
                }
                // A CA change while this issue was in flight: re-issue from the new CA now.
                let stale = self
                    .manager
                    .mesh(e.identity.mesh().as_str())
                    .is_some_and(|s| s.enabled.is_some() && s.generation != generation);
                let delay = if stale { Duration::ZERO } else { until(at) };
                e.key = Some(self.queue.insert(id, delay));
                let mesh = e.identity.mesh().to_string();
                self.count(&mesh, &old_backend, -1);
                self.count(&mesh, &backend, 1);
            }
            Err(err) => {
                let left = e.not_after.duration_since(SystemTime::now()).ok();
                tracing::warn!(
                    identity = %e.identity,
                    error = %message(&err),
                    attempt = e.attempt + 1,
                    current_expires_in = ?left,
                    "rotation failed; keeping the current certificate and retrying"
                );
                self.retry(id);
            }
        }
    }

    fn mesh_changed(&mut self, snap: &Snapshot) {
        let mut due = Vec::new();
        for (id, e) in &self.entries {
            if let Some(state) = snap.get(e.identity.mesh().as_str()) {
                if state.enabled.is_some() && state.generation != e.generation && !e.in_flight {
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
            let delay = spread.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
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
        let mut earliest: BTreeMap<String, i64> = BTreeMap::new();
        for e in self.entries.values() {
            let t = unix(e.not_after);
            let v = earliest.entry(e.identity.mesh().to_string()).or_insert(t);
            *v = (*v).min(t);
        }
        self.issuer.metrics.set_watched(self.entries.len());
        self.issuer.metrics.set_earliest_expiry(earliest);
    }
}

fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
