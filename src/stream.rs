//! The shared stream: the write half of the current `SubmitStream` call behind one
//! mutex, and the write path that moves encoded payloads from the outbox onto it.
//!
//! Writers (workers, `send_logs`, a closing thread) only ever *use* the slot; the
//! supervisor alone fills it, swaps it at an epoch boundary and empties it.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use futures_util::SinkExt;
use grpcio::{
    ClientDuplexSender, GrpcSlice, Marshaller, MessageReader, Method, MethodType, WriteFlags,
};
use log::{debug, warn};
use parking_lot::{Mutex, MutexGuard};

use crate::config::DeliveryMode;
use crate::ledger::{Batch, Item};
use crate::sender::Shared;
use crate::stats::Counters;
use crate::supervisor::Event;

/// gRPC method path of the GoSight log stream.
pub const SUBMIT_STREAM_PATH: &str = "/proto.LogService/SubmitStream";

/// The client side of `SubmitStream`, driven as a *duplex* call: the bytes on the wire
/// are those of a client stream, but a call that the server ends `OK` without a response
/// message (the GoSight way) is a response stream that simply ends, instead of a panic
/// inside grpcio's client-streaming receiver. Requests are pre-encoded `LogPayload`s;
/// responses are kept as raw bytes (an optional `LogResponse`).
pub(crate) const SUBMIT_STREAM: Method<GrpcSlice, Vec<u8>> = Method {
    ty: MethodType::Duplex,
    name: SUBMIT_STREAM_PATH,
    req_mar: Marshaller {
        ser: ser_slice,
        de: de_slice,
    },
    resp_mar: Marshaller {
        ser: ser_bytes,
        de: de_bytes,
    },
};

fn ser_slice(msg: &GrpcSlice, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    // A reference-count bump: the encoded bytes are not copied.
    *buf = msg.clone();
    Ok(())
}

fn de_slice(reader: MessageReader) -> grpcio::Result<GrpcSlice> {
    de_bytes(reader).map(GrpcSlice::from)
}

fn ser_bytes(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

fn de_bytes(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(bytes)
}

/// Most payloads (and about the most bytes) written under one hold of the stream lock,
/// so an epoch swap never waits long.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The write half of the current call.
pub(crate) struct Slot {
    pub(crate) sink: ClientDuplexSender<GrpcSlice>,
    pub(crate) epoch: u64,
    /// The epoch carries one suspect group and nothing else (see the ledger).
    dedicated: bool,
    written: usize,
    broken: bool,
    rotate_asked: bool,
}

impl Slot {
    /// Whether a write on this call failed (the call is over).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// How many payloads were written on this call.
    pub(crate) fn written(&self) -> usize {
        self.written
    }

    pub(crate) fn new(sink: ClientDuplexSender<GrpcSlice>, epoch: u64, dedicated: bool) -> Self {
        Slot {
            sink,
            epoch,
            dedicated,
            written: 0,
            broken: false,
            rotate_asked: false,
        }
    }
}

/// The slot and the clock the supervisor's write watchdog reads.
pub(crate) struct Stream {
    pub(crate) slot: Mutex<Option<Slot>>,
    /// Nanoseconds since `base` of the last progress of the write in progress (its start,
    /// or the last message it handed to the call), plus one; 0 when no write is going on.
    progress: AtomicU64,
    base: Instant,
}

impl Stream {
    pub(crate) fn new() -> Self {
        Stream {
            slot: Mutex::new(None),
            progress: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// When the write in progress last made progress, if a write is going on.
    pub(crate) fn last_progress(&self) -> Option<Instant> {
        match self.progress.load(Ordering::Acquire) {
            0 => None,
            n => Some(crate::clock::after(self.base, Duration::from_nanos(n - 1))),
        }
    }

    /// Records progress now (a write began, or one of its messages went out).
    fn progressed(&self) {
        let n = u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.progress.store(n, Ordering::Release);
    }

    fn end_write(&self) {
        self.progress.store(0, Ordering::Release);
    }
}

/// Why a pass of the write path stopped.
#[derive(PartialEq, Eq)]
enum Pass {
    /// The outbox was empty.
    Drained,
    /// No usable stream (none, broken, or the epoch is full and waits for its swap).
    Blocked,
}

impl Shared {
    /// Writes the outbox onto the stream if no one else is writing. Whoever holds the
    /// lock writes everybody's payloads (batched), so encoders never wait on the wire.
    pub(crate) fn pump(&self) {
        loop {
            let Some(mut slot) = self.stream.slot.try_lock() else {
                // The holder re-checks the outbox after it lets go.
                return;
            };
            if self.write_outbox(&mut slot) == Pass::Blocked {
                return;
            }
            drop(slot);
            // Suspect groups wait for an epoch of their own: only the outbox proper
            // is worth another pass.
            if self.ledger.lock().normal_len() == 0 {
                return;
            }
        }
    }

    /// Writes `item` (held already) now, for `send_logs`. Waits at most `send_timeout`
    /// for the stream while another thread writes; the write itself is bounded by the
    /// write watchdog. Leaves the outbox to the background writer.
    pub(crate) fn write_now(&self, item: Item) -> Result<(), crate::Error> {
        let started = Instant::now();
        let result = {
            let Some(mut slot) = self.stream.slot.try_lock_for(self.config.send_timeout) else {
                self.ledger.lock().forget(&item);
                return Err(crate::Error::Timeout {
                    waited: started.elapsed(),
                });
            };
            self.write_one(&mut slot, item)
        };
        if self.ledger.lock().outbox_len() > 0 {
            self.wake_writer();
        }
        result
    }

    fn write_one(&self, slot: &mut Option<Slot>, item: Item) -> Result<(), crate::Error> {
        let Some(s) = slot.as_mut().filter(|s| !s.broken) else {
            self.ledger.lock().forget(&item);
            return Err(crate::Error::Unavailable);
        };
        if s.dedicated {
            // This epoch isolates a suspect group; the payload waits for the next one
            // (it is held, so it counts as taken).
            self.ledger.lock().requeue_new(item);
            return Ok(());
        }
        let batch = vec![item];
        match self.write_batch(s, &batch) {
            Ok(()) => {
                self.record_written(s, batch);
                Ok(())
            }
            Err(e) => {
                s.broken = true;
                self.ledger.lock().forget(&batch[0]);
                let _ = self.events.send(Event::WriteFailed { epoch: s.epoch });
                Err(crate::Error::Rpc(e))
            }
        }
    }

    fn write_outbox(&self, slot: &mut MutexGuard<'_, Option<Slot>>) -> Pass {
        loop {
            let Some(s) = slot.as_mut().filter(|s| !s.broken) else {
                return Pass::Blocked;
            };
            let (epoch, room) = match self.config.delivery {
                DeliveryMode::AtLeastOnce if s.dedicated => (Some(s.epoch), MAX_BATCH),
                DeliveryMode::AtLeastOnce => (
                    Some(s.epoch),
                    self.config.commit_every.saturating_sub(s.written),
                ),
                _ => (None, MAX_BATCH),
            };
            if room == 0 {
                self.ask_rotate(s);
                return Pass::Blocked;
            }
            // Bound first: the ledger lock must not be held through the match.
            let taken = self
                .ledger
                .lock()
                .take_batch(epoch, room.min(MAX_BATCH), MAX_BATCH_BYTES);
            let batch = match taken {
                Batch::Items(batch) => batch,
                Batch::Empty => return Pass::Drained,
                Batch::GroupWritten => {
                    self.ask_rotate(s);
                    return Pass::Blocked;
                }
            };
            if let Err(e) = self.write_batch(s, &batch) {
                debug!("write on epoch {} failed: {e}", s.epoch);
                s.broken = true;
                if epoch.is_some() {
                    // Some of the batch may have reached the collector before the call
                    // ended: the epoch's final status decides for all of it (re-sent,
                    // or put on trial with the rest).
                    self.ledger.lock().written(s.epoch, batch);
                } else {
                    Counters::add(&self.counters.retried, batch.len() as u64);
                    self.ledger.lock().requeue(batch);
                }
                let _ = self.events.send(Event::WriteFailed { epoch: s.epoch });
                return Pass::Blocked;
            }
            self.record_written(s, batch);
        }
    }

    /// One batch: every payload but the last with the buffer hint, then a flush. Each
    /// message handed to the call counts as progress for the write watchdog, which
    /// times lack of progress, not the whole batch.
    fn write_batch(&self, slot: &mut Slot, batch: &[Item]) -> grpcio::Result<()> {
        self.stream.progressed();
        let result = block_on(async {
            for (i, item) in batch.iter().enumerate() {
                let last = i + 1 == batch.len();
                let flags = WriteFlags::default().buffer_hint(!last);
                slot.sink.feed((item.bytes.clone(), flags)).await?;
                self.stream.progressed();
            }
            slot.sink.flush().await
        });
        self.stream.end_write();
        result
    }

    fn record_written(&self, slot: &mut Slot, batch: Vec<Item>) {
        let n = batch.len();
        let bytes: usize = batch.iter().map(Item::len).sum();
        Counters::add(&self.counters.sent, n as u64);
        Counters::add(&self.counters.bytes_sent, bytes as u64);
        slot.written += n;
        match self.config.delivery {
            DeliveryMode::AtLeastOnce => {
                if !self.ledger.lock().written(slot.epoch, batch) {
                    // The call is over; stop writing on it.
                    slot.broken = true;
                    warn!(
                        "epoch {} ended while it was written; re-sending {n}",
                        slot.epoch
                    );
                    Counters::add(&self.counters.retried, n as u64);
                    Counters::add(&self.counters.resent_after_fault, n as u64);
                }
                // Commit at `commit_every`, or earlier when the held payloads reach half
                // the buffer bound, so that acknowledgements free room in time.
                if slot.written >= self.config.commit_every || self.ledger.lock().half_full() {
                    self.ask_rotate(slot);
                }
            }
            _ => {
                {
                    let mut ledger = self.ledger.lock();
                    ledger.settle(&batch);
                    Counters::add(&self.counters.acknowledged, n as u64);
                }
                self.ledger_cv.notify_all();
            }
        }
    }

    fn ask_rotate(&self, slot: &mut Slot) {
        if !slot.rotate_asked {
            slot.rotate_asked = true;
            let _ = self.events.send(Event::Rotate { epoch: slot.epoch });
        }
    }
}
