//! Bounds on `WatchCertificate` streams: at most so many per identity, and a stream opened with
//! a bootstrap token ends (PermissionDenied) when the token's signing key rotates or the token
//! expires, as the token itself stops working then.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::api::token::Lease;

/// Open watches per identity, at most `max` each.
#[derive(Debug)]
pub(crate) struct WatchLimit {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open watch of an identity; counted out on drop.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    limit: Arc<WatchLimit>,
    key: String,
}

impl WatchLimit {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more watch of `identity` (its canonical name), unless `max` are open.
    pub(crate) fn acquire(self: &Arc<Self>, identity: String) -> Option<WatchSlot> {
        let mut open = self.lock();
        let n = open.entry(identity.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(WatchSlot {
            limit: self.clone(),
            key: identity,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Resolves, with the reason, when a token's lease runs out: its signing key is no longer the
/// current one (`key_ids` follows it), or it expires.
pub(crate) fn lease_end(
    lease: Lease,
    mut key_ids: tokio::sync::watch::Receiver<String>,
) -> impl Future<Output = &'static str> + Send {
    let left = lease
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::Instant::now() + left;
    async move {
        let rotated = async {
            loop {
                if *key_ids.borrow_and_update() != lease.key_id {
                    return;
                }
                if key_ids.changed().await.is_err() {
                    // The key can no longer change: only expiry ends the stream.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = rotated => "the bootstrap token was revoked: the token signing key was rotated; reconnect with your mesh certificate",
            () = tokio::time::sleep_until(expiry) => "the bootstrap token has expired; reconnect with your mesh certificate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_most_max_watches_per_identity() {
        let l = WatchLimit::new(2);
        let a = l.acquire("web".into()).unwrap();
        let _b = l.acquire("web".into()).unwrap();
        assert!(l.acquire("web".into()).is_none());
        assert!(l.acquire("db".into()).is_some());
        drop(a);
        assert!(l.acquire("web".into()).is_some());
    }

    #[tokio::test]
    async fn a_lease_ends_on_rotation_and_on_expiry() {
        let (tx, rx) = tokio::sync::watch::channel("k1".to_owned());
        let long = Lease {
            key_id: "k1".into(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        };
        let end = tokio::spawn(lease_end(long.clone(), rx.clone()));
        tx.send_replace("k2".into());
        assert!(end.await.unwrap().contains("rotated"));
        // Signed by a key already replaced: ends at once.
        assert!(lease_end(long, rx.clone()).await.contains("rotated"));
        let expired = Lease {
            key_id: "k2".into(),
            expires_at: SystemTime::now() - Duration::from_secs(1),
        };
        assert!(lease_end(expired, rx).await.contains("expired"));
    }
}
