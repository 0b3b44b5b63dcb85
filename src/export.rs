//! OTLP's `LogsService/Export` as logsender calls it: the method, the calls in flight
//! (shared by the writers that issue them and the supervisor that settles and cancels
//! them), and what a response or a status says (partial success, `RetryInfo`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use grpcio::{Client, ClientSStreamReceiver, GrpcSlice, Marshaller, Method, MethodType, RpcStatus};
use log::debug;
use parking_lot::Mutex;
use protobuf::Message;

use crate::call::{de_bytes, de_slice, ser_bytes, ser_slice};
use crate::error::Error;
use crate::otlp::pb::logs_service::ExportLogsServiceResponse;
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

    /// Reads the watched call to its end: every response, or its failure.
    pub(crate) async fn responses(&self) -> grpcio::Result<Vec<Vec<u8>>> {
        let mut responses = Vec::new();
        while let Some(response) = std::future::poll_fn(|cx| self.poll_next(cx)).await {
            responses.push(response?);
        }
        Ok(responses)
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

// ---------------------------------------------------------------------------------------
// Reading the collector's answers (pure functions, no state)

/// Generated rust-protobuf types for gRPC's rich error model (`proto/google/rpc/`):
/// [`rpc::status::Status`] and [`rpc::error_details::RetryInfo`]. Their `Any` and
/// `Duration` are `protobuf::well_known_types`.
mod rpc {
    // Generated code: most of it (accessors, descriptors) is never called here.
    #![allow(dead_code)]
    #![allow(missing_docs)]
    #![allow(
        unused_qualifications,
        unreachable_pub,
        clippy::pedantic,
        clippy::nursery
    )]

    include!(concat!(env!("OUT_DIR"), "/rpc/mod.rs"));
}

use rpc::error_details::RetryInfo;

/// What an OK answer to an Export says: the number of log records the collector
/// rejected (`ExportLogsPartialSuccess.rejected_log_records`, a negative count read as
/// 0) and its message (`error_message`, possibly empty, a warning when nothing was
/// rejected).
///
/// No bytes (an OK without a response message, or an empty response) and a response
/// without `partial_success` mean full success: `(0, "")`. Bytes that are not an
/// `ExportLogsServiceResponse` fail with [`Error::Decode`].
pub(crate) fn partial_success(response: &[u8]) -> Result<(u64, String), Error> {
    let response = ExportLogsServiceResponse::parse_from_bytes(response)?;
    Ok(match response.partial_success.into_option() {
        Some(partial) => (
            u64::try_from(partial.rejected_log_records).unwrap_or(0),
            partial.error_message,
        ),
        None => (0, String::new()),
    })
}

/// How long the collector asks the client to wait before it tries again: the
/// `retry_delay` of the first `google.rpc.RetryInfo` (an `Any` whose type URL names
/// `google.rpc.RetryInfo` after its last `/`) in the status's details, a serialized
/// `google.rpc.Status`.
///
/// `None` when there are no details, no `RetryInfo` among them, or the details, the
/// `RetryInfo` or its delay are malformed (a negative delay, `nanos` outside
/// `0..1_000_000_000`). The delay is the server's, unbounded (up to `i64::MAX` seconds):
/// the caller clamps it before it becomes a deadline (`clock::after` saturates).
pub(crate) fn retry_delay(status: &RpcStatus) -> Option<Duration> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let parsed = rpc::status::Status::parse_from_bytes(details)
        .map_err(|e| debug!("ignoring the status details of {:?}: {e}", status.code()))
        .ok()?;
    let any = parsed.details.iter().find(|any| any.is::<RetryInfo>())?;
    let info = RetryInfo::parse_from_bytes(&any.value)
        .map_err(|e| debug!("ignoring a malformed RetryInfo: {e}"))
        .ok()?;
    let delay = info.retry_delay.as_ref()?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(Duration::from_secs(seconds).saturating_add(Duration::from_nanos(u64::from(nanos))))
}

#[cfg(test)]
mod tests {
    use super::*;

    use grpcio::RpcStatusCode;
    use protobuf::well_known_types::any::Any;
    use protobuf::well_known_types::duration::Duration as PbDuration;
    use protobuf::MessageField;

    use crate::otlp::pb::logs_service::ExportLogsPartialSuccess;

    /// A `RetryInfo` of `seconds` and `nanos`, packed in an `Any` the usual way.
    fn retry_info(seconds: i64, nanos: i32) -> Any {
        let mut delay = PbDuration::new();
        delay.seconds = seconds;
        delay.nanos = nanos;
        let mut info = RetryInfo::new();
        info.retry_delay = MessageField::some(delay);
        let any = Any::pack(&info).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.rpc.RetryInfo");
        any
    }

    /// An `Any` of the given type URL and value.
    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut any = Any::new();
        any.type_url = type_url.to_string();
        any.value = value;
        any
    }

    /// A failed status whose details are a `google.rpc.Status` holding `details`.
    fn failed(details: Vec<Any>) -> RpcStatus {
        let mut status = rpc::status::Status::new();
        status.code = 8; // RESOURCE_EXHAUSTED
        status.message = "slow down".to_string();
        status.details = details;
        with_bytes(status.write_to_bytes().unwrap())
    }

    fn with_bytes(details: Vec<u8>) -> RpcStatus {
        RpcStatus::with_details(
            RpcStatusCode::RESOURCE_EXHAUSTED,
            "slow down".to_string(),
            details,
        )
    }

    /// A `google.rpc.ErrorInfo { reason: "RATE_LIMITED", domain: "example.com" }`,
    /// written by hand (the trimmed proto has no `ErrorInfo`).
    fn error_info() -> Any {
        let mut value = vec![0x0a, 12];
        value.extend_from_slice(b"RATE_LIMITED");
        value.extend_from_slice(&[0x12, 11]);
        value.extend_from_slice(b"example.com");
        any("type.googleapis.com/google.rpc.ErrorInfo", value)
    }

    #[test]
    fn retry_delay_reads_retry_info() {
        let status = failed(vec![retry_info(1, 500_000_000)]);
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_delay_finds_retry_info_among_other_details() {
        let status = failed(vec![error_info(), retry_info(0, 250_000_000), error_info()]);
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(250)));
        // Only the name after the last `/` counts, whatever the host part.
        let mut info = retry_info(3, 0);
        info.type_url = "example.com/types/google.rpc.RetryInfo".to_string();
        assert_eq!(
            retry_delay(&failed(vec![info])),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_delay_without_details_is_none() {
        assert_eq!(
            retry_delay(&RpcStatus::new(RpcStatusCode::UNAVAILABLE)),
            None
        );
        assert_eq!(retry_delay(&with_bytes(Vec::new())), None);
        // A status with no details in it.
        assert_eq!(retry_delay(&failed(Vec::new())), None);
    }

    #[test]
    fn retry_delay_ignores_other_detail_types() {
        assert_eq!(retry_delay(&failed(vec![error_info()])), None);
    }

    #[test]
    fn retry_delay_needs_the_exact_type_name() {
        for url in [
            "type.googleapis.com/google.rpc.RetryInfoX",
            "type.googleapis.com/xgoogle.rpc.RetryInfo",
            "type.googleapis.com/other.google.rpc.RetryInfo",
            "type.googleapis.com/google.rpc.retryinfo",
            "google.rpc.RetryInfo", // no `/`: not a type URL
            "",
        ] {
            let mut info = retry_info(2, 0);
            info.type_url = url.to_string();
            assert_eq!(retry_delay(&failed(vec![info])), None, "{url:?}");
        }
    }

    #[test]
    fn retry_delay_refuses_negative_or_malformed_delays() {
        for (seconds, nanos) in [
            (-1, 0),
            (0, -1),
            (-2, -500_000_000),
            (i64::MIN, 0),
            (1, 1_000_000_000),
            (0, i32::MAX),
        ] {
            let status = failed(vec![retry_info(seconds, nanos)]);
            assert_eq!(retry_delay(&status), None, "{seconds} s {nanos} ns");
        }
        // A RetryInfo without a delay.
        let empty = Any::pack(&RetryInfo::new()).unwrap();
        assert_eq!(retry_delay(&failed(vec![empty])), None);
        // A RetryInfo whose value does not parse (field 1 claims 5 bytes, has 1).
        let broken = any(
            "type.googleapis.com/google.rpc.RetryInfo",
            vec![0x0a, 0x05, 0x08],
        );
        assert_eq!(retry_delay(&failed(vec![broken])), None);
        // Zero is a delay (the caller decides what it means).
        let zero = failed(vec![retry_info(0, 0)]);
        assert_eq!(retry_delay(&zero), Some(Duration::ZERO));
    }

    #[test]
    fn retry_delay_on_garbage_details_is_none() {
        for bytes in [
            vec![0xff; 8],
            vec![0x1a, 0x7f, 0x01], // field 3 claims 127 bytes, has 1
            b"not a google.rpc.Status".to_vec(),
        ] {
            assert_eq!(retry_delay(&with_bytes(bytes.clone())), None, "{bytes:?}");
        }
    }

    #[test]
    fn retry_delay_takes_huge_delays_without_panicking() {
        let status = failed(vec![retry_info(i64::MAX, 999_999_999)]);
        let expected = Duration::new(i64::MAX as u64, 999_999_999);
        assert_eq!(retry_delay(&status), Some(expected));
    }

    fn response(partial: Option<(i64, &str)>) -> Vec<u8> {
        let mut response = ExportLogsServiceResponse::new();
        if let Some((rejected, message)) = partial {
            let mut p = ExportLogsPartialSuccess::new();
            p.rejected_log_records = rejected;
            p.error_message = message.to_string();
            response.partial_success = MessageField::some(p);
        }
        response.write_to_bytes().unwrap()
    }

    #[test]
    fn partial_success_of_nothing_is_full_success() {
        assert_eq!(partial_success(&[]).unwrap(), (0, String::new()));
        // A response without partial_success encodes to no bytes at all.
        assert_eq!(response(None), Vec::<u8>::new());
        // An empty partial_success (field 1, length 0) is present but says nothing.
        let empty = response(Some((0, "")));
        assert_eq!(empty, vec![0x0a, 0x00]);
        assert_eq!(partial_success(&empty).unwrap(), (0, String::new()));
    }

    #[test]
    fn partial_success_reads_rejections_and_message() {
        let bytes = response(Some((7, "7 records too old")));
        assert_eq!(
            partial_success(&bytes).unwrap(),
            (7, "7 records too old".to_string())
        );
        // A warning: nothing rejected, a message.
        let bytes = response(Some((0, "deprecated attribute")));
        assert_eq!(
            partial_success(&bytes).unwrap(),
            (0, "deprecated attribute".to_string())
        );
        let bytes = response(Some((i64::MAX, "")));
        assert_eq!(
            partial_success(&bytes).unwrap(),
            (i64::MAX as u64, String::new())
        );
    }

    #[test]
    fn partial_success_clamps_a_negative_count() {
        for rejected in [-1, i64::MIN] {
            let bytes = response(Some((rejected, "odd")));
            assert_eq!(partial_success(&bytes).unwrap(), (0, "odd".to_string()));
        }
    }

    #[test]
    fn partial_success_on_garbage_is_a_decode_error() {
        for bytes in [
            vec![0xff; 8],
            vec![0x0a, 0x05, 0x08], // partial_success claims 5 bytes, has 1
            vec![0x0a, 0x02, 0x12, 0x05], // error_message claims 5 bytes, has 0
        ] {
            match partial_success(&bytes) {
                Err(Error::Decode(_)) => {}
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }
}
