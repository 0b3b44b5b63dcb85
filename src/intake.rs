//! Intake: a worker takes a payload off its queue and numbers it, encodes it with no
//! lock held, admits it to the ledger under the overflow policy (waiting for room if the
//! policy says so), then writes the outbox if nobody else is.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use grpcio::GrpcSlice;
use log::warn;

use crate::codec::Encoded;
use crate::config::{Config, OverflowPolicy};
use crate::error::Error;
use crate::events::{DeadLetterEvent, DropReason};
use crate::ledger::{Item, Origin, Refused};
use crate::model::LogPayload;
use crate::queues::{Gone, Intake, Queued};
use crate::shared::{Shared, BACKPRESSURE_AFTER};
use crate::spooler::{self, NotSpooled};
use crate::stats::Counters;
use crate::write;

/// Most payloads a worker takes off its queue at once: one lock for the lot, one write
/// pass for the lot, and the others' share waits in the queue for the other workers.
const TAKE_AT_ONCE: usize = 16;

/// Payloads that encode to this many bytes or more are freed as soon as they are encoded.
const FREE_AT_ONCE_FROM: usize = 64 << 10;

/// Payloads taken off a queue, each with its origin and global sequence number.
type Taken = Vec<(Origin, u64, Queued)>;

/// One worker's life: wait until its queue or the stop channel is ready, take without
/// blocking, intake. Ends when the sender closes, after taking in what was queued before
/// the close (bounded by the close deadline). With `until_gone` (a queue logsender
/// feeds itself, from an [`EntrySender`](crate::EntrySender)'s batcher), it ends once the
/// queue's producer is gone and the queue is empty, and at close it also waits for the
/// last payloads until then.
pub(crate) fn run_worker(
    shared: &Shared,
    queue: &Intake,
    source: u32,
    stop: &Receiver<()>,
    until_gone: bool,
) {
    let mut select = Select::new();
    let mut from_queue = Some(queue.add_to(&mut select));
    let from_stop = select.recv(stop);
    let mut taken = Taken::with_capacity(TAKE_AT_ONCE);
    while !shared.is_closing() {
        let ready = select.ready();
        if Some(ready) == from_queue {
            match take(shared, source, &mut taken) {
                Ok(()) => intake(shared, &mut taken),
                // An entry handle's queue: its batcher is gone (every handle was
                // dropped) and everything it sent is taken in, so this pool is done.
                Err(Gone) if until_gone => {
                    shared.queues.lock().retire(source);
                    shared.wake_writer();
                    return;
                }
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
    while deadline.is_none_or(|d| Instant::now() < d) {
        if take(shared, source, &mut taken).is_err() {
            break;
        }
        if taken.is_empty() {
            if !until_gone {
                break;
            }
            // Wait for the batcher's last payloads (or for it to go).
            let mut ready = Select::new();
            queue.add_to(&mut ready);
            let _ = match deadline {
                Some(d) => ready.ready_deadline(d).ok(),
                None => Some(ready.ready()),
            };
            continue;
        }
        intake(shared, &mut taken);
    }
    shared.wake_writer();
}

/// Takes up to [`TAKE_AT_ONCE`] payloads off queue `source` (as many as the buffer has
/// room for, at least one; none if another worker was faster), numbers them in global
/// intake order and marks them outstanding, all under the queues lock (and one hold of
/// the ledger lock inside it), so that `flush` reading the queues' positions sees each
/// either still queued or already outstanding. `Err` when the queue is empty and every
/// producer is gone.
fn take(shared: &Shared, source: u32, taken: &mut Taken) -> Result<(), Gone> {
    let mut queues = shared.queues.lock();
    let mut ledger = shared.ledger.lock();
    // No more than there is room for (but one, to wait for room with): a full buffer
    // leaves the rest in the queue, where they hold back the producers.
    // With a spool, what does not fit in memory waits on disk: take a full share.
    let at_once = if shared.spool.is_some() {
        TAKE_AT_ONCE
    } else {
        ledger.room().clamp(1, TAKE_AT_ONCE)
    };
    while taken.len() < at_once {
        match queues.take(source) {
            Ok(Some((origin, payload))) => {
                ledger.reserve(origin, payload.entries());
                taken.push((origin, shared.next_seq(), payload));
            }
            Ok(None) => break,
            Err(Gone) if taken.is_empty() => return Err(Gone),
            Err(Gone) => break,
        }
    }
    Ok(())
}

/// Encodes a payload and wraps it for the ledger, or explains why it cannot be sent.
pub(crate) fn encode(
    config: &Config,
    origin: Origin,
    seq: u64,
    payload: &LogPayload,
) -> Result<Item, Error> {
    let entries = u32::try_from(payload.logs.len()).unwrap_or(u32::MAX);
    let bytes = config.wire.encode(payload, config.request_cap())?;
    wrap(config, origin, seq, bytes, entries).map_err(|bytes| too_large(config, &bytes))
}

/// Wraps an encoded payload for the ledger; gives its bytes back if they are more than
/// `max_message_size` (see [`too_large`]).
fn wrap(
    config: &Config,
    origin: Origin,
    seq: u64,
    bytes: Vec<u8>,
    entries: u32,
) -> Result<Item, Vec<u8>> {
    if bytes.len() > config.max_message_size {
        return Err(bytes);
    }
    Ok(Item {
        seq,
        origin,
        bytes: GrpcSlice::from(bytes),
        entries,
        written_before: false,
        strikes: 0,
        spooled: None,
    })
}

/// Why `bytes` cannot be sent.
fn too_large(config: &Config, bytes: &[u8]) -> Error {
    Error::PayloadTooLarge {
        size: bytes.len(),
        limit: config.max_message_size,
    }
}

/// A worker's intake of payloads taken and reserved by [`take`]: encode them outside
/// any lock, admit them under the overflow policy (all under one hold of the ledger lock
/// while there is room), then write the outbox if nobody else is.
fn intake(shared: &Shared, taken: &mut Taken) {
    if taken.is_empty() {
        return;
    }
    let entries: u64 = taken.iter().map(|(_, _, q)| u64::from(q.entries())).sum();
    Counters::add(&shared.counters.enqueued, taken.len() as u64);
    Counters::add(&shared.counters.entries_enqueued, entries);
    let mut encoded = Vec::with_capacity(taken.len());
    for (origin, seq, queued) in taken.drain(..) {
        let entries = queued.entries();
        // An entry handle's payloads come encoded already (see `entries`).
        let (outcome, payload) = match queued {
            Queued::Payload(payload) => {
                (encode(&shared.config, origin, seq, &payload), Some(payload))
            }
            // Built in this sender's wire form by its batcher (`codec::EntryFrame`),
            // under the limits: taken as it is.
            Queued::Encoded(Encoded { wire, bytes, .. }) => {
                let config = &shared.config;
                debug_assert_eq!(wire, config.wire, "a batch for the other wire");
                match wrap(config, origin, seq, bytes, entries) {
                    Ok(item) => (Ok(item), None),
                    // Decoded back for the dead-letter report, should its batcher ever
                    // have cut it over the limit.
                    Err(bytes) => (
                        Err(too_large(config, &bytes)),
                        Encoded {
                            wire,
                            bytes,
                            entries,
                        }
                        .decode(),
                    ),
                }
            }
        };
        match outcome {
            Ok(item) => {
                // A large payload is freed right away, while encoding has its memory in
                // cache; a small one after the write pass, off the path to the wire
                // (each wins on its side of the threshold in the benchmark). One freed
                // here is decoded back if it has to be reported.
                let keep = payload.filter(|_| item.len() < FREE_AT_ONCE_FROM);
                encoded.push((item, keep));
            }
            Err(e) => {
                warn!("dead-lettering a payload: {e}");
                if let Some(payload) = payload {
                    shared.handler(|h| h.on_dead_letter(DeadLetterEvent::new(payload, e)));
                }
                Counters::add(&shared.counters.dead_lettered, 1);
                Counters::add(&shared.counters.entries_dead_lettered, u64::from(entries));
                unreserve(shared, origin);
            }
        }
    }
    let mut admitted = Vec::with_capacity(encoded.len());
    let mut evicted = Vec::new();
    let mut dropped = Vec::new();
    let mut no_room = Vec::new();
    // With a spool, a payload is accepted once it is in the spool; only those it did
    // not take go on under the memory bounds and the overflow policy.
    let mut memory_only = Vec::new();
    if let Some(spool) = &shared.spool {
        let mut rest = Vec::new();
        for not in spooler::spool_taken(shared, spool, encoded) {
            match not {
                NotSpooled::Memory(item, payload) => {
                    memory_only.push(item.origin);
                    rest.push((item, payload))
                }
                NotSpooled::Dropped(item, payload) => dropped.push((
                    payload.or_else(|| shared.decode_item(&item)),
                    DropReason::Newest,
                )),
            }
        }
        encoded = rest;
    }
    {
        let policy = shared.config.overflow;
        let mut ledger = shared.ledger.lock();
        for (item, payload) in encoded {
            if !no_room.is_empty() {
                // Keep their order: once one waits, the rest wait behind it.
                no_room.push((item, payload));
                continue;
            }
            let origin = item.origin;
            match ledger.admit(item, policy, &mut evicted) {
                Ok(()) => admitted.push(payload),
                Err(Refused::NoRoom(item)) => no_room.push((item, payload)),
                Err(Refused::Dropped(item, reason)) => {
                    // Counted before it stops being outstanding, under the same lock:
                    // a `flush` cannot see it gone and not counted.
                    shared.count_dropped(reason, item.entries);
                    ledger.unreserve(origin);
                    dropped.push((payload.or_else(|| shared.decode_item(&item)), reason));
                }
            }
        }
        count_evicted(shared, &evicted);
    }
    if !dropped.is_empty() {
        shared.ledger_changed.notify_all();
    }
    report_evicted(shared, evicted);
    for (payload, reason) in dropped {
        shared.report_dropped(payload, reason);
    }
    for (item, payload) in no_room {
        let origin = item.origin;
        match admit(shared, item) {
            Ok(evicted) => {
                report_evicted(shared, evicted);
                admitted.push(payload);
            }
            Err((item, reason)) => {
                // Counted by `admit`, under the ledger lock.
                unreserve(shared, origin);
                shared.report_dropped(payload.or_else(|| shared.decode_item(&item)), reason);
            }
        }
    }
    if !memory_only.is_empty() {
        // Held in memory (or dropped) now: through the spool's step, for `sync`.
        let mut ledger = shared.ledger.lock();
        for origin in memory_only {
            ledger.spooled(origin);
        }
    }
    write::pump(shared);
    drop(admitted);
}

/// Counts payloads `DropOldest` evicted to make room, under the ledger lock that
/// evicted them (they are no longer outstanding).
fn count_evicted(shared: &Shared, evicted: &[Item]) {
    for old in evicted {
        shared.count_dropped(DropReason::Oldest, old.entries);
    }
}

/// Reports payloads `DropOldest` evicted (and counted) to make room.
fn report_evicted(shared: &Shared, evicted: Vec<Item>) {
    for old in evicted {
        shared.report_dropped(shared.decode_item(&old), DropReason::Oldest);
    }
}

fn unreserve(shared: &Shared, origin: Origin) {
    shared.ledger.lock().unreserve(origin);
    shared.ledger_changed.notify_all();
}

/// Admits `item` to the ledger; returns what `DropOldest` evicted, or why it was
/// dropped (both counted already, under the ledger lock). With no room, writes the outbox out first (with the ledger lock released),
/// then waits for room, unless the stream changed meanwhile (a new stream may take the
/// outbox: write again first) or the sender started closing (everything is admitted
/// then, so that `close` hands it back).
fn admit(shared: &Shared, mut item: Item) -> Result<Vec<Item>, (Item, DropReason)> {
    let policy = shared.config.overflow;
    let block_deadline = match policy {
        OverflowPolicy::Block {
            timeout: Some(timeout),
        } => Some(crate::clock::deadline_in(timeout)),
        _ => None,
    };
    let mut evicted = Vec::new();
    // Declared before the ledger guard, so dropped after it: it may call the handler.
    let mut waiting = None;
    let mut first_wait: Option<Instant> = None;
    let mut ledger = shared.ledger.lock();
    loop {
        let already = evicted.len();
        let outcome = ledger.admit(item, policy, &mut evicted);
        count_evicted(shared, &evicted[already..]);
        item = match outcome {
            Ok(()) => return Ok(evicted),
            Err(Refused::Dropped(item, reason)) => {
                shared.count_dropped(reason, item.entries);
                return Err((item, reason));
            }
            Err(Refused::NoRoom(item)) => item,
        };
        let generation = ledger.generation();
        parking_lot::MutexGuard::unlocked(&mut ledger, || write::pump(shared));
        if ledger.generation() != generation || ledger.room_for(item.len()) {
            continue;
        }
        // A wait counts as backpressure once it has lasted `BACKPRESSURE_AFTER`.
        let began = *first_wait.get_or_insert_with(Instant::now);
        let counted_from = crate::clock::after(began, BACKPRESSURE_AFTER);
        if waiting.is_none() && Instant::now() >= counted_from {
            waiting = Some(parking_lot::MutexGuard::unlocked(&mut ledger, || {
                shared.start_waiting(began)
            }));
            continue;
        }
        crate::hooks::pause(crate::hooks::Point::BeforeRoomWait);
        let until = match (waiting.is_none().then_some(counted_from), block_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match until {
            Some(until) => {
                shared.ledger_changed.wait_until(&mut ledger, until);
            }
            None => shared.ledger_changed.wait(&mut ledger),
        }
        if block_deadline.is_some_and(|d| Instant::now() >= d) && !ledger.room_for(item.len()) {
            shared.count_dropped(DropReason::BlockTimeout, item.entries);
            return Err((item, DropReason::BlockTimeout));
        }
    }
}
