//! The write path: moves encoded payloads from the ledger's outbox onto the current
//! call, under the stream lock. Whoever holds the lock writes everybody's payloads, in
//! batches, so encoders never wait on the wire; the background writer does it when no
//! user thread should (after a reconnect, a failed epoch, for `flush` and `close`).

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, SinkExt};
use grpcio::{GrpcSlice, WriteFlags};
use log::{debug, error, warn};
use parking_lot::MutexGuard;

use crossbeam_channel::{select, Receiver};

use crate::call::Slot;
use crate::command::{Command, Report};
use crate::config::DeliveryMode;
use crate::error::Error;
use crate::ledger::{entries_of, Batch, Item};
use crate::shared::Shared;
use crate::stats::Counters;

/// Most payloads (and about the most bytes) written under one hold of the stream lock,
/// so an epoch swap never waits long.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 4 << 20;

/// What one batch of the write path left.
#[derive(PartialEq, Eq)]
enum Pass {
    /// A batch was written; there may be more.
    Wrote,
    /// Nothing to write.
    Drained,
    /// No usable stream (none, broken, or the epoch is full and waits for its swap).
    Blocked,
}

/// The background writer: writes the outbox each time it is woken, until `stop`
/// disconnects at the end of `close`.
pub(crate) fn run_writer(shared: &Shared, wake: &Receiver<()>, stop: &Receiver<()>) {
    loop {
        select! {
            recv(wake) -> token => if token.is_err() { return },
            recv(stop) -> _ => return,
        }
        pump(shared);
    }
}

/// Writes the outbox onto the stream if no one else is writing, one batch per hold of
/// the stream lock (so that `send_logs` and the supervisor's swap wait for one batch at
/// most). Whoever holds the lock re-checks the outbox after it lets go, so nothing is
/// left behind.
pub(crate) fn pump(shared: &Shared) {
    loop {
        let Some(mut slot) = shared.stream.slot.try_lock() else {
            return;
        };
        let pass = write_batch_of_outbox(shared, &mut slot);
        drop(slot);
        match pass {
            Pass::Wrote => {}
            Pass::Blocked => return,
            // Suspect groups wait for an epoch of their own: only the outbox proper is
            // worth another pass.
            Pass::Drained => {
                if shared.ledger.lock().normal_len() == 0 {
                    return;
                }
            }
        }
    }
}

/// Writes `item` (held already) now, for `send_logs`. Waits at most `send_timeout` for
/// the stream while another thread writes; the write itself is bounded by the write
/// watchdog. Leaves the outbox to the background writer.
pub(crate) fn write_now(shared: &Shared, item: Item) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let result = {
        let Some(mut slot) = shared.stream.slot.try_lock_for(shared.config.send_timeout) else {
            shared.ledger.lock().forget(&item);
            return Err(Error::Timeout {
                waited: started.elapsed(),
            });
        };
        write_one(shared, &mut slot, item)
    };
    if shared.ledger.lock().outbox_len() > 0 {
        shared.wake_writer();
    }
    result
}

fn write_one(shared: &Shared, slot: &mut Option<Slot>, item: Item) -> Result<(), Error> {
    let Some(s) = slot.as_mut().filter(|s| !s.broken) else {
        shared.ledger.lock().forget(&item);
        return Err(Error::Unavailable);
    };
    if s.dedicated {
        // This epoch isolates a suspect group; the payload waits for the next one (it
        // is held, so it counts as taken).
        shared.ledger.lock().requeue_new(item);
        return Ok(());
    }
    let batch = vec![item];
    match write_batch(shared, s, &batch) {
        Ok(()) => {
            record_written(shared, s, batch);
            Ok(())
        }
        Err(e) => {
            s.broken = true;
            shared.ledger.lock().forget(&batch[0]);
            let _ = shared.reports.send(Report::WriteFailed { epoch: s.epoch });
            Err(Error::Rpc(e))
        }
    }
}

/// Writes one batch of the outbox (or of the current dedicated epoch's group).
fn write_batch_of_outbox(shared: &Shared, slot: &mut MutexGuard<'_, Option<Slot>>) -> Pass {
    let Some(s) = slot.as_mut().filter(|s| !s.broken) else {
        return Pass::Blocked;
    };
    let (epoch, room) = match shared.config.delivery {
        DeliveryMode::AtLeastOnce if s.dedicated => (Some(s.epoch), MAX_BATCH),
        DeliveryMode::AtLeastOnce => (
            Some(s.epoch),
            shared.config.commit_every.saturating_sub(s.written),
        ),
        _ => (None, MAX_BATCH),
    };
    if room == 0 {
        ask_rotate(shared, s);
        return Pass::Blocked;
    }
    // Bound first: the ledger lock must not be held through the match.
    let taken = shared
        .ledger
        .lock()
        .take_batch(epoch, room.min(MAX_BATCH), MAX_BATCH_BYTES);
    let batch = match taken {
        Batch::Items(batch) => batch,
        Batch::Empty => return Pass::Drained,
        Batch::GroupWritten => {
            ask_rotate(shared, s);
            return Pass::Blocked;
        }
    };
    if let Err(e) = write_batch(shared, s, &batch) {
        debug!("write on epoch {} failed: {e}", s.epoch);
        s.broken = true;
        if epoch.is_some() {
            // Some of the batch may have reached the collector before the call
            // ended: the epoch's final status decides for all of it (re-sent, or put
            // on trial with the rest).
            shared.ledger.lock().written(s.epoch, batch);
        } else {
            Counters::add(&shared.counters.retried, batch.len() as u64);
            shared.ledger.lock().requeue(batch);
        }
        let _ = shared.reports.send(Report::WriteFailed { epoch: s.epoch });
        return Pass::Blocked;
    }
    record_written(shared, s, batch);
    Pass::Wrote
}

/// One batch: every payload but the last with the buffer hint, then a flush.
///
/// The batch is written by a future on the channel's completion-queue thread, which is
/// where grpc reports each message's completion: the next message goes out from there
/// at once, and this thread waits once per batch, not once per message. Each message
/// handed to the call counts as progress for the write watchdog, which times lack of
/// progress, not the whole batch; when it cancels the call, the pending send fails and
/// the future returns.
fn write_batch(shared: &Shared, slot: &mut Slot, batch: &[Item]) -> grpcio::Result<()> {
    let Some(mut sink) = slot.sink.take() else {
        return Err(grpcio::Error::RemoteStopped);
    };
    let messages: Vec<GrpcSlice> = batch.iter().map(|i| i.bytes.clone()).collect();
    let progress = shared.stream.progress.clone();
    progress.mark();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    slot.client.spawn(async move {
        let write = async {
            let last = messages.len();
            for (i, message) in messages.into_iter().enumerate() {
                let flags = WriteFlags::default().buffer_hint(i + 1 < last);
                sink.feed((message, flags)).await?;
                progress.mark();
            }
            sink.flush().await
        };
        let result = match AssertUnwindSafe(write).catch_unwind().await {
            Ok(result) => result,
            Err(_) => {
                error!("grpcio panicked while writing; the call is abandoned");
                Err(grpcio::Error::RemoteStopped)
            }
        };
        let _ = done_tx.send((sink, result));
    });
    let outcome = done_rx.recv();
    shared.stream.progress.end();
    match outcome {
        Ok((sink, result)) => {
            slot.sink = Some(sink);
            result
        }
        // The completion-queue thread dropped the future (it is shutting down).
        Err(_) => Err(grpcio::Error::RemoteStopped),
    }
}

fn record_written(shared: &Shared, slot: &mut Slot, batch: Vec<Item>) {
    let n = batch.len();
    let bytes: usize = batch.iter().map(Item::len).sum();
    Counters::add(&shared.counters.sent, n as u64);
    Counters::add(&shared.counters.bytes_sent, bytes as u64);
    slot.written += n;
    match shared.config.delivery {
        DeliveryMode::AtLeastOnce => {
            if !shared.ledger.lock().written(slot.epoch, batch) {
                // The call is over; stop writing on it.
                slot.broken = true;
                warn!(
                    "epoch {} ended while it was written; re-sending {n}",
                    slot.epoch
                );
                Counters::add(&shared.counters.retried, n as u64);
                Counters::add(&shared.counters.resent_after_fault, n as u64);
            }
            // Commit at `commit_every`, or earlier when the held payloads reach half the
            // buffer bound, so that acknowledgements free room in time. (A dedicated
            // epoch asks once its whole group is written.)
            if !slot.dedicated
                && (slot.written >= shared.config.commit_every || shared.ledger.lock().half_full())
            {
                ask_rotate(shared, slot);
            }
        }
        _ => {
            {
                let mut ledger = shared.ledger.lock();
                ledger.settle(&batch);
                Counters::add(&shared.counters.acknowledged, n as u64);
                Counters::add(&shared.counters.entries_acknowledged, entries_of(&batch));
            }
            shared.ledger_changed.notify_all();
        }
    }
}

fn ask_rotate(shared: &Shared, slot: &mut Slot) {
    if !slot.rotate_asked {
        slot.rotate_asked = true;
        let _ = shared.commands.send(Command::Rotate { epoch: slot.epoch });
    }
}
