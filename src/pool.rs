//! Worker threads: take payloads from the caller's queue, hand them to the sender's
//! intake (encode, admit, write), and wait on signals, never on a sleep.

use std::time::Instant;

use crossbeam_channel::{select, Receiver};

use crate::model::LogPayload;
use crate::sender::Shared;

/// One worker's life. Ends when the sender closes, after draining its queue (bounded
/// by the close deadline).
pub(crate) fn run_worker(shared: &Shared, queue: &Receiver<LogPayload>) {
    let wake = &shared.wake_rx;
    let mut queue_open = true;
    while !shared.is_closing() {
        if queue_open {
            select! {
                recv(queue) -> msg => match msg {
                    Ok(payload) => shared.intake(payload),
                    // Every producer is gone; keep serving wake-ups until close.
                    Err(_) => queue_open = false,
                },
                recv(wake) -> token => match token {
                    Ok(()) => shared.pump(),
                    Err(_) => break,
                },
            }
        } else {
            match wake.recv() {
                Ok(()) => shared.pump(),
                Err(_) => break,
            }
        }
    }
    // Closing: take in what was queued before the close, until the deadline.
    let deadline = shared.close_deadline();
    while deadline.map_or(true, |d| Instant::now() < d) {
        match queue.try_recv() {
            Ok(payload) => shared.intake(payload),
            Err(_) => break,
        }
    }
    shared.pump();
}
