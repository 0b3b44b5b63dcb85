//! A real grpcio `proto.LogService` sink on 127.0.0.1, for the tests, the demo and the
//! benchmark. It records every payload it receives, ends each stream the way it is told
//! (GoSight's `OK` without a message, `OK` with a `LogResponse`, an error status, or
//! not at all), and can be stopped and started again on the same port.
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
    RpcStatus, RpcStatusCode, Server, ServerBuilder, ServerCredentials, ServiceBuilder,
};
use logsender::wire::pb::log::LogResponse;
use logsender::LogPayload;
use parking_lot::{Condvar, Mutex};
use protobuf::Message;

/// How the sink ends a stream after the client half-closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Status OK and no response message: what the GoSight server does.
    OkNoMessage,
    /// Status OK with a filled `LogResponse`.
    OkWithResponse,
    /// The given error status.
    Fail(RpcStatusCode),
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
    /// Reads one message per interval (a slow collector), then answers `OK`.
    SlowReads(Duration),
}

const SERVER_METHOD: Method<Vec<u8>, Vec<u8>> = Method {
    ty: MethodType::ClientStreaming,
    name: "/proto.LogService/SubmitStream",
    req_mar: grpcio::Marshaller {
        ser: ser_bytes,
        de: de_bytes,
    },
    resp_mar: grpcio::Marshaller {
        ser: ser_bytes,
        de: de_bytes,
    },
};

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

/// Counts of what the sink saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    /// Streams that carried no payload at all (probes, empty epochs), whatever their end.
    pub empty: u64,
    /// Streams answered `OK` before they were read to the end (`EarlyOk`).
    pub early_ok: u64,
    /// Streams opened by clients.
    pub opened: u64,
    /// Streams the client half-closed (read to the end).
    pub half_closed: u64,
    /// Streams the sink answered with status OK.
    pub ok: u64,
    /// Streams the sink answered with an error status.
    pub failed: u64,
}

struct Inner {
    ending: Mutex<Ending>,
    received: Mutex<Vec<LogPayload>>,
    changed: Condvar,
    record: Option<Mutex<File>>,
    parked_sinks: Mutex<Vec<ClientStreamingSink<Vec<u8>>>>,
    parked_streams: Mutex<Vec<RequestStream<Vec<u8>>>>,
    opened: AtomicU64,
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
    /// The next this many calls that carry payloads are answered with this status.
    fail_next: Mutex<(u64, RpcStatusCode)>,
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
            opened: AtomicU64::new(0),
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
            fail_next: Mutex::new((0, RpcStatusCode::OK)),
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
            ServiceBuilder::new()
                .add_client_streaming_handler(
                    &SERVER_METHOD,
                    move |ctx: RpcContext<'_>,
                          stream: RequestStream<Vec<u8>>,
                          sink: ClientStreamingSink<Vec<u8>>| {
                        handle(&ctx, inner.clone(), stream, sink)
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
        *self.inner.fail_next.lock() = (n, code);
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
        if ids.is_empty() {
            inner.empty.fetch_add(1, Ordering::SeqCst);
        } else {
            let mut fail_next = inner.fail_next.lock();
            if fail_next.0 > 0 && rejected.is_none() {
                fail_next.0 -= 1;
                rejected = Some(fail_next.1);
            }
        }
        let ending = match (rejected, *inner.ending.lock()) {
            (Some(code), _) => Ending::Fail(code),
            (None, Ending::EarlyOk(_) | Ending::EarlyOkOnce(_) | Ending::SlowReads(_)) => {
                Ending::OkNoMessage
            }
            (None, other) => other,
        };
        let result = match ending {
            Ending::OkNoMessage => {
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
                sink.fail(RpcStatus::with_message(code, "sink told to fail".into()))
                    .await
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

/// Records a received payload; returns its id (`host_id`) if it decoded.
fn record(inner: &Inner, bytes: &[u8]) -> Option<String> {
    match logsender::wire::decode(bytes) {
        Ok(payload) => {
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
            Some(id)
        }
        Err(_) => {
            inner.bad_payloads.fetch_add(1, Ordering::SeqCst);
            None
        }
    }
}
