//! The channel from the scheduler to one watcher: a small queue that coalesces (drops the
//! oldest unread certificate, never the newest) and a one-slot doorbell.

use std::collections::VecDeque;
use std::sync::Arc;

use ca_core::Error;
use tokio::sync::mpsc;

use super::Rotated;
use crate::guard::lock;

/// Certificates a watcher has not read yet, at most this many: when it is full the oldest is
/// dropped, so a slow reader always finds the newest certificate (coalesced, never lost).
pub const WATCH_BUFFER: usize = 4;

/// What a watch delivers: a certificate, or the error that ended the watch.
type WatchItem = Result<Box<Rotated>, Error>;

/// The scheduler's end of a watch. The queue is shared; a one-slot channel only rings the
/// reader's doorbell, and its closing tells either side that the other is gone.
#[derive(Debug)]
pub(super) struct WatchSender {
    queue: Arc<std::sync::Mutex<VecDeque<WatchItem>>>,
    doorbell: mpsc::Sender<()>,
}

impl WatchSender {
    /// Queues `item`, dropping the oldest unread one if the queue is full. Returns how many were
    /// dropped (0 or 1); `Err` when the reader is gone.
    pub(super) fn push(&self, item: WatchItem) -> Result<usize, ()> {
        if self.doorbell.is_closed() {
            return Err(());
        }
        let mut q = lock(&self.queue);
        let mut dropped = 0;
        while q.len() >= WATCH_BUFFER {
            q.pop_front();
            dropped += 1;
        }
        q.push_back(item);
        drop(q);
        // Full means the bell is already ringing.
        let _ = self.doorbell.try_send(());
        Ok(dropped)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.doorbell.is_closed()
    }
}

pub(super) fn watch_channel() -> (WatchSender, WatchReceiver) {
    let queue = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(WATCH_BUFFER)));
    let (tx, rx) = mpsc::channel(1);
    (
        WatchSender {
            queue: queue.clone(),
            doorbell: tx,
        },
        WatchReceiver {
            queue,
            doorbell: rx,
        },
    )
}

/// What a watcher reads: the first certificate, then one per rotation and CA change (the newest
/// ones, if it reads slowly: see [`WATCH_BUFFER`]). A watch of a mesh that is removed ends with
/// [`ManagerError::MeshNotFound`](ca_core::ManagerError::MeshNotFound); `None` after that, or when
/// the scheduler stops.
#[derive(Debug)]
pub struct WatchReceiver {
    queue: Arc<std::sync::Mutex<VecDeque<WatchItem>>>,
    doorbell: mpsc::Receiver<()>,
}

impl WatchReceiver {
    /// The next certificate; `None` when the watch has ended.
    pub async fn recv(&mut self) -> Option<Result<Rotated, Error>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next certificate (for adapters that implement `Stream`).
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Rotated, Error>>> {
        use std::task::Poll;
        loop {
            if let Some(item) = lock(&self.queue).pop_front() {
                return Poll::Ready(Some(item.map(|b| *b)));
            }
            match self.doorbell.poll_recv(cx) {
                // Rung: look again.
                Poll::Ready(Some(())) => continue,
                // The scheduler let go: whatever is queued was read above.
                Poll::Ready(None) => {
                    return match lock(&self.queue).pop_front() {
                        Some(item) => Poll::Ready(Some(item.map(|b| *b))),
                        None => Poll::Ready(None),
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_reader_gets_the_newest_certificates_and_then_the_end() {
        let (tx, mut rx) = watch_channel();
        for i in 0..10 {
            let err = Error::invalid_argument("n", i.to_string());
            assert_eq!(tx.push(Err(err)).unwrap(), usize::from(i >= WATCH_BUFFER));
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(item) = rx.recv().await {
            got.push(item.unwrap_err().to_string());
        }
        assert_eq!(got, ["n: 6", "n: 7", "n: 8", "n: 9"]);
        // A gone reader is seen by the sender.
        let (tx, rx) = watch_channel();
        drop(rx);
        assert!(tx.is_closed());
        assert!(tx.push(Err(Error::invalid_argument("n", "x"))).is_err());
    }
}
