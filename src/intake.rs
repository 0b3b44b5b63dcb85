//! Intake: a worker takes a payload off its queue and numbers it, encodes it with no
//! lock held, admits it to the ledger under the overflow policy (waiting for room if the
//! policy says so), then writes the outbox if nobody else is.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use grpcio::GrpcSlice;
use log::warn;

use crate::config::{Config, OverflowPolicy};
use crate::error::Error;
use crate::events::{DeadLetterEvent, DropReason};
use crate::ledger::{Item, Origin, Refused};
use crate::model::LogPayload;
use crate::queues::Gone;
use crate::shared::{decode_item, Shared};
use crate::stats::Counters;
use crate::{wire, write};

/// One worker's life: wait until its queue or the stop channel is ready, take without
/// blocking, intake. Ends when the sender closes, after taking in what was queued before
/// the close (bounded by the close deadline).
pub(crate) fn run_worker(
    shared: &Shared,
    queue: &Receiver<LogPayload>,
    index: usize,
    stop: &Receiver<()>,
) {
    let mut select = Select::new();
    let mut from_queue = Some(select.recv(queue));
    let from_stop = select.recv(stop);
    while !shared.is_closing() {
        let ready = select.ready();
        if Some(ready) == from_queue {
            match take(shared, index) {
                Ok(Some((origin, seq, payload))) => intake(shared, origin, seq, payload),
                // Another worker was faster.
                Ok(None) => {}
                // Every producer is gone; wait for the stop signal.
                Err(Gone) => {
                    select.remove(ready);
                    from_queue = None;
                }
            }
        } else if ready == from_stop && matches!(stop.try_recv(), Err(TryRecvError::Disconnected)) {
            // Nobody ever sends on it: disconnected means the sender is closing.
            break;
        }
    }
    // Closing: take in what was queued before the close, until the deadline.
    let deadline = shared.close_deadline();
    while deadline.map_or(true, |d| Instant::now() < d) {
        match take(shared, index) {
            Ok(Some((origin, seq, payload))) => intake(shared, origin, seq, payload),
            _ => break,
        }
    }
    shared.wake_writer();
}

/// Takes one payload off queue `index`, numbers it in global intake order and marks it
/// outstanding, under the queues lock, so that `flush` reading the queues' positions
/// sees it either still queued or already outstanding. `Ok(None)`: the queue is empty
/// for now.
fn take(shared: &Shared, index: usize) -> Result<Option<(Origin, u64, LogPayload)>, Gone> {
    let mut queues = shared.queues.lock();
    let Some((origin, payload)) = queues.take(index)? else {
        return Ok(None);
    };
    let seq = shared.next_seq();
    shared.ledger.lock().reserve(origin);
    Ok(Some((origin, seq, payload)))
}

/// Encodes a payload and wraps it for the ledger, or explains why it cannot be sent.
pub(crate) fn encode(
    config: &Config,
    origin: Origin,
    seq: u64,
    payload: &LogPayload,
) -> Result<Item, Error> {
    let bytes = wire::encode(payload);
    let limit = config.max_message_size;
    if bytes.len() > limit {
        return Err(Error::PayloadTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(Item {
        seq,
        origin,
        bytes: GrpcSlice::from(bytes),
        written_before: false,
        strikes: 0,
    })
}

/// A worker's intake of a payload taken and reserved by [`take`]: encode outside any
/// lock, admit under the overflow policy, then write the outbox if nobody else is.
fn intake(shared: &Shared, origin: Origin, seq: u64, payload: LogPayload) {
    Counters::add(&shared.counters.enqueued, 1);
    let item = match encode(&shared.config, origin, seq, &payload) {
        Ok(item) => item,
        Err(e) => {
            warn!("dead-lettering a payload: {e}");
            shared.handler(|h| h.on_dead_letter(DeadLetterEvent::new(payload, e)));
            Counters::add(&shared.counters.dead_lettered, 1);
            unreserve(shared, origin);
            return;
        }
    };
    match admit(shared, item) {
        Ok(evicted) => {
            for old in evicted {
                shared.dropped(decode_item(&old), DropReason::Oldest);
            }
        }
        Err(reason) => {
            shared.dropped(Some(payload), reason);
            unreserve(shared, origin);
        }
    }
    write::pump(shared);
}

fn unreserve(shared: &Shared, origin: Origin) {
    shared.ledger.lock().unreserve(origin);
    shared.ledger_changed.notify_all();
}

/// Admits `item` to the ledger; returns what `DropOldest` evicted, or why it was
/// dropped. With no room, writes the outbox out first (with the ledger lock released),
/// then waits for room, unless the stream changed meanwhile (a new stream may take the
/// outbox: write again first) or the sender started closing (everything is admitted
/// then, so that `close` hands it back).
fn admit(shared: &Shared, mut item: Item) -> Result<Vec<Item>, DropReason> {
    let policy = shared.config.overflow;
    let block_deadline = match policy {
        OverflowPolicy::Block {
            timeout: Some(timeout),
        } => Some(crate::clock::deadline_in(timeout)),
        _ => None,
    };
    let mut evicted = Vec::new();
    let mut ledger = shared.ledger.lock();
    loop {
        item = match ledger.admit(item, policy, &mut evicted) {
            Ok(()) => return Ok(evicted),
            Err(Refused::Dropped(reason)) => return Err(reason),
            Err(Refused::NoRoom(item)) => item,
        };
        let generation = ledger.generation();
        parking_lot::MutexGuard::unlocked(&mut ledger, || write::pump(shared));
        if ledger.generation() != generation || ledger.room_for(item.len()) {
            continue;
        }
        crate::hooks::pause(crate::hooks::Point::BeforeRoomWait);
        match block_deadline {
            Some(deadline) => {
                let timed_out = shared
                    .ledger_changed
                    .wait_until(&mut ledger, deadline)
                    .timed_out();
                if timed_out && !ledger.room_for(item.len()) {
                    return Err(DropReason::BlockTimeout);
                }
            }
            None => shared.ledger_changed.wait(&mut ledger),
        }
    }
}
