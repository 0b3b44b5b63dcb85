//! The OTLP peer: tonic + prost unary `Export` calls on tokio, with
//! opentelemetry-proto's generated messages (the types opentelemetry-rust's exporter
//! sends), shipping the same requests as logsender's OTLP wire.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use logsender::{otlp, LogPayload};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use prost::Message as _;
use tokio::sync::{mpsc, Semaphore};

use super::{produce, spawn_sampler, CellRun, Window, QUEUE_CAP};
use crate::otlp_sink::{count_export, OTLP_PATH};
use crate::otlp_wire::EXPORTS_IN_FLIGHT;
use crate::payloads::prebuild;

/// Payloads (`ResourceLogs`) per Export call at most, as logsender's OTLP wire.
pub const MAX_CALL_PAYLOADS: usize = 64;

/// tonic-otlp: producer thread (this one) → tokio mpsc (`blocking_send`, capacity
/// `QUEUE_CAP`) → one dispatcher task that waits for a payload, then for one of
/// `EXPORTS_IN_FLIGHT` permits, then takes whatever else is queued, up to
/// `MAX_CALL_PAYLOADS` payloads and `otlp::MAX_REQUEST_BYTES` (the collector's default
/// limit; each payload measured with prost's `encoded_len`), builds the
/// `ExportLogsServiceRequest` and spawns the unary call, which tonic encodes with prost.
/// A payload counts as acknowledged when its call returned OK.
///
/// The items are the payloads' `ResourceLogs`, pre-built before the window like the
/// GoSight tonic cell's prost structs (a user holds their records); building the request,
/// measuring and encoding it happen in the window. `gzip`: `send_compressed(Gzip)`,
/// tonic's fixed level.
pub fn run_tonic_otlp(templates: &[LogPayload], n: usize, addr: &str, gzip: bool) -> CellRun {
    let records = same_requests(templates);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri");
    let channel = rt.block_on(endpoint.connect()).expect("tonic connect");
    let _connection = channel.clone(); // keeps the connection open until the window is measured
    let (tx, rx) = mpsc::channel::<ResourceLogs>(QUEUE_CAP);
    let items = prebuild(&records, n);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let window = Window::open();
    let a = acked.clone();
    let sampler = spawn_sampler(n, window.start, stop.clone(), move || a.load(Relaxed));
    let dispatcher = rt.spawn(dispatch(channel, rx, gzip, acked.clone()));
    let timings = produce(items.into_iter(), window.start, |m| match tx.try_send(m) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(m)) => {
            tx.blocking_send(m).expect("dispatcher gone");
            false
        }
        Err(e) => panic!("mpsc: {e}"),
    });
    drop(tx); // the dispatcher sends what is left and ends
    let failed = rt.block_on(dispatcher).expect("join");
    let measured = window.close();
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    let acked = acked.load(Relaxed);
    if let Some(status) = failed {
        eprintln!("tonic-otlp: a call failed: {status:?}");
    }
    CellRun {
        acked,
        undelivered: (n as u64).saturating_sub(acked),
        ..CellRun::new(n, measured, timings, ack_at)
    }
}

/// The peer's `ResourceLogs` for `templates`, decoded from logsender's own OTLP bytes
/// (`otlp::encode(&otlp::to_request(p))`), with the start-up checks that both sides
/// ship the same requests: each re-encodes to as many bytes as logsender's, which read
/// back as the same payloads; a full call's request is as long as logsender's requests
/// concatenated and reads back the same; the sink counts it right.
///
/// Not byte for byte: rust-protobuf writes a `LogRecord`'s fields in the .proto's
/// order (`observed_time_unix_nano`, field 11, right after field 1), prost by number.
fn same_requests(templates: &[LogPayload]) -> Vec<ResourceLogs> {
    let same = |a: &[u8], b: &[u8]| {
        a.len() == b.len()
            && otlp::decode(a).expect("decode prost's bytes")
                == otlp::decode(b).expect("decode logsender's bytes")
    };
    let mut logsender_bytes = Vec::new();
    let mut records = Vec::new();
    for p in templates {
        let bytes = otlp::encode(&otlp::to_request(p)).expect("otlp::encode");
        let request = ExportLogsServiceRequest::decode(bytes.as_slice()).expect("prost decode");
        assert_eq!(
            request.encoded_len(),
            bytes.len(),
            "prost disagrees with logsender's OTLP encoding"
        );
        assert!(
            same(&request.encode_to_vec(), &bytes),
            "prost re-encodes logsender's OTLP request to another request"
        );
        let [resource_logs] = <[ResourceLogs; 1]>::try_from(request.resource_logs)
            .expect("one ResourceLogs per payload");
        logsender_bytes.push(bytes);
        records.push(resource_logs);
    }
    // One call's worth (cycled as the cell cycles them): logsender concatenates its
    // requests; prost must encode the same request, and the sink count it.
    let mut concatenated = Vec::new();
    let mut resource_logs = Vec::new();
    for i in 0..MAX_CALL_PAYLOADS {
        let k = i % templates.len();
        if concatenated.len() + logsender_bytes[k].len() > otlp::MAX_REQUEST_BYTES {
            break;
        }
        concatenated.extend_from_slice(&logsender_bytes[k]);
        resource_logs.push(records[k].clone());
    }
    let payloads = resource_logs.len() as u64;
    let entries: u64 = (0..resource_logs.len())
        .map(|i| templates[i % templates.len()].logs.len() as u64)
        .sum();
    let request = ExportLogsServiceRequest { resource_logs }.encode_to_vec();
    assert!(
        same(&request, &concatenated),
        "a full request differs from logsender's"
    );
    let counted = count_export(&mut request.as_slice(), request.len()).expect("sink walk");
    assert_eq!(
        (counted.payloads, counted.records),
        (payloads, entries),
        "the sink's count of a full request is wrong"
    );
    records
}

/// `ResourceLogs` bytes inside a request: tag, length, message.
fn framed_len(r: &ResourceLogs) -> usize {
    let len = r.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Sends everything `rx` yields as Export calls (see `run_tonic_otlp`); adds each OK
/// call's payloads to `acked`. Returns the first failure, if any.
async fn dispatch(
    channel: tonic::transport::Channel,
    mut rx: mpsc::Receiver<ResourceLogs>,
    gzip: bool,
    acked: Arc<AtomicU64>,
) -> Option<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    let permits = Arc::new(Semaphore::new(EXPORTS_IN_FLIGHT));
    let mut calls = tokio::task::JoinSet::new();
    let mut failed = None;
    let mut carried: Option<ResourceLogs> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let mut bytes = framed_len(&first);
        let mut batch = Vec::with_capacity(MAX_CALL_PAYLOADS);
        batch.push(first);
        while batch.len() < MAX_CALL_PAYLOADS {
            let Ok(r) = rx.try_recv() else { break };
            let len = framed_len(&r);
            if bytes + len > otlp::MAX_REQUEST_BYTES {
                carried = Some(r);
                break;
            }
            bytes += len;
            batch.push(r);
        }
        let payloads = batch.len() as u64;
        let request = ExportLogsServiceRequest {
            resource_logs: batch,
        };
        let mut grpc = grpc.clone();
        let acked = acked.clone();
        calls.spawn(async move {
            let _permit = permit;
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<
                ExportLogsServiceRequest,
                ExportLogsServiceResponse,
            >::default();
            grpc.unary(
                tonic::Request::new(request),
                tonic::codegen::http::uri::PathAndQuery::from_static(OTLP_PATH),
                codec,
            )
            .await?;
            acked.fetch_add(payloads, Relaxed);
            Ok::<(), tonic::Status>(())
        });
        while let Some(done) = calls.try_join_next() {
            note(&mut failed, done);
        }
    }
    while let Some(done) = calls.join_next().await {
        note(&mut failed, done);
    }
    failed
}

fn note(
    failed: &mut Option<tonic::Status>,
    done: Result<Result<(), tonic::Status>, tokio::task::JoinError>,
) {
    if let Err(status) = done.expect("call task") {
        failed.get_or_insert(status);
    }
}
