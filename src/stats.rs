//! Counters: cheap atomics updated on the hot path, read as a [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use parking_lot::Mutex;

/// The state of the connection to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Dialing, or waiting out a backoff delay before the next dial.
    Connecting,
    /// A stream is open; payloads are being written.
    Connected,
    /// The sender is closed.
    Closed,
}

/// A snapshot of the sender's counters. All counts are since the sender was created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Payloads taken in (from the worker queue or `send_logs`).
    pub enqueued: u64,
    /// Payload writes that completed on a stream (re-sends included).
    pub sent: u64,
    /// Payloads confirmed: by an `OK` epoch (at-least-once) or a completed write (at-most-once).
    pub acknowledged: u64,
    /// Payloads put back to be written again after a failed write or a failed epoch.
    pub retried: u64,
    /// Of `retried`, those that had already been written once (possible duplicates).
    pub resent_after_fault: u64,
    /// Dropped by `OverflowPolicy::DropNewest`.
    pub dropped_newest: u64,
    /// Dropped by `OverflowPolicy::DropOldest`.
    pub dropped_oldest: u64,
    /// Dropped by `OverflowPolicy::Block` with a timeout.
    pub dropped_block_timeout: u64,
    /// Given up for a permanent reason (permanent status, too large).
    pub dead_lettered: u64,
    /// Streams opened after the first one.
    pub reconnects: u64,
    /// Epochs committed with status `OK`.
    pub epochs_committed: u64,
    /// Epochs that failed (error status, transport break, timeout).
    pub epochs_failed: u64,
    /// Encoded bytes written to streams.
    pub bytes_sent: u64,
    /// How long the write in progress has gone without progress (a message handed to
    /// the call), if a write is in progress: a collector that stopped reading shows
    /// here long before `write_timeout` cancels the call.
    pub write_stalled: Option<std::time::Duration>,
    /// Times the [`EventHandler`](crate::EventHandler) panicked (each caught and logged).
    pub handler_panics: u64,
    /// Payloads waiting in the worker queue right now.
    pub queue_depth: u64,
    /// Payloads held right now: waiting to be (re)written plus written but unacknowledged.
    pub unacked: u64,
    /// Encoded bytes held right now.
    pub unacked_bytes: u64,
    /// The connection state right now.
    pub state: ConnectionState,
    /// The most recent error, as text.
    pub last_error: Option<String>,
}

impl Stats {
    /// All payloads dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest + self.dropped_block_timeout
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acknowledged: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) resent_after_fault: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) dropped_block_timeout: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) epochs_committed: AtomicU64,
    pub(crate) epochs_failed: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Relaxed)
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        let v = match state {
            ConnectionState::Connecting => 0,
            ConnectionState::Connected => 1,
            ConnectionState::Closed => 2,
        };
        self.state.store(v, Relaxed);
    }

    pub(crate) fn state(&self) -> ConnectionState {
        match self.state.load(Relaxed) {
            0 => ConnectionState::Connecting,
            1 => ConnectionState::Connected,
            _ => ConnectionState::Closed,
        }
    }

    pub(crate) fn set_last_error(&self, error: &dyn std::fmt::Display) {
        *self.last_error.lock() = Some(error.to_string());
    }

    pub(crate) fn snapshot(&self, queue_depth: u64, unacked: u64, unacked_bytes: u64) -> Stats {
        Stats {
            enqueued: self.enqueued.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            retried: self.retried.load(Relaxed),
            resent_after_fault: self.resent_after_fault.load(Relaxed),
            dropped_newest: self.dropped_newest.load(Relaxed),
            dropped_oldest: self.dropped_oldest.load(Relaxed),
            dropped_block_timeout: self.dropped_block_timeout.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            epochs_committed: self.epochs_committed.load(Relaxed),
            epochs_failed: self.epochs_failed.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            write_stalled: None,
            queue_depth,
            unacked,
            unacked_bytes,
            state: self.state(),
            last_error: self.last_error.lock().clone(),
        }
    }
}
