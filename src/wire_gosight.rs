//! GoSight's wire: `proto.LogService/SubmitStream`, one long-lived client stream
//! committed in epochs. The writer side moves encoded payloads from the ledger's
//! outbox onto the current call, under the stream lock ([`pump`], [`write_now`]);
//! the supervisor side ([`Stream`], a [`Protocol`]) opens each epoch's call, swaps it
//! into the slot, half-closes it, and reads its final status: `OK` after the
//! half-close commits the epoch's payloads.
//!
//! Whoever holds the stream lock writes everybody's payloads, in batches, so encoders
//! never wait on the wire; the background writer does it when no user thread should
//! (after a reconnect, a failed epoch, for `flush` and `close`).

use std::collections::HashMap;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use grpcio::{
    CallOption, Client, ClientDuplexReceiver, ClientDuplexSender, GrpcSlice, RpcStatus,
    RpcStatusCode, WriteFlags,
};
use log::{debug, error, info, warn};
use parking_lot::{Mutex, MutexGuard};

use crate::call::{Slot, SUBMIT_STREAM};
use crate::clock::after;
use crate::command::{Command, Report};
use crate::config::DeliveryMode;
use crate::error::{classify, Error, Retry};
use crate::ledger::{entries_of, Batch, Item};
use crate::link::{Ended, Judged, Protocol, PROBE_TIMEOUT};
use crate::shared::Shared;
use crate::stats::Counters;

/// Most payloads (and about the most bytes) written under one hold of the stream lock,
/// so an epoch swap never waits long.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 4 << 20;

// ---------------------------------------------------------------------------------
// The writer side.

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
    let started = Instant::now();
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
            let _ = shared
                .commands
                .send(Command::WriteFailed { epoch: s.epoch });
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
        let _ = shared
            .commands
            .send(Command::WriteFailed { epoch: s.epoch });
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

// ---------------------------------------------------------------------------------
// The supervisor side.

type Receiving = Arc<Mutex<ClientDuplexReceiver<Vec<u8>>>>;

/// An open call, seen from the supervisor.
struct Call {
    id: u64,
    recv: Receiving,
    /// Set when logsender half-closes the call; read by the call's watcher when the
    /// status arrives.
    half_closed: Arc<AtomicBool>,
    opened: Instant,
    /// The epoch carries one suspect group alone.
    dedicated: bool,
}

/// A half-closed call (or a probe) waiting for its final status.
struct Closing {
    recv: Receiving,
    deadline: Instant,
}

/// The GoSight stream as the supervisor drives it: the current epoch's call (whose
/// write half is in the slot) and the calls half-closed and waiting for their status.
pub(crate) struct Stream {
    shared: Arc<Shared>,
    current: Option<Call>,
    closing: HashMap<u64, Closing>,
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Stream {
            shared,
            current: None,
            closing: HashMap::new(),
        }
    }

    /// Opens a call with a watcher on its response side that reports
    /// [`Report::CallEnded`]. Returns the id, the write half, the response half and the
    /// half-close flag.
    fn start_call(
        &self,
        client: &Client,
    ) -> grpcio::Result<(
        u64,
        ClientDuplexSender<GrpcSlice>,
        Receiving,
        Arc<AtomicBool>,
    )> {
        let (sink, recv) = client.duplex_streaming(&SUBMIT_STREAM, CallOption::default())?;
        let id = self.shared.next_call_id();
        let recv: Receiving = Arc::new(Mutex::new(recv));
        let half_closed = Arc::new(AtomicBool::new(false));
        let watched = recv.clone();
        let flag = half_closed.clone();
        let reports = self.shared.reports.clone();
        client.spawn(async move {
            let mut responses = Vec::new();
            let result = loop {
                match poll_fn(|cx| watched.lock().poll_next_unpin(cx)).await {
                    Some(Ok(response)) => {
                        debug!(
                            "call {id}: collector answered with {} bytes",
                            response.len()
                        );
                        responses.push(response);
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Ok(responses),
                }
            };
            // Read here, on the completion-queue thread, in the order grpc reported the
            // half-close and the status: not in the order the supervisor dequeues events.
            let after_half_close = flag.load(Ordering::Acquire);
            let _ = reports.send(Report::CallEnded {
                id,
                result,
                after_half_close,
            });
        });
        Ok((id, sink, recv, half_closed))
    }

    /// Opens the next epoch's call and starts watching its response side.
    fn open_call(&self, client: &Client) -> grpcio::Result<(Slot, Call)> {
        let (id, sink, recv, half_closed) = self.start_call(client)?;
        let dedicated = self.shared.config.delivery == DeliveryMode::AtLeastOnce
            && self.shared.ledger.lock().open_epoch(id, Instant::now());
        if dedicated {
            debug!("epoch {id} carries a suspect group alone");
        }
        Ok((
            Slot::new(sink, client.clone(), id, dedicated),
            Call {
                id,
                recv,
                half_closed,
                opened: Instant::now(),
                dedicated,
            },
        ))
    }

    /// Commits the current epoch: opens the next call, swaps it in, half-closes the old
    /// one. An error: the channel cannot open calls (the current epoch was half-closed).
    fn rotate(&mut self, client: Option<&Client>) -> grpcio::Result<()> {
        if self.current.is_none() {
            return Ok(());
        }
        // The old call stays `current` while the slot is swapped, so the write watchdog
        // (which runs while we wait for the stream lock) can still cancel it.
        match client.map(|c| self.open_call(c)) {
            Some(Ok((slot, call))) => {
                let old_slot = self.swap_slot(Some(slot));
                if let Some(old) = self.current.replace(call) {
                    self.half_close(old, old_slot);
                }
                self.shared.wake_writer();
                Ok(())
            }
            Some(Err(e)) => {
                self.retire_current();
                Err(e)
            }
            None => {
                self.retire_current();
                Err(grpcio::Error::RemoteStopped)
            }
        }
    }

    /// Takes the current call, which has ended, out of service; returns its write half.
    fn drop_current(&mut self) -> Option<Slot> {
        let slot = self.swap_slot(None);
        self.current = None;
        slot
    }

    /// Takes the current call out of service and half-closes it.
    fn retire_current(&mut self) {
        let old_slot = self.swap_slot(None);
        if let Some(old) = self.current.take() {
            self.half_close(old, old_slot);
        }
    }

    /// Half-closes a call (after its last write) and waits for its status. A call whose
    /// write failed is cancelled instead: it is over, and grpcio must not be asked to
    /// close a sink whose last send already failed.
    fn half_close(&mut self, call: Call, slot: Option<Slot>) {
        let deadline = self
            .shared
            .bounded_by_close(after(Instant::now(), self.shared.config.commit_timeout));
        match slot {
            Some(Slot {
                sink: Some(sink),
                broken: false,
                client,
                ..
            }) => spawn_half_close(&client, sink, call.id, call.half_closed.clone()),
            _ => call.recv.lock().cancel(),
        }
        self.closing.insert(
            call.id,
            Closing {
                recv: call.recv,
                deadline,
            },
        );
    }

    /// Replaces the slot. Never blocks for long: while a writer holds the lock, the
    /// watchdog keeps running, so a stalled write is cancelled rather than waited for.
    fn swap_slot(&mut self, new: Option<Slot>) -> Option<Slot> {
        let mut new = Some(new);
        loop {
            if let Some(mut slot) = self
                .shared
                .stream
                .slot
                .try_lock_for(Duration::from_millis(20))
            {
                return std::mem::replace(&mut *slot, new.take().flatten());
            }
            self.check_write_watchdog(Instant::now());
        }
    }

    /// A write that made no progress for `write_timeout` (a stalled collector) is
    /// released by cancelling the call it is on: always the current one, since the old
    /// call stays current until its slot has been swapped out.
    fn check_write_watchdog(&self, now: Instant) {
        if let (Some(progress), Some(call)) = (self.shared.stream.progress.last(), &self.current) {
            let limit = self
                .shared
                .bounded_by_close(after(progress, self.shared.config.write_timeout));
            if now >= limit {
                warn!(
                    "a write on epoch {} made no progress for {:?}; cancelling the call",
                    call.id,
                    now.saturating_duration_since(progress)
                );
                call.recv.lock().cancel();
            }
        }
    }
}

impl Protocol for Stream {
    fn start(&mut self, client: &Client) -> grpcio::Result<()> {
        let (slot, call) = self.open_call(client)?;
        info!(
            "stream to {} open (epoch {})",
            self.shared.config.addr, call.id
        );
        self.current = Some(call);
        self.swap_slot(Some(slot));
        Ok(())
    }

    fn is_up(&self) -> bool {
        self.current.is_some()
    }

    fn stop(&mut self) {
        self.retire_current();
    }

    fn try_empty(&mut self, client: Option<&Client>) -> grpcio::Result<()> {
        // Its empty epoch is half-closed at once (the next one opened), so that its
        // status says whether the collector takes calls.
        self.rotate(client)
    }

    fn command(&mut self, client: Option<&Client>, command: &Command) -> grpcio::Result<()> {
        match command {
            Command::Rotate { epoch } => {
                crate::hooks::pause(crate::hooks::Point::BeforeRotate);
                if self.current.as_ref().is_some_and(|c| c.id == *epoch) {
                    return self.rotate(client);
                }
            }
            Command::Commit => {
                // A dedicated epoch rotates itself once its whole group is written.
                let carries = self.current.as_ref().is_some_and(|c| {
                    let ledger = self.shared.ledger.lock();
                    ledger.epoch_len(c.id) > 0 && !ledger.group_unwritten(c.id)
                });
                if carries {
                    return self.rotate(client);
                }
            }
            Command::WriteFailed { epoch } => {
                // Make sure the call ends, so its status arrives and the epoch settles.
                if let Some(c) = self.current.as_ref().filter(|c| c.id == *epoch) {
                    c.recv.lock().cancel();
                }
            }
            Command::Shutdown => self.stop(),
        }
        Ok(())
    }

    fn probe_ended(
        &mut self,
        id: u64,
        result: &grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    ) -> bool {
        self.closing.remove(&id);
        result.is_ok() && after_half_close
    }

    fn judge(
        &mut self,
        id: u64,
        result: grpcio::Result<Vec<Vec<u8>>>,
        after_half_close: bool,
    ) -> Judged {
        self.closing.remove(&id);
        let was_current = self.current.as_ref().is_some_and(|c| c.id == id);
        let mut early_ok = false;
        let status = match result {
            Ok(_) if after_half_close => {
                return Judged {
                    ended: Ended::Delivered {
                        rejected: 0,
                        message: String::new(),
                    },
                    took_down: false,
                    worked: false,
                }
            }
            Ok(_) => {
                let n = self.shared.ledger.lock().epoch_len(id);
                if n > 0 {
                    warn!(
                        "the collector answered OK on epoch {id} before logsender half-closed \
                         it: it may not have read all {n} payloads, so they are re-sent (a \
                         collector must read a stream to its end before it answers OK)"
                    );
                }
                early_ok = true;
                RpcStatus::with_message(
                    RpcStatusCode::ABORTED,
                    "the collector ended the stream with OK before it was half-closed".into(),
                )
            }
            Err(grpcio::Error::RpcFailure(s)) => s,
            // Transport errors without a status count as UNAVAILABLE.
            Err(other) => RpcStatus::with_message(RpcStatusCode::UNAVAILABLE, other.to_string()),
        };
        let code = status.code();
        // A broken connection, a timeout or an early OK say nothing about the payloads;
        // any other status might be about one of them.
        let about_payloads = !early_ok
            && !matches!(
                code,
                RpcStatusCode::UNAVAILABLE
                    | RpcStatusCode::CANCELLED
                    | RpcStatusCode::DEADLINE_EXCEEDED
            );
        let slot = if was_current {
            self.drop_current()
        } else {
            None
        };
        Judged {
            ended: Ended::Failed {
                status,
                about_payloads,
                retry: classify(code),
                wait: None,
            },
            took_down: was_current,
            worked: slot.is_some_and(|s| s.written > 0),
        }
    }

    fn classify(&self, status: &RpcStatus) -> (Retry, Option<Duration>) {
        (classify(status.code()), None)
    }

    fn probe(&mut self, client: &Client) -> Option<u64> {
        let (id, sink, recv, half_closed) = self.start_call(client).ok()?;
        spawn_half_close(client, sink, id, half_closed);
        let deadline = self
            .shared
            .bounded_by_close(after(Instant::now(), PROBE_TIMEOUT));
        self.closing.insert(id, Closing { recv, deadline });
        Some(id)
    }

    fn suspects_due(&mut self, client: Option<&Client>) -> grpcio::Result<()> {
        // Unless the current epoch is dedicated already: it rotates itself once its
        // group is written.
        if self.current.as_ref().is_some_and(|c| !c.dedicated)
            && self.shared.ledger.lock().has_suspects(Instant::now())
        {
            return self.rotate(client);
        }
        Ok(())
    }

    fn tick(&mut self, client: Option<&Client>, now: Instant) -> grpcio::Result<()> {
        self.check_write_watchdog(now);
        // Half-closed calls and probes whose status is overdue.
        for (id, closing) in &self.closing {
            if now >= self.shared.bounded_by_close(closing.deadline) {
                warn!("call {id}: no final status in time; cancelling it");
                closing.recv.lock().cancel();
            }
        }
        // Commit at least every `commit_interval`.
        if self.shared.config.delivery == DeliveryMode::AtLeastOnce {
            let due = self.current.as_ref().is_some_and(|c| {
                now >= after(c.opened, self.shared.config.commit_interval)
                    && self.shared.ledger.lock().epoch_len(c.id) > 0
            });
            if due {
                return self.rotate(client);
            }
        }
        Ok(())
    }

    fn next_timer(&self) -> Option<Instant> {
        let closing = self
            .closing
            .values()
            .map(|c| self.shared.bounded_by_close(c.deadline));
        let watchdog = self.shared.stream.progress.last().map(|started| {
            self.shared
                .bounded_by_close(after(started, self.shared.config.write_timeout))
        });
        let commit = self
            .current
            .as_ref()
            .filter(|_| self.shared.config.delivery == DeliveryMode::AtLeastOnce)
            .map(|c| after(c.opened, self.shared.config.commit_interval));
        closing.chain(watchdog).chain(commit).min()
    }

    fn pending(&self) -> usize {
        self.closing.len()
    }

    fn cancel_all(&mut self) {
        if let Some(call) = &self.current {
            call.recv.lock().cancel();
        }
        for closing in self.closing.values() {
            closing.recv.lock().cancel();
        }
    }
}

impl Drop for Stream {
    /// Cancels whatever is still open (the supervisor is done).
    fn drop(&mut self) {
        if let Some(call) = self.current.take() {
            call.recv.lock().cancel();
        }
        self.swap_slot(None);
        for (_, closing) in self.closing.drain() {
            closing.recv.lock().cancel();
        }
    }
}

/// Half-closes a call on the completion-queue thread. `half_closed` is set first, on
/// this (the supervisor's) thread, right before the half-close is handed to the gRPC
/// core (grpcio polls a spawned future once on the spawning thread, and the close is
/// issued in that poll). The call's watcher reads the flag on the completion-queue
/// thread when it sees the final status: a status it sees before the flag was set was
/// sent before the collector could know the stream had ended (an early OK proves
/// nothing). The window left is a status that reached the completion queue before the
/// flag was set but was processed after (the time it waits in the queue, normally
/// microseconds), and one the collector sent before it read the half-close: neither can
/// be told from a proper OK, and the collector's contract (read to the end before
/// answering) is what covers them.
fn spawn_half_close(
    client: &Client,
    mut sink: ClientDuplexSender<GrpcSlice>,
    id: u64,
    half_closed: Arc<AtomicBool>,
) {
    half_closed.store(true, Ordering::Release);
    client.spawn(async move {
        // An error means the call already ended; its status tells why.
        match AssertUnwindSafe(sink.close()).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("call {id}: half-close failed: {e}"),
            Err(_) => {
                error!("call {id}: grpcio panicked while half-closing; the call is cancelled")
            }
        }
    });
}
