//! The threads that feed the stream: workers take payloads from the caller's queue and
//! hand them to the sender's intake (encode, admit, write); the background writer
//! writes the outbox whenever it is woken (after a reconnect, a failed epoch, a flush),
//! so that no user thread ever has to. Both wait on signals, never on a sleep.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select};

use crate::model::LogPayload;
use crate::sender::Shared;

/// One worker's life. Ends when the sender closes, after draining its queue (bounded
/// by the close deadline).
pub(crate) fn run_worker(shared: &Shared, queue: &Receiver<LogPayload>, index: usize) {
    let stop = &shared.stop_rx;
    let mut select = Select::new();
    let mut from_queue = Some(select.recv(queue));
    let from_stop = select.recv(stop);
    while !shared.is_closing() {
        // Wait until either side is ready, then take without blocking: a payload is
        // taken and numbered in one step (see `Shared::take`), which keeps `flush` exact.
        let ready = select.ready();
        if Some(ready) == from_queue {
            match shared.take(index) {
                Ok(Some((origin, seq, payload))) => shared.intake(origin, seq, payload),
                // Another worker was faster.
                Ok(None) => {}
                // Every producer is gone; wait for the stop signal.
                Err(()) => {
                    select.remove(ready);
                    from_queue = None;
                }
            }
        } else if ready == from_stop
            && matches!(
                stop.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected)
            )
        {
            // Nobody ever sends on it: disconnected means the sender is closing.
            break;
        }
    }
    // Closing: take in what was queued before the close, until the deadline.
    let deadline = shared.close_deadline();
    while deadline.map_or(true, |d| Instant::now() < d) {
        match shared.take(index) {
            Ok(Some((origin, seq, payload))) => shared.intake(origin, seq, payload),
            _ => break,
        }
    }
    shared.wake_writer();
}

/// The background writer: writes the outbox each time it is woken, until the wake
/// channel is dropped at the end of `close`.
pub(crate) fn run_writer(shared: &Shared, wake: &Receiver<()>) {
    while wake.recv().is_ok() {
        shared.pump();
    }
}
