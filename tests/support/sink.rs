//! A real grpcio sink on 127.0.0.1 for the tests, the demo and the benchmark. One
//! server answers both wires: GoSight's `proto.LogService/SubmitStream` and OTLP's
//! `LogsService/Export` (`logsender::otlp::EXPORT_PATH`), so a test picks the wire in
//! its config only. It records every payload it receives, ends each call the way it is
//! told (`OK` with or without a response, a partial success, an error status with or
//! without a `RetryInfo`, or not at all), and can be stopped and started again on the
//! same port.
//!
//! Shared by several targets through `#[path]`; each uses a part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use grpcio::{
    ClientStreamingSink, Environment, MessageReader, Method, MethodType, RequestStream, RpcContext,
    RpcStatus, RpcStatusCode, Server, ServerBuilder, ServerCredentials, ServiceBuilder, UnarySink,
};
use logsender::otlp::pb::logs_service::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use logsender::wire::pb::log::LogResponse;
use logsender::LogPayload;
use parking_lot::{Condvar, Mutex};
use protobuf::{CodedOutputStream, Message};

/// How the sink ends a call: a stream after the client half-closed it, an `Export`
/// once its request arrived. Where an ending means nothing on a wire, it says what the
/// sink does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Status OK and no response message: what the GoSight server does. On `Export`: OK
    /// with an empty `ExportLogsServiceResponse` (what an OTLP collector does).
    OkNoMessage,
    /// Status OK with a filled `LogResponse`. On `Export`: as `OkNoMessage`.
    OkWithResponse,
    /// Status OK and no response message on `Export` too: the grpcio trap of a unary
    /// receiver (it unwraps the missing message). On the stream: as `OkNoMessage`.
    OkNoResponse,
    /// On `Export` calls that carry payloads: OK with an `ExportLogsServiceResponse`
    /// whose `partial_success` says `rejected` records were refused, with `message`
    /// (empty calls, probes, get a plain OK). On the stream: as `OkNoMessage`.
    PartialSuccess {
        rejected: i64,
        message: &'static str,
    },
    /// `PartialSuccess` for one call only, then the sink switches itself to
    /// `OkNoMessage` in the same step.
    PartialSuccessOnce {
        rejected: i64,
        message: &'static str,
    },
    /// The given error status.
    Fail(RpcStatusCode),
    /// The given error status with a `google.rpc.Status` in its details (the
    /// `grpc-status-details-bin` trailer) holding a `google.rpc.RetryInfo` of this
    /// delay: a throttling OTLP collector. On both wires.
    FailRetryAfter(RpcStatusCode, Duration),
    /// Reads everything, then never answers (until the sink stops or `release`).
    Stall,
    /// Accepts the call but never reads from it.
    StallReads,
    /// Reads this many messages, then answers `OK` without reading the rest (a
    /// collector that breaks the contract of reading to the end of the stream).
    EarlyOk(usize),
    /// `EarlyOk` for one call only: the sink answers one call early, then switches
    /// itself to `OkNoMessage` in the same step, so no later call can be answered
    /// early (a test that switches the ending itself races the calls it re-opens).
    EarlyOkOnce(usize),
    /// Reads one message per interval (a slow collector), then answers `OK`. On
    /// `Export`: waits this long, then answers `OK`.
    SlowReads(Duration),
}

const SERVER_METHOD: Method<Vec<u8>, Vec<u8>> = raw_method(
    MethodType::ClientStreaming,
    "/proto.LogService/SubmitStream",
);

/// OTLP's `LogsService/Export` as a server sees it: a unary method of raw bytes.
const EXPORT_METHOD: Method<Vec<u8>, Vec<u8>> =
    raw_method(MethodType::Unary, logsender::otlp::EXPORT_PATH);

/// A method `name` of type `ty` whose requests and responses are raw bytes, for a
/// server or a hand-driven client.
pub const fn raw_method(ty: MethodType, name: &'static str) -> Method<Vec<u8>, Vec<u8>> {
    Method {
        ty,
        name,
        req_mar: grpcio::Marshaller {
            ser: ser_bytes,
            de: de_bytes,
        },
        resp_mar: grpcio::Marshaller {
            ser: ser_bytes,
            de: de_bytes,
        },
    }
}

fn ser_bytes(msg: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    *buf = grpcio::GrpcSlice::from(msg.as_slice());
    Ok(())
}

fn de_bytes(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    reader
        .read_to_end(&mut v)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(v)
}

/// Counts of what the sink saw, over both wires (an `Export` call counts as a call
/// opened and read to the end, and in `exports`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    /// Calls that carried no payload at all (probes, empty epochs, empty `Export`s),
    /// whatever their end.
    pub empty: u64,
    /// Streams answered `OK` before they were read to the end (`EarlyOk`).
    pub early_ok: u64,
    /// Calls opened by clients (streams and `Export`s).
    pub opened: u64,
    /// Calls read to the end (streams the client half-closed; every `Export` the sink
    /// did not park).
    pub half_closed: u64,
    /// Calls the sink answered with status OK (partial successes included).
    pub ok: u64,
    /// Calls the sink answered with an error status.
    pub failed: u64,
    /// Of `opened`, the OTLP `Export` calls.
    pub exports: u64,
    /// Of `ok`, the `Export` calls answered with a partial success.
    pub partial: u64,
}

/// One OTLP `Export` call as the sink saw it (see [`Sink::exports`]).
#[derive(Debug, Clone)]
pub struct Export {
    /// When its request arrived.
    pub at: Instant,
    /// The request's length in bytes (as the handler got it: decompressed).
    pub size: usize,
    /// Its `ResourceLogs` records: each a payload, or a part of a split one.
    pub resource_logs: usize,
    /// The id (`host_id`) of each record, in order.
    pub ids: Vec<String>,
    /// The status the sink answered with; `None` while it has not (parked, or the
    /// client went away first).
    pub answer: Option<RpcStatusCode>,
    /// The `rejected_log_records` of the partial success it was answered with.
    pub rejected: Option<i64>,
}

/// Calls the sink fails on purpose ([`Sink::fail_next`], [`Sink::fail_after`]).
#[derive(Debug, Clone, Copy)]
struct FailNext {
    /// Calls carrying payloads to let through first.
    skip: u64,
    /// Calls carrying payloads to fail after those.
    n: u64,
    code: RpcStatusCode,
    /// A `RetryInfo` of this delay in the status's details.
    retry_after: Option<Duration>,
}

struct Inner {
    ending: Mutex<Ending>,
    received: Mutex<Vec<LogPayload>>,
    changed: Condvar,
    record: Option<Mutex<File>>,
    parked_sinks: Mutex<Vec<ClientStreamingSink<Vec<u8>>>>,
    parked_streams: Mutex<Vec<RequestStream<Vec<u8>>>>,
    /// `Export` calls parked by `Stall`/`StallReads`: dropping one cancels its call.
    parked_exports: Mutex<Vec<UnarySink<Vec<u8>>>>,
    opened: AtomicU64,
    exports: AtomicU64,
    partial: AtomicU64,
    /// Every `Export` call, in arrival order.
    export_log: Mutex<Vec<Export>>,
    /// `Export` calls received and not answered yet, and the most there ever were.
    exports_pending: Mutex<(u64, u64)>,
    half_closed: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    empty: AtomicU64,
    early_ok: AtomicU64,
    bad_payloads: AtomicU64,
    /// Keep every received payload in `received` (the default); otherwise only count
    /// them in `counted` (their ids still go to `ok_ids`).
    keep: std::sync::atomic::AtomicBool,
    /// Payloads received and not kept (see `keep`).
    counted: AtomicU64,
    /// Ids (`host_id`) of payloads that travelled in a call the sink answered `OK` after
    /// reading it to the end: what the sender may count as acknowledged.
    ok_ids: Mutex<Vec<String>>,
    /// A call that carries a payload with this `host_id` is answered with this status
    /// (after it is read to the end).
    reject: Mutex<Option<(String, RpcStatusCode)>>,
    /// Calls that carry payloads answered with an error status on purpose.
    fail_next: Mutex<FailNext>,
}

/// PEM material for a TLS sink: its certificate and key, and (for mutual TLS) the CA
/// that client certificates must chain to.
#[derive(Clone)]
pub struct TlsServer {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// A running (or stopped) sink server.
pub struct Sink {
    port: u16,
    tls: Option<TlsServer>,
    /// The server's receive limit per message (64 MiB when `None`).
    max_receive: Option<usize>,
    /// Accept only uncompressed messages (a server with gzip disabled).
    identity_only: bool,
    inner: Arc<Inner>,
    env: Arc<Environment>,
    server: Option<Server>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1 with a free port, ending streams the GoSight way.
    pub fn start() -> Sink {
        Sink::start_with(0, Ending::OkNoMessage, None)
    }

    /// Starts a sink with the given ending on a free port.
    pub fn with_ending(ending: Ending) -> Sink {
        Sink::start_with(0, ending, None)
    }

    /// Starts a sink on `port` (0 = any), ending streams with `ending`; when `record`
    /// is set, every received payload is also appended to that file as one line
    /// `agent_id host_id` before the stream is answered.
    pub fn start_with(port: u16, ending: Ending, record: Option<PathBuf>) -> Sink {
        let record = record.map(|p| {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()));
            Mutex::new(f)
        });
        let inner = Arc::new(Inner {
            ending: Mutex::new(ending),
            received: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            record,
            parked_sinks: Mutex::new(Vec::new()),
            parked_streams: Mutex::new(Vec::new()),
            parked_exports: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
            exports: AtomicU64::new(0),
            partial: AtomicU64::new(0),
            export_log: Mutex::new(Vec::new()),
            exports_pending: Mutex::new((0, 0)),
            half_closed: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            empty: AtomicU64::new(0),
            early_ok: AtomicU64::new(0),
            bad_payloads: AtomicU64::new(0),
            keep: std::sync::atomic::AtomicBool::new(true),
            counted: AtomicU64::new(0),
            ok_ids: Mutex::new(Vec::new()),
            reject: Mutex::new(None),
            fail_next: Mutex::new(FailNext {
                skip: 0,
                n: 0,
                code: RpcStatusCode::OK,
                retry_after: None,
            }),
        });
        let env = Arc::new(
            grpcio::EnvBuilder::new()
                .cq_count(1)
                .name_prefix("sink-cq")
                .build(),
        );
        let mut sink = Sink {
            port,
            tls: None,
            max_receive: None,
            identity_only: false,
            inner,
            env,
            server: None,
        };
        sink.bind();
        sink
    }

    /// Starts a sink on a free port that accepts messages up to `limit` bytes (like a
    /// grpc-go or C-core server with its default 4 MiB limit), ending streams the
    /// GoSight way.
    pub fn with_receive_limit(limit: usize) -> Sink {
        Sink::start_configured(|s| s.max_receive = Some(limit))
    }

    /// Starts a sink on a free port whose server accepts no compressed message (gzip
    /// disabled), ending streams the GoSight way.
    pub fn without_gzip() -> Sink {
        Sink::start_configured(|s| s.identity_only = true)
    }

    /// Starts a TLS sink on a free port, ending streams the GoSight way.
    pub fn start_tls(tls: TlsServer) -> Sink {
        Sink::start_configured(|s| s.tls = Some(tls))
    }

    /// A GoSight-ending sink on a free port, its server set up by `configure` (the port
    /// is bound once, then rebound with the settings).
    fn start_configured(configure: impl FnOnce(&mut Sink)) -> Sink {
        let mut sink = Sink::start_with(0, Ending::OkNoMessage, None);
        sink.stop();
        configure(&mut sink);
        sink.restart();
        sink
    }

    fn bind(&mut self) {
        let service = || {
            let inner = self.inner.clone();
            let export_inner = self.inner.clone();
            ServiceBuilder::new()
                .add_client_streaming_handler(
                    &SERVER_METHOD,
                    move |ctx: RpcContext<'_>,
                          stream: RequestStream<Vec<u8>>,
                          sink: ClientStreamingSink<Vec<u8>>| {
                        handle(&ctx, inner.clone(), stream, sink)
                    },
                )
                .add_unary_handler(
                    &EXPORT_METHOD,
                    move |ctx: RpcContext<'_>, request: Vec<u8>, sink: UnarySink<Vec<u8>>| {
                        handle_export(&ctx, export_inner.clone(), request, sink)
                    },
                )
                .build()
        };
        // Binding the port we just released can fail for a moment; retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut builder = ServerBuilder::new(self.env.clone()).register_service(service());
            let limit = self.max_receive.unwrap_or(64 << 20);
            let mut args = grpcio::ChannelBuilder::new(self.env.clone())
                .max_receive_message_len(i32::try_from(limit).unwrap_or(i32::MAX));
            if matches!(
                *self.inner.ending.lock(),
                Ending::StallReads | Ending::SlowReads(_)
            ) {
                // A fixed 64 KiB stream window (no BDP probing, which would grow it to
                // megabytes): a collector that reads slowly or not at all holds the
                // client's writes back at once, as a distant, busy one does.
                args = args
                    .raw_cfg_int(c"grpc.http2.bdp_probe".to_owned(), 0)
                    .raw_cfg_int(c"grpc.http2.lookahead_bytes".to_owned(), 64 << 10);
            }
            if self.identity_only {
                // Bit 0 is "identity": no compression algorithm is enabled.
                args =
                    args.raw_cfg_int(c"grpc.compression_enabled_algorithms_bitset".to_owned(), 1);
            }
            builder = builder.channel_args(args.build_args());
            let mut server = builder.build().expect("build sink server");
            let creds = match &self.tls {
                None => ServerCredentials::insecure(),
                Some(tls) => {
                    let mut b = grpcio::ServerCredentialsBuilder::new()
                        .add_cert(tls.cert.clone(), tls.key.clone());
                    if let Some(ca) = &tls.client_ca {
                        b = b.root_cert(
                            ca.clone(),
                            grpcio::CertificateRequestType::RequestAndRequireClientCertificateAndVerify,
                        );
                    }
                    b.build()
                }
            };
            match server.add_listening_port(format!("127.0.0.1:{}", self.port), creds) {
                Ok(port) => {
                    server.start();
                    self.port = port;
                    self.server = Some(server);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("sink: bind 127.0.0.1:{} failed ({e}); retrying", self.port);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("sink: cannot bind 127.0.0.1:{}: {e}", self.port),
            }
        }
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes how the following streams end.
    pub fn set_ending(&self, ending: Ending) {
        *self.inner.ending.lock() = ending;
    }

    /// Stops the server: cancels every open call (clients see UNAVAILABLE/CANCELLED),
    /// then shuts down. The records are kept.
    pub fn stop(&mut self) {
        self.release();
        if let Some(mut server) = self.server.take() {
            server.cancel_all_calls();
            let _ = futures_executor::block_on(server.shutdown());
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "restart() of a running sink");
        self.bind();
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Drops the calls parked by `Stall`/`StallReads` (they are cancelled).
    pub fn release(&self) {
        self.inner.parked_sinks.lock().clear();
        self.inner.parked_streams.lock().clear();
        let exports = std::mem::take(&mut *self.inner.parked_exports.lock());
        // No longer pending before they are cancelled: the client may re-send at once.
        self.inner.exports_pending.lock().0 -= exports.len() as u64;
        drop(exports);
    }

    /// Every payload received so far, in arrival order.
    pub fn received(&self) -> Vec<LogPayload> {
        self.inner.received.lock().clone()
    }

    /// How many payloads were received so far.
    pub fn count(&self) -> usize {
        self.inner.received.lock().len() + self.inner.counted.load(Ordering::SeqCst) as usize
    }

    /// Whether to keep the payloads received from now on (the default), or only count
    /// them (and keep their ids, in `ok_ids`): for tests that send hundreds of MiB,
    /// whose sink must not grow with them.
    pub fn keep_payloads(&self, keep: bool) {
        self.inner.keep.store(keep, Ordering::SeqCst);
    }

    /// Waits until at least `n` payloads were received; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let counted = || self.inner.counted.load(Ordering::SeqCst) as usize;
        let mut received = self.inner.received.lock();
        while received.len() + counted() < n {
            if self
                .inner
                .changed
                .wait_until(&mut received, deadline)
                .timed_out()
            {
                return received.len() + counted() >= n;
            }
        }
        true
    }

    /// Waits until `pred(calls)` holds; false on timeout.
    pub fn wait_calls(&self, timeout: Duration, pred: impl Fn(Calls) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !pred(self.calls()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Ids of payloads that travelled in calls the sink answered `OK` after reading
    /// them to the end, in the order the calls ended.
    pub fn ok_ids(&self) -> Vec<String> {
        self.inner.ok_ids.lock().clone()
    }

    /// Calls carrying a payload with `host_id` are answered with `code` from now on.
    pub fn reject_payload(&self, host_id: &str, code: RpcStatusCode) {
        *self.inner.reject.lock() = Some((host_id.to_string(), code));
    }

    /// The next `n` calls that carry payloads are answered with `code`.
    pub fn fail_next(&self, n: u64, code: RpcStatusCode) {
        self.fail_after(0, n, code, None);
    }

    /// The next `n` calls that carry payloads are answered with `code` and a
    /// `RetryInfo` of `delay` in the status's details (see [`Ending::FailRetryAfter`]).
    pub fn fail_next_retry_after(&self, n: u64, code: RpcStatusCode, delay: Duration) {
        self.fail_after(0, n, code, Some(delay));
    }

    /// After `skip` more calls that carry payloads, the next `n` are answered with
    /// `code` (and a `RetryInfo` of `retry_after`, if given).
    pub fn fail_after(
        &self,
        skip: u64,
        n: u64,
        code: RpcStatusCode,
        retry_after: Option<Duration>,
    ) {
        *self.inner.fail_next.lock() = FailNext {
            skip,
            n,
            code,
            retry_after,
        };
    }

    /// Every OTLP `Export` call so far, in arrival order.
    pub fn exports(&self) -> Vec<Export> {
        self.inner.export_log.lock().clone()
    }

    /// The request length of each `Export` call so far (to check the request cap).
    pub fn export_sizes(&self) -> Vec<usize> {
        self.inner
            .export_log
            .lock()
            .iter()
            .map(|e| e.size)
            .collect()
    }

    /// How many `ResourceLogs` each `Export` request held (a call carries at most 64
    /// payloads).
    pub fn resource_logs_per_request(&self) -> Vec<usize> {
        self.inner
            .export_log
            .lock()
            .iter()
            .map(|e| e.resource_logs)
            .collect()
    }

    /// The most `Export` calls the sink held unanswered at once.
    pub fn max_exports_pending(&self) -> u64 {
        self.inner.exports_pending.lock().1
    }

    /// Asserts that the sender spoke `wire` to this sink: on GoSight no `Export` call,
    /// on OTLP at least one and nothing else (no stream was opened).
    pub fn assert_spoke(&self, wire: logsender::Wire) {
        let calls = self.calls();
        match wire {
            logsender::Wire::GoSightStream => {
                assert_eq!(calls.exports, 0, "an Export call: {calls:?}")
            }
            _ => {
                assert!(calls.exports > 0, "no Export call: {calls:?}");
                assert_eq!(
                    calls.exports, calls.opened,
                    "a stream was opened: {calls:?}"
                );
            }
        }
    }

    /// Counts of streams seen.
    pub fn calls(&self) -> Calls {
        let i = &self.inner;
        Calls {
            empty: i.empty.load(Ordering::SeqCst),
            early_ok: i.early_ok.load(Ordering::SeqCst),
            opened: i.opened.load(Ordering::SeqCst),
            half_closed: i.half_closed.load(Ordering::SeqCst),
            ok: i.ok.load(Ordering::SeqCst),
            failed: i.failed.load(Ordering::SeqCst),
            exports: i.exports.load(Ordering::SeqCst),
            partial: i.partial.load(Ordering::SeqCst),
        }
    }

    /// Payloads that did not decode (should stay 0).
    pub fn bad_payloads(&self) -> u64 {
        self.inner.bad_payloads.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(
    ctx: &RpcContext<'_>,
    inner: Arc<Inner>,
    mut stream: RequestStream<Vec<u8>>,
    sink: ClientStreamingSink<Vec<u8>>,
) {
    inner.opened.fetch_add(1, Ordering::SeqCst);

    if *inner.ending.lock() == Ending::StallReads {
        inner.parked_streams.lock().push(stream);
        inner.parked_sinks.lock().push(sink);
        return;
    }
    ctx.spawn(async move {
        let mut ids = Vec::new();
        let mut rejected = None;
        loop {
            // Read each time: a test that switches the ending affects open calls too.
            let ending = {
                let mut guard = inner.ending.lock();
                let ending = *guard;
                if let Ending::EarlyOkOnce(n) = ending {
                    if ids.len() >= n {
                        *guard = Ending::OkNoMessage;
                    }
                }
                ending
            };
            if let Ending::EarlyOk(n) | Ending::EarlyOkOnce(n) = ending {
                if ids.len() >= n {
                    inner.early_ok.fetch_add(1, Ordering::SeqCst);
                    let _ = sink.fail(RpcStatus::ok()).await;
                    drop(stream);
                    return;
                }
            }
            if let Ending::SlowReads(pause) = ending {
                futures_timer_sleep(pause).await;
            }
            match stream.try_next().await {
                Ok(Some(bytes)) => {
                    if let Some(id) = record(&inner, &bytes) {
                        if let Some((bad, code)) = inner.reject.lock().as_ref() {
                            if *bad == id {
                                rejected = Some(*code);
                            }
                        }
                        ids.push(id);
                    }
                }
                Ok(None) => break,
                // The client cancelled, or the server is stopping.
                Err(_) => return,
            }
        }
        inner.half_closed.fetch_add(1, Ordering::SeqCst);
        let forced = if ids.is_empty() {
            inner.empty.fetch_add(1, Ordering::SeqCst);
            None
        } else {
            forced_ending(&inner, rejected)
        };
        let ending = match (forced, *inner.ending.lock()) {
            (Some(forced), _) => forced,
            (
                None,
                Ending::EarlyOk(_)
                | Ending::EarlyOkOnce(_)
                | Ending::SlowReads(_)
                | Ending::OkNoResponse
                | Ending::PartialSuccess { .. }
                | Ending::PartialSuccessOnce { .. },
            ) => Ending::OkNoMessage,
            (None, other) => other,
        };
        let result = match ending {
            Ending::OkNoMessage
            | Ending::OkNoResponse
            | Ending::PartialSuccess { .. }
            | Ending::PartialSuccessOnce { .. } => {
                inner.ok.fetch_add(1, Ordering::SeqCst);
                inner.ok_ids.lock().extend(ids);
                sink.fail(RpcStatus::ok()).await
            }
            Ending::OkWithResponse => {
                inner.ok.fetch_add(1, Ordering::SeqCst);
                inner.ok_ids.lock().extend(ids);
                let mut resp = LogResponse::new();
                resp.status = "ok".into();
                resp.status_code = 200;
                let bytes = resp.write_to_bytes().unwrap_or_default();
                sink.success(bytes).await
            }
            Ending::Fail(code) => {
                inner.failed.fetch_add(1, Ordering::SeqCst);
                sink.fail(failure(code, None)).await
            }
            Ending::FailRetryAfter(code, delay) => {
                inner.failed.fetch_add(1, Ordering::SeqCst);
                sink.fail(failure(code, Some(delay))).await
            }
            Ending::Stall
            | Ending::StallReads
            | Ending::EarlyOk(_)
            | Ending::EarlyOkOnce(_)
            | Ending::SlowReads(_) => {
                inner.parked_sinks.lock().push(sink);
                return;
            }
        };
        let _ = result;
    });
}

/// The ending `reject` (`rejected`: the status of a rejected payload the call carried)
/// or `fail_next`/`fail_after` impose on a call that carries payloads, if any. Counts
/// the call against `fail_after`'s skip and failures unless it was rejected.
fn forced_ending(inner: &Inner, rejected: Option<RpcStatusCode>) -> Option<Ending> {
    if let Some(code) = rejected {
        return Some(Ending::Fail(code));
    }
    let mut f = inner.fail_next.lock();
    if f.skip > 0 {
        f.skip -= 1;
        return None;
    }
    if f.n == 0 {
        return None;
    }
    f.n -= 1;
    Some(match f.retry_after {
        Some(delay) => Ending::FailRetryAfter(f.code, delay),
        None => Ending::Fail(f.code),
    })
}

/// The status of a call the sink fails on purpose: `code`, with a `RetryInfo` of
/// `retry_after` in its details if given.
fn failure(code: RpcStatusCode, retry_after: Option<Duration>) -> RpcStatus {
    let message = "sink told to fail".to_string();
    match retry_after {
        None => RpcStatus::with_message(code, message),
        Some(delay) => {
            let details = retry_info_status(code, &message, delay);
            RpcStatus::with_details(code, message, details)
        }
    }
}

/// The `type_url` of a packed `google.rpc.RetryInfo`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The bytes of a `google.rpc.Status { code, message, details: [Any(RetryInfo {
/// retry_delay: delay })] }`, as a server sends them in `grpc-status-details-bin`
/// (grpc-go's `status.WithDetails`, grpc-python's `rpc_status.to_status`). Written field
/// by field from googleapis' `status.proto` and `error_details.proto` and protobuf's
/// `any.proto` and `duration.proto`, not with the library's generated types, so a test
/// against it checks the library's reading of them. Zero scalars are left out, as
/// proto3 writers do: the bytes equal Python's serialization (tests/otlp_interop.rs).
pub fn retry_info_status(code: RpcStatusCode, message: &str, delay: Duration) -> Vec<u8> {
    fn bytes_of(write: impl FnOnce(&mut CodedOutputStream<'_>) -> protobuf::Result<()>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut os = CodedOutputStream::vec(&mut out);
        write(&mut os).expect("write to a Vec");
        os.flush().expect("flush to a Vec");
        drop(os);
        out
    }
    // google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }
    let duration = bytes_of(|os| {
        let seconds = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
        if seconds != 0 {
            os.write_int64(1, seconds)?;
        }
        if delay.subsec_nanos() != 0 {
            os.write_int32(2, delay.subsec_nanos() as i32)?;
        }
        Ok(())
    });
    // google.rpc.RetryInfo { google.protobuf.Duration retry_delay = 1; }
    let retry_info = bytes_of(|os| os.write_bytes(1, &duration));
    // google.protobuf.Any { string type_url = 1; bytes value = 2; }
    let any = bytes_of(|os| {
        os.write_string(1, RETRY_INFO_TYPE_URL)?;
        os.write_bytes(2, &retry_info)
    });
    // google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; }
    bytes_of(|os| {
        let code = i32::from(code);
        if code != 0 {
            os.write_int32(1, code)?;
        }
        if !message.is_empty() {
            os.write_string(2, message)?;
        }
        os.write_bytes(3, &any)
    })
}

/// One field of a protobuf message, as [`fields`] reads it.
enum Field {
    /// A length-delimited field's bytes (a string, bytes, or a message).
    Bytes(Vec<u8>),
    /// A varint field's value.
    Varint(u64),
}

/// The fields of one protobuf message, in order, as (number, value); fixed-width fields
/// are skipped. `None` if the bytes do not parse.
fn fields(bytes: &[u8]) -> Option<Vec<(u32, Field)>> {
    use protobuf::rt::WireType;
    let mut is = protobuf::CodedInputStream::from_bytes(bytes);
    let mut out = Vec::new();
    while let Some(tag) = is.read_raw_tag_or_eof().ok()? {
        let (number, wire) = (tag >> 3, WireType::new(tag & 7)?);
        match wire {
            WireType::LengthDelimited => out.push((number, Field::Bytes(is.read_bytes().ok()?))),
            WireType::Varint => out.push((number, Field::Varint(is.read_raw_varint64().ok()?))),
            other => is.skip_field(other).ok()?,
        }
    }
    Some(out)
}

/// The message field `number` of `fields` (its last occurrence; empty if absent).
fn message_field(fields: &[(u32, Field)], number: u32) -> Vec<u8> {
    fields
        .iter()
        .rev()
        .find_map(|(n, f)| match f {
            Field::Bytes(b) if *n == number => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `retry_delay` of the first `RetryInfo` in a `google.rpc.Status`'s details (the
/// bytes of `grpc-status-details-bin`, as `RpcStatus::details` has them), read field by
/// field; `None` if there is none or the bytes do not parse.
pub fn retry_delay_of(status: &[u8]) -> Option<Duration> {
    for (number, field) in fields(status)? {
        let (3, Field::Bytes(any)) = (number, field) else {
            continue;
        };
        let any = fields(&any)?;
        if message_field(&any, 1) != RETRY_INFO_TYPE_URL.as_bytes() {
            continue;
        }
        let retry_info = fields(&message_field(&any, 2))?;
        let (mut seconds, mut nanos) = (0u64, 0u64);
        for (n, f) in fields(&message_field(&retry_info, 1))? {
            match (n, f) {
                (1, Field::Varint(s)) => seconds = s,
                (2, Field::Varint(ns)) => nanos = ns,
                _ => {}
            }
        }
        return Some(Duration::new(seconds, u32::try_from(nanos).ok()?));
    }
    None
}

/// Answers an OTLP `Export` call: records its payloads (each `ResourceLogs` a payload or
/// a part of a split one, recorded as it comes), counts it, and ends it as told: by
/// `reject`/`fail_next`/`fail_after` when it carries payloads, else by the ending.
fn handle_export(
    ctx: &RpcContext<'_>,
    inner: Arc<Inner>,
    request: Vec<u8>,
    sink: UnarySink<Vec<u8>>,
) {
    inner.opened.fetch_add(1, Ordering::SeqCst);
    inner.exports.fetch_add(1, Ordering::SeqCst);
    {
        let mut pending = inner.exports_pending.lock();
        pending.0 += 1;
        pending.1 = pending.1.max(pending.0);
    }
    let parts = match ExportLogsServiceRequest::parse_from_bytes(&request) {
        Ok(req) => logsender::otlp::from_request(req),
        Err(_) => {
            inner.bad_payloads.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        }
    };
    let index = {
        let mut log = inner.export_log.lock();
        log.push(Export {
            at: Instant::now(),
            size: request.len(),
            resource_logs: parts.len(),
            ids: parts.iter().map(|p| p.host_id.clone()).collect(),
            answer: None,
            rejected: None,
        });
        log.len() - 1
    };
    let ending = *inner.ending.lock();
    if matches!(ending, Ending::Stall | Ending::StallReads) {
        // Stall reads the request (records it), StallReads does not; neither answers.
        if ending == Ending::Stall {
            for part in parts {
                store(&inner, part);
            }
            inner.half_closed.fetch_add(1, Ordering::SeqCst);
        }
        inner.parked_exports.lock().push(sink);
        return;
    }
    ctx.spawn(async move {
        if let Ending::SlowReads(pause) = ending {
            futures_timer_sleep(pause).await;
        }
        let mut ids = Vec::new();
        let mut rejected = None;
        for part in parts {
            let id = store(&inner, part);
            if let Some((bad, code)) = inner.reject.lock().as_ref() {
                if *bad == id {
                    rejected = Some(*code);
                }
            }
            ids.push(id);
        }
        inner.half_closed.fetch_add(1, Ordering::SeqCst);
        let forced = if ids.is_empty() {
            inner.empty.fetch_add(1, Ordering::SeqCst);
            None
        } else {
            forced_ending(&inner, rejected)
        };
        let ending = match forced {
            Some(forced) => forced,
            None => {
                let mut guard = inner.ending.lock();
                let ending = *guard;
                match ending {
                    Ending::PartialSuccessOnce { rejected, message } if !ids.is_empty() => {
                        *guard = Ending::OkNoMessage;
                        Ending::PartialSuccess { rejected, message }
                    }
                    Ending::PartialSuccess { .. } | Ending::PartialSuccessOnce { .. }
                        if ids.is_empty() =>
                    {
                        Ending::OkNoMessage
                    }
                    Ending::OkWithResponse
                    | Ending::EarlyOk(_)
                    | Ending::EarlyOkOnce(_)
                    | Ending::SlowReads(_) => Ending::OkNoMessage,
                    other => other,
                }
            }
        };
        if matches!(ending, Ending::Stall | Ending::StallReads) {
            // Switched to a stall since the call came in.
            inner.parked_exports.lock().push(sink);
            return;
        }
        let (answer, partial) = match ending {
            Ending::Fail(code) | Ending::FailRetryAfter(code, _) => (code, None),
            Ending::PartialSuccess { rejected, .. } => (RpcStatusCode::OK, Some(rejected)),
            _ => (RpcStatusCode::OK, None),
        };
        if answer == RpcStatusCode::OK {
            inner.ok.fetch_add(1, Ordering::SeqCst);
            inner.ok_ids.lock().extend(ids);
            if partial.is_some() {
                inner.partial.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            inner.failed.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(e) = inner.export_log.lock().get_mut(index) {
            e.answer = Some(answer);
            e.rejected = partial;
        }
        // No longer pending before the client can hear the answer and send the next.
        inner.exports_pending.lock().0 -= 1;
        let _ = match ending {
            Ending::Fail(code) => sink.fail(failure(code, None)).await,
            Ending::FailRetryAfter(code, delay) => sink.fail(failure(code, Some(delay))).await,
            Ending::OkNoResponse => sink.fail(RpcStatus::ok()).await,
            Ending::PartialSuccess { rejected, message } => {
                let mut response = ExportLogsServiceResponse::new();
                let mut partial = ExportLogsPartialSuccess::new();
                partial.rejected_log_records = rejected;
                partial.error_message = message.to_string();
                response.partial_success = protobuf::MessageField::some(partial);
                sink.success(response.write_to_bytes().unwrap_or_default())
                    .await
            }
            // An empty ExportLogsServiceResponse: a message of no bytes.
            _ => sink.success(Vec::new()).await,
        };
    });
}

/// Sleeps without blocking the completion-queue thread: a helper thread wakes the
/// future after `d`.
async fn futures_timer_sleep(d: Duration) {
    let (tx, rx) = futures_channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Records a received GoSight payload; returns its id (`host_id`) if it decoded.
fn record(inner: &Inner, bytes: &[u8]) -> Option<String> {
    match logsender::wire::decode(bytes) {
        Ok(payload) => Some(store(inner, payload)),
        Err(_) => {
            inner.bad_payloads.fetch_add(1, Ordering::SeqCst);
            None
        }
    }
}

/// Keeps (or counts) a received payload, or part of one; returns its id (`host_id`).
fn store(inner: &Inner, payload: LogPayload) -> String {
    if let Some(file) = &inner.record {
        let line = format!("{} {}\n", payload.agent_id, payload.host_id);
        file.lock()
            .write_all(line.as_bytes())
            .expect("sink: write record");
    }
    let id = payload.host_id.clone();
    let mut received = inner.received.lock();
    if inner.keep.load(Ordering::SeqCst) {
        received.push(payload);
    } else {
        // Counted under the lock `wait_for` waits with, so it cannot miss it.
        inner.counted.fetch_add(1, Ordering::SeqCst);
    }
    drop(received);
    inner.changed.notify_all();
    id
}

/// The parts in `parts` (payloads as [`Sink::received`] has them, parts of split OTLP
/// payloads one by one) merged per id (`host_id`), in order of first arrival: each id's
/// parts' entries concatenated in arrival order under the first part's resource. Only
/// meaningful when nothing was re-sent (a re-sent part would be counted twice).
pub fn merge_parts(parts: &[LogPayload]) -> Vec<LogPayload> {
    let mut merged: Vec<LogPayload> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for p in parts {
        match at.get(&p.host_id) {
            Some(&i) => merged[i].logs.extend(p.logs.iter().cloned()),
            None => {
                at.insert(p.host_id.clone(), merged.len());
                merged.push(p.clone());
            }
        }
    }
    merged
}
