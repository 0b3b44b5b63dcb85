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
use crate::ledger::Item;
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
    written: usize,
    broken: bool,
    rotate_asked: bool,
}

impl Slot {
    /// Whether a write on this call failed (the call is over).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(crate) fn new(sink: ClientDuplexSender<GrpcSlice>, epoch: u64) -> Self {
        Slot {
            sink,
            epoch,
            written: 0,
            broken: false,
            rotate_asked: false,
        }
    }
}

/// The slot and the clock the supervisor's write watchdog reads.
pub(crate) struct Stream {
    pub(crate) slot: Mutex<Option<Slot>>,
    /// Nanoseconds since `base` when the current write began, plus one; 0 when idle.
    write_started: AtomicU64,
    base: Instant,
}

impl Stream {
    pub(crate) fn new() -> Self {
        Stream {
            slot: Mutex::new(None),
            write_started: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// When the write in progress began, if one is.
    pub(crate) fn write_started(&self) -> Option<Instant> {
        match self.write_started.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn begin_write(&self) {
        let n = self.base.elapsed().as_nanos() as u64 + 1;
        self.write_started.store(n, Ordering::Release);
    }

    fn end_write(&self) {
        self.write_started.store(0, Ordering::Release);
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
            if self.ledger.lock().outbox_len() == 0 {
                return;
            }
        }
    }

    /// Writes the outbox and then `item` (if any) while holding the lock; used by
    /// `send_logs`. Returns the outcome of `item`'s own write.
    pub(crate) fn write_now(&self, item: Item) -> Result<(), crate::Error> {
        let result = {
            // Bounded: a write stuck longer than this is being cancelled anyway.
            let Some(mut slot) = self.stream.slot.try_lock_for(self.config.write_timeout) else {
                self.ledger.lock().forget(&item);
                return Err(crate::Error::Unavailable);
            };
            self.write_outbox(&mut slot);
            self.write_one(&mut slot, item)
        };
        // Writers that found the lock taken meanwhile left their payloads to us.
        if self.ledger.lock().outbox_len() > 0 {
            self.pump();
        }
        result
    }

    fn write_one(&self, slot: &mut Option<Slot>, item: Item) -> Result<(), crate::Error> {
        let Some(s) = slot.as_mut().filter(|s| !s.broken) else {
            self.ledger.lock().forget(&item);
            return Err(crate::Error::Unavailable);
        };
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
            let room = match self.config.delivery {
                DeliveryMode::AtLeastOnce => self.config.commit_every.saturating_sub(s.written),
                _ => MAX_BATCH,
            };
            if room == 0 {
                self.ask_rotate(s);
                return Pass::Blocked;
            }
            let batch = self
                .ledger
                .lock()
                .take_batch(room.min(MAX_BATCH), MAX_BATCH_BYTES);
            if batch.is_empty() {
                return Pass::Drained;
            }
            if let Err(e) = self.write_batch(s, &batch) {
                debug!("write on epoch {} failed: {e}", s.epoch);
                s.broken = true;
                Counters::add(&self.counters.retried, batch.len() as u64);
                self.ledger.lock().requeue(batch);
                let _ = self.events.send(Event::WriteFailed { epoch: s.epoch });
                return Pass::Blocked;
            }
            self.record_written(s, batch);
        }
    }

    /// One batch: every payload but the last with the buffer hint, then a flush.
    fn write_batch(&self, slot: &mut Slot, batch: &[Item]) -> grpcio::Result<()> {
        self.stream.begin_write();
        let result = block_on(async {
            for (i, item) in batch.iter().enumerate() {
                let last = i + 1 == batch.len();
                let flags = WriteFlags::default().buffer_hint(!last);
                slot.sink.feed((item.bytes.clone(), flags)).await?;
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
