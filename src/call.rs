//! The `SubmitStream` call as logsender drives it: the method and its marshallers, the
//! write half of the current call ([`Slot`]), and the lock that guards it ([`Stream`]),
//! with the progress clock the supervisor's write watchdog reads.
//!
//! Writers only ever *use* the slot; the supervisor alone fills it, swaps it at an
//! epoch boundary and empties it.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{
    Client, ClientDuplexSender, GrpcSlice, Marshaller, MessageReader, Method, MethodType,
};
use parking_lot::Mutex;

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

pub(crate) fn ser_slice(msg: &GrpcSlice, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    // A reference-count bump: the encoded bytes are not copied.
    *buf = msg.clone();
    Ok(())
}

pub(crate) fn de_slice(reader: MessageReader) -> grpcio::Result<GrpcSlice> {
    de_bytes(reader).map(GrpcSlice::from)
}

pub(crate) fn ser_bytes(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

pub(crate) fn de_bytes(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(bytes)
}

/// The write half of the current call.
pub(crate) struct Slot {
    /// `None` only while a batch is being written on the completion-queue thread (or
    /// if that thread went away with it: the call is over then).
    pub(crate) sink: Option<ClientDuplexSender<GrpcSlice>>,
    /// Runs futures on the channel's completion-queue thread.
    pub(crate) client: Client,
    /// The call's id, which is also its epoch's.
    pub(crate) epoch: u64,
    /// The epoch carries one suspect group and nothing else (see the ledger).
    pub(crate) dedicated: bool,
    /// Payloads written on this call.
    pub(crate) written: usize,
    /// A write on this call failed: the call is over.
    pub(crate) broken: bool,
    /// The supervisor was asked to rotate this epoch.
    pub(crate) rotate_asked: bool,
}

impl Slot {
    pub(crate) fn new(
        sink: ClientDuplexSender<GrpcSlice>,
        client: Client,
        epoch: u64,
        dedicated: bool,
    ) -> Self {
        Slot {
            sink: Some(sink),
            client,
            epoch,
            dedicated,
            written: 0,
            broken: false,
            rotate_asked: false,
        }
    }
}

/// The slot behind the stream lock, and the clock the write watchdog reads.
pub(crate) struct Stream {
    pub(crate) slot: Mutex<Option<Slot>>,
    pub(crate) progress: Progress,
}

impl Stream {
    pub(crate) fn new() -> Self {
        Stream {
            slot: Mutex::new(None),
            progress: Progress {
                at: Arc::new(AtomicU64::new(0)),
                base: Instant::now(),
            },
        }
    }
}

/// When the write in progress last made progress (its start, or the last message it
/// handed to the call). Cloned into the future that writes a batch.
#[derive(Clone)]
pub(crate) struct Progress {
    /// Nanoseconds since `base`, plus one; 0 when no write is going on.
    at: Arc<AtomicU64>,
    base: Instant,
}

impl Progress {
    /// When the write in progress last made progress, if a write is going on.
    pub(crate) fn last(&self) -> Option<Instant> {
        match self.at.load(Ordering::Acquire) {
            0 => None,
            n => Some(crate::clock::after(self.base, Duration::from_nanos(n - 1))),
        }
    }

    /// Records progress now (a write began, or one of its messages went out).
    pub(crate) fn mark(&self) {
        let n = u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.at.store(n, Ordering::Release);
    }

    /// The write in progress is over.
    pub(crate) fn end(&self) {
        self.at.store(0, Ordering::Release);
    }
}
