//! The OTLP wire against an independent collector: tests/support/otlp_server.py, PyPI's
//! `grpcio` server with `opentelemetry-proto`'s generated LogsService, decoding every
//! request with the official classes and answering as told (`ok`, `partial N MSG`,
//! `retry-after CODE SECONDS`, `fail CODE`, `first-fail CODE`). Each payload a sender on
//! `Wire::OtlpLogs` ships is checked against the server's decoding; partial successes,
//! `RetryInfo` built by `grpcio-status` and a status class are checked end to end.
//!
//! Skipped (with the reason printed) when `python3` cannot import `grpc`, `grpc_status`
//! and the generated service, unless `LOGSENDER_OTLP_INTEROP=require` (CI sets it; see
//! `.ci/run` for the pinned packages).

mod support;

#[path = "support/random.rs"]
mod random;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, Method};
use logsender::otlp::pb::common::{any_value::Value, AnyValue, KeyValue};
use logsender::otlp::pb::logs::ResourceLogs;
use logsender::otlp::pb::logs_service::ExportLogsServiceResponse;
use logsender::{otlp, Compression, LogPayload, RpcStatusCode, Wire};
use protobuf::Message;
use random::{random_payload, Rng};
use support::collect::{wait_stats, Collector};
use support::helpers::{assert_no_background_panic, watch_panics, within};
use support::sink::{raw_method, retry_delay_of, retry_info_status};
use support::{fast_config_on, queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(30);
const IMPORTS: &str =
    "import grpc, grpc_status, opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc";
const PACKAGES: &str = "pip install grpcio grpcio-status googleapis-common-protos \
                        opentelemetry-proto==1.45.2 (the versions in .ci/run)";

/// Whether the test `name` must be skipped: `python3` lacks the packages and
/// `LOGSENDER_OTLP_INTEROP` is not `require` (then it fails instead).
fn skipped(name: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", IMPORTS])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return false;
    }
    let required = std::env::var_os("LOGSENDER_OTLP_INTEROP").is_some_and(|v| v == "require");
    assert!(
        !required,
        "LOGSENDER_OTLP_INTEROP=require, but python3 cannot `{IMPORTS}` ({PACKAGES})"
    );
    eprintln!("SKIPPED {name}: python3 cannot `{IMPORTS}` ({PACKAGES})");
    true
}

// ---------------------------------------------------------------------------------------
// The server process.

/// A running tests/support/otlp_server.py; killed when dropped.
struct PyServer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    lines: crossbeam_channel::Receiver<String>,
    seen: Vec<Json>,
}

impl PyServer {
    /// Starts the server with `ending` (its argv) and waits for its port.
    fn spawn(ending: &[&str]) -> PyServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(ending)
            // No __pycache__ beside the script (it imports otlp_interop.py).
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("otlp_server.py {ending:?} printed no port: {e}"));
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("not a port line: {first:?}"));
        PyServer {
            child,
            stdin,
            port,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request line so far, parsed (waits up to `quiet` for more after the last).
    fn requests(&mut self, quiet: Duration) -> &[Json] {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            let json = Json::parse(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            self.seen.push(json);
        }
        &self.seen
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// JSON: enough to read the server's lines (json.dumps of dicts, lists, strings, ints,
// bools, null).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.at != p.s.len() {
            return Err(format!("trailing bytes at {}", p.at));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    fn int(&self) -> i128 {
        match self {
            Json::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", b as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let rest = &self.s[self.at..];
        for (word, v) in [
            (&b"null"[..], Json::Null),
            (b"true", Json::Bool(true)),
            (b"false", Json::Bool(false)),
        ] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Ok(v);
            }
        }
        match rest.first() {
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at {}", self.at)),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut map = BTreeMap::new();
                self.ws();
                if self.s.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Obj(map));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    let v = self.value()?;
                    map.insert(k, v);
                    self.ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Obj(map));
                        }
                        _ => return Err(format!("bad object at {}", self.at)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                self.at += 1;
                while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                let text =
                    std::str::from_utf8(&self.s[start..self.at]).map_err(|e| e.to_string())?;
                text.parse()
                    .map(Json::Int)
                    .map_err(|e| format!("{e}: {text}"))
            }
            _ => Err(format!("unexpected byte at {}", self.at)),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.at..self.at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u at {}", self.at))?;
        self.at += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.at).ok_or("unterminated string")?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.at).ok_or("unterminated escape")?;
                    self.at += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err("lone surrogate".into());
                                }
                                self.at += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or("bad code point")?
                        }
                        _ => return Err(format!("bad escape at {}", self.at)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the server should have decoded, from the library's own OTLP message.

fn typed(v: &AnyValue) -> Json {
    let tag = |t: &str, v: Json| Json::Arr(vec![Json::Str(t.into()), v]);
    match &v.value {
        Some(Value::StringValue(s)) => tag("s", Json::Str(s.clone())),
        Some(Value::IntValue(i)) => tag("i", Json::Int(i128::from(*i))),
        Some(Value::BoolValue(b)) => tag("b", Json::Bool(*b)),
        other => tag("other", Json::Str(format!("{other:?}"))),
    }
}

fn attrs(kvs: &[KeyValue]) -> Json {
    Json::Obj(
        kvs.iter()
            .map(|kv| (kv.key.clone(), typed(&kv.value)))
            .collect(),
    )
}

/// A `ResourceLogs` in the server's JSON form.
fn expected_json(rl: &ResourceLogs) -> Json {
    let entries: Vec<Json> = rl
        .scope_logs
        .iter()
        .flat_map(|sl| &sl.log_records)
        .map(|r| {
            let body = match &r.body.value {
                Some(Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            Json::Obj(BTreeMap::from([
                ("time".into(), Json::Int(r.time_unix_nano.into())),
                (
                    "observed".into(),
                    Json::Int(r.observed_time_unix_nano.into()),
                ),
                (
                    "severity_number".into(),
                    Json::Int(r.severity_number.value().into()),
                ),
                ("severity_text".into(), Json::Str(r.severity_text.clone())),
                ("body".into(), Json::Str(body)),
                ("attributes".into(), attrs(&r.attributes)),
            ]))
        })
        .collect();
    Json::Obj(BTreeMap::from([
        ("records".into(), Json::Int(entries.len() as i128)),
        ("resource".into(), attrs(&rl.resource.attributes)),
        ("entries".into(), Json::Arr(entries)),
    ]))
}

/// The id (`host.id`) of a `ResourceLogs` in the server's JSON form.
fn id_of(rl: &Json) -> String {
    rl.get("resource").get("host.id").arr()[1].str().to_string()
}

/// Asserts that the server decoded every request without an error, and that the
/// `ResourceLogs` it saw are exactly those of `sent` (each payload at least once, in
/// requests the server answered `answered`, equal to the library's own message for
/// it); returns how often each id arrived in such requests.
fn assert_decoded(requests: &[Json], sent: &[LogPayload]) -> HashMap<String, usize> {
    let expected: HashMap<String, Json> = sent
        .iter()
        .map(|p| {
            let req = otlp::to_request(p);
            assert_eq!(req.resource_logs.len(), 1);
            (p.host_id.clone(), expected_json(&req.resource_logs[0]))
        })
        .collect();
    assert_eq!(expected.len(), sent.len(), "test bug: ids not unique");
    let mut arrived: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let errors = request.get("errors").arr();
        assert!(
            errors.is_empty(),
            "the official classes disagree: {errors:?}"
        );
        for rl in request.get("resource_logs").arr() {
            let id = id_of(rl);
            let want = expected
                .get(&id)
                .unwrap_or_else(|| panic!("a payload never sent arrived: {id}"));
            assert_eq!(
                rl, want,
                "payload {id} decodes otherwise in the official classes"
            );
            if request.get("answer").str() == "OK" {
                *arrived.entry(id).or_default() += 1;
            }
        }
    }
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !arrived.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "never arrived in a call answered OK: {missing:?}"
    );
    arrived
}

// ---------------------------------------------------------------------------------------
// A raw grpcio client: proves the server (and this file's checks) work without the wire.

/// `Export` driven as server streaming, as logsender drives it.
const EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(grpcio::MethodType::ServerStreaming, otlp::EXPORT_PATH);

/// One `Export` of `request`: the responses, or the failure status.
fn raw_export(client: &Client, request: &[u8]) -> Result<Vec<Vec<u8>>, grpcio::RpcStatus> {
    use futures_util::TryStreamExt;
    let call = client
        .server_streaming(&EXPORT, &request.to_vec(), CallOption::default())
        .expect("start the call");
    futures_executor::block_on(call.try_collect::<Vec<_>>()).map_err(|e| match e {
        grpcio::Error::RpcFailure(status) => status,
        other => panic!("not a status: {other:?}"),
    })
}

/// Requests of up to 10 payloads each (concatenated, as the wire sends them).
fn requests_of(payloads: &[LogPayload]) -> Vec<Vec<u8>> {
    payloads
        .chunks(10)
        .map(|c| {
            c.iter()
                .flat_map(|p| otlp::encode(&otlp::to_request(p)).expect("encode"))
                .collect()
        })
        .collect()
}

/// `n` random payloads (the wire-equivalence generator) with entries, each under 1 MiB
/// encoded (one request, no split), ids `r-0`, `r-1`, ...
fn random_payloads(seed: u64, n: usize) -> Vec<LogPayload> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let mut p = LogPayload::try_from(random_payload(&mut rng, false)).expect("valid");
        // A payload without entries has no records for the classes to check
        // (tests/otlp_mapping.rs leaves them out too).
        if p.logs.is_empty() {
            continue;
        }
        p.host_id = format!("r-{}", out.len());
        if otlp::encode(&otlp::to_request(&p)).map_or(usize::MAX, |b| b.len()) > 1 << 20 {
            continue;
        }
        out.push(p);
    }
    out
}

/// The server decodes what a raw client sends (random payloads, several per request)
/// with the official classes, its `RetryInfo` (grpcio-status, googleapis-common-protos)
/// reaches a grpcio client in the status's details byte for byte as
/// tests/support/sink.rs writes it by hand, and its partial success reads back.
#[test]
fn a_raw_client_gets_the_python_servers_decoding_and_retry_info() {
    if skipped("a_raw_client_gets_the_python_servers_decoding_and_retry_info") {
        return;
    }
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("raw-cq").build());

    // retry-after: the first request with records throttled, then OK.
    let mut server = PyServer::spawn(&["retry-after", "RESOURCE_EXHAUSTED", "1.25"]);
    let client = Client::new(ChannelBuilder::new(env.clone()).connect(&server.addr()));
    let sent = random_payloads(0x1a7e_0b5e, 60);
    let requests = requests_of(&sent);
    assert!(raw_export(&client, &[]).is_ok(), "a probe is answered OK");
    let status = raw_export(&client, &requests[0]).expect_err("throttled");
    assert_eq!(status.code(), RpcStatusCode::RESOURCE_EXHAUSTED);
    assert_eq!(status.message(), "throttled");
    assert_eq!(
        retry_delay_of(status.details()),
        Some(Duration::from_millis(1250)),
        "details: {:?}",
        status.details()
    );
    assert_eq!(
        status.details(),
        &retry_info_status(
            RpcStatusCode::RESOURCE_EXHAUSTED,
            "throttled",
            Duration::from_millis(1250)
        )[..],
        "grpc-status-details-bin differs from the hand-written google.rpc.Status"
    );
    for r in &requests {
        let answer = raw_export(&client, r).expect("OK after the throttle");
        let response =
            ExportLogsServiceResponse::parse_from_bytes(&answer.concat()).expect("a response");
        assert!(response.partial_success.is_none(), "{response:?}");
    }
    let lines = server.requests(Duration::from_millis(500)).to_vec();
    assert_eq!(lines.len(), 2 + requests.len(), "{lines:?}");
    let answers: Vec<&str> = lines.iter().map(|l| l.get("answer").str()).collect();
    assert_eq!(answers[..3], ["OK", "RESOURCE_EXHAUSTED", "OK"]);
    assert!(lines[0].get("resource_logs").arr().is_empty(), "the probe");
    assert_eq!(lines[1].get("resource_logs").arr().len(), 10);
    let arrived = assert_decoded(&lines, &sent);
    assert!(
        arrived.values().all(|n| *n == 1),
        "each once in an OK call: {arrived:?}"
    );
    drop(server);

    // partial: every request with records.
    let server = PyServer::spawn(&["partial", "2", "two records too old"]);
    let client = Client::new(ChannelBuilder::new(env).connect(&server.addr()));
    let answer = raw_export(&client, &requests[1]).expect("partial success is OK");
    let response =
        ExportLogsServiceResponse::parse_from_bytes(&answer.concat()).expect("a response");
    assert_eq!(response.partial_success.rejected_log_records, 2);
    assert_eq!(
        response.partial_success.error_message,
        "two records too old"
    );
    let answer = raw_export(&client, &[]).expect("a probe is OK");
    let response =
        ExportLogsServiceResponse::parse_from_bytes(&answer.concat()).expect("a response");
    assert!(response.partial_success.is_none(), "a probe: {response:?}");
}

// ---------------------------------------------------------------------------------------
// A LogSender on Wire::OtlpLogs.

/// Random payloads through a pool, gzip on: every one arrives, and decodes in the
/// official classes to the library's own message for it.
#[test]
fn random_payloads_from_a_sender_decode_in_the_official_classes() {
    if skipped("random_payloads_from_a_sender_decode_in_the_official_classes") {
        return;
    }
    watch_panics();
    let mut server = PyServer::spawn(&["ok"]);
    let config = fast_config_on(&server.addr(), Wire::OtlpLogs)
        .compression(Compression::Gzip)
        .commit_timeout(Duration::from_secs(10))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 2);
    let sent = random_payloads(0x07e1_0001, 200);
    for p in &sent {
        tx.send(p.clone()).expect("queue");
    }
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    assert!(done.report.all_delivered(), "{:?}", done.report);
    assert_eq!(done.stats.acknowledged, 200, "{:#?}", done.stats);
    let lines = server.requests(Duration::from_millis(500)).to_vec();
    let arrived = assert_decoded(&lines, &sent);
    if done.stats.resent_after_fault == 0 {
        assert!(arrived.values().all(|n| *n == 1), "{arrived:?}");
    }
    assert!(
        lines
            .iter()
            .all(|l| l.get("resource_logs").arr().len() <= 64),
        "a call carried more than 64 payloads"
    );
    assert_no_background_panic();
}

/// Ships payloads `0..n` of producer 0 with one worker on `config` (the OTLP wire to
/// `server`), flushes (nothing may stay outstanding) and closes. Returns how the sender
/// ended, the requests the server decoded, and the payloads sent.
fn ship(
    server: &mut PyServer,
    config: logsender::Config,
    n: usize,
    what: &str,
) -> (logsender::Shutdown, Vec<Json>, Vec<LogPayload>) {
    let (sender, tx) = sender_with_pool(config, 64, 1);
    let sent = queue(&tx, 0, 0..n);
    assert_eq!(
        sender.flush(WAIT).outstanding,
        0,
        "{what}: {:#?}",
        sender.stats()
    );
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    let lines = server.requests(Duration::from_millis(500)).to_vec();
    (done, lines, sent)
}

/// Python answers every request with `partial_success { rejected_log_records: 1 }`: the
/// sender counts one rejected (dead-lettered) entry per call that carried records,
/// reports each call's, and re-sends nothing.
#[test]
fn a_partial_success_from_python_is_counted_and_nothing_resent() {
    if skipped("a_partial_success_from_python_is_counted_and_nothing_resent") {
        return;
    }
    watch_panics();
    let mut server = PyServer::spawn(&["partial", "1", "one record too old"]);
    let collector = Collector::new();
    let config = fast_config_on(&server.addr(), Wire::OtlpLogs)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (done, lines, sent) = ship(&mut server, config, 30, "partial");
    let calls = lines
        .iter()
        .filter(|l| !l.get("resource_logs").arr().is_empty())
        .count() as u64;
    assert!(calls >= 1);
    let arrived = assert_decoded(&lines, &sent);
    assert!(arrived.values().all(|n| *n == 1), "re-sent: {arrived:?}");
    let st = &done.stats;
    assert_eq!(st.entries_rejected, calls, "{st:#?}");
    assert_eq!(st.entries_dead_lettered, calls, "{st:#?}");
    assert_eq!(st.acknowledged, 30, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "{st:#?}");
    assert!(!done.report.all_delivered(), "{:?}", done.report);
    let partial = collector.partial_successes();
    assert_eq!(partial.len() as u64, calls, "{partial:?}");
    assert!(partial
        .iter()
        .all(|p| p.rejected == 1 && p.message == "one record too old"));
    let heard: usize = partial.iter().map(|p| p.ids.len()).sum();
    assert_eq!(heard, 30, "each call's payloads, in its event");
    assert_no_background_panic();
}

/// Python throttles the first call with `RESOURCE_EXHAUSTED` and a `RetryInfo` of
/// 800 ms (grpcio-status's encoding): its payloads come back no earlier than that (by
/// the server's clock; the backoff is 20-200 ms), nothing is dead-lettered.
#[test]
fn retry_info_from_python_is_the_wait() {
    if skipped("retry_info_from_python_is_the_wait") {
        return;
    }
    watch_panics();
    let mut server = PyServer::spawn(&["retry-after", "RESOURCE_EXHAUSTED", "0.8"]);
    let config = fast_config_on(&server.addr(), Wire::OtlpLogs)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .expect("config");
    let (done, lines, sent) = ship(&mut server, config, 10, "throttled");
    assert!(done.report.all_delivered(), "{:?}", done.report);
    assert_decoded(&lines, &sent);
    let throttled = lines
        .iter()
        .position(|l| l.get("answer").str() == "RESOURCE_EXHAUSTED")
        .expect("a throttled call");
    let ids: Vec<String> = lines[throttled]
        .get("resource_logs")
        .arr()
        .iter()
        .map(id_of)
        .collect();
    let retry = lines[throttled + 1..]
        .iter()
        .find(|l| {
            l.get("resource_logs")
                .arr()
                .iter()
                .any(|rl| ids.contains(&id_of(rl)))
        })
        .expect("the throttled payloads came back");
    let gap_ns = retry.get("at_ns").int() - lines[throttled].get("at_ns").int();
    assert!(
        gap_ns >= 800_000_000,
        "re-sent {gap_ns} ns after a RetryInfo of 800 ms"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.get("resource_logs").arr().is_empty()),
        "a probe was sent: throttling is not a trial"
    );
    assert_no_background_panic();
}

/// A status class each, from a server the library did not write: UNAVAILABLE once
/// (re-sent, delivered), DATA_LOSS once (a trial, delivered), PERMISSION_DENIED on
/// every call, probes too (everything dead-lettered with it).
#[test]
fn status_classes_from_python() {
    if skipped("status_classes_from_python") {
        return;
    }
    watch_panics();
    for code in ["UNAVAILABLE", "DATA_LOSS"] {
        let mut server = PyServer::spawn(&["first-fail", code]);
        let collector = Collector::new();
        let config = fast_config_on(&server.addr(), Wire::OtlpLogs)
            .event_handler(collector.clone())
            .build()
            .expect("config");
        let (done, lines, sent) = ship(&mut server, config, 10, code);
        assert!(done.report.all_delivered(), "{code}: {:?}", done.report);
        assert!(collector.dead_letters().is_empty(), "{code}");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.get("answer").str() == code)
                .count(),
            1,
            "{code}: {lines:?}"
        );
        assert_decoded(&lines, &sent);
    }

    let mut server = PyServer::spawn(&["fail", "PERMISSION_DENIED"]);
    let collector = Collector::new();
    let config = fast_config_on(&server.addr(), Wire::OtlpLogs)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..10);
    wait_stats(&sender, WAIT, "every payload dead-lettered", |s| {
        s.dead_lettered == 10
    });
    let dead = collector.dead_letters();
    assert!(
        dead.iter()
            .all(|d| d.code == Some(RpcStatusCode::PERMISSION_DENIED)),
        "{dead:?}"
    );
    drop(tx);
    let done = within(WAIT, "close", move || sender.close());
    assert_eq!(done.stats.acknowledged, 0);
    let lines = server.requests(Duration::from_millis(500)).to_vec();
    assert!(
        lines
            .iter()
            .any(|l| l.get("resource_logs").arr().is_empty()),
        "no probe before everything was dead-lettered"
    );
    assert!(lines
        .iter()
        .all(|l| l.get("answer").str() == "PERMISSION_DENIED"));
    assert_no_background_panic();
}
