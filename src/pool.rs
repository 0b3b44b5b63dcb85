//! Worker threads: take payloads from the caller's queue, hand them to the sender's
//! intake (encode, admit, write), and wait on signals, never on a sleep.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select};

use crate::model::LogPayload;
use crate::sender::Shared;

/// One worker's life. Ends when the sender closes, after draining its queue (bounded
/// by the close deadline).
pub(crate) fn run_worker(shared: &Shared, queue: &Receiver<LogPayload>) {
    let wake = &shared.wake_rx;
    let mut select = Select::new();
    let mut from_queue = Some(select.recv(queue));
    let from_wake = select.recv(wake);
    while !shared.is_closing() {
        // Wait until either side is ready, then take without blocking: a payload is
        // taken and numbered in one step (see `Shared::take`), which keeps `flush` exact.
        let ready = select.ready();
        if Some(ready) == from_queue {
            match shared.take(queue) {
                Ok(Some((seq, payload))) => shared.intake(seq, payload),
                // Another worker was faster.
                Ok(None) => {}
                // Every producer is gone; keep serving wake-ups until close.
                Err(()) => {
                    select.remove(ready);
                    from_queue = None;
                }
            }
        } else if ready == from_wake {
            match wake.try_recv() {
                Ok(()) => shared.pump(),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                Err(crossbeam_channel::TryRecvError::Disconnected) => break,
            }
        }
    }
    // Closing: take in what was queued before the close, until the deadline.
    let deadline = shared.close_deadline();
    while deadline.map_or(true, |d| Instant::now() < d) {
        match shared.take(queue) {
            Ok(Some((seq, payload))) => shared.intake(seq, payload),
            _ => break,
        }
    }
    shared.pump();
}
