//! Throughput benchmark (`cargo bench`): logsender against the raw grpcio stream and
//! against the usual async peer (tonic + prost), on loopback. See BENCHMARKS.md.
//!
//! One binary, four roles, picked by the first argument (`cargo bench` passes `--bench`
//! and possibly a filter; anything that is not a role is the parent):
//!
//! - parent (no role): starts one long-lived sink process, runs every cell of the
//!   matrix in a fresh client process (so CPU seconds and peak RSS are per cell), then
//!   the backlog scenario, prints the markdown tables and writes JSON under
//!   `target/bench/`.
//! - `__sink [PORT]`: a minimal grpcio server for `/proto.LogService/SubmitStream` that
//!   only counts messages and bytes (it never decodes a payload). It listens on two ports:
//!   the first ends every stream like GoSight (status OK, no message), the second answers
//!   an empty `LogResponse` (what tonic's `client_streaming` needs, see `run_tonic`).
//!   Control on stdin: `COUNT` prints `COUNT <messages> <bytes> <ok streams> <cpu s>`;
//!   end of stdin ends the process.
//! - `__client SIZE CLIENT COUNT ADDR`: one cell; prints one `RESULT k=v ...` line.
//! - `__backlog VARIANT PORT`: the backlog scenario; starts its own sink on PORT after a
//!   while and prints one `RESULT` line.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use grpcio::{
    CallOption, ChannelBuilder, ClientStreamingSink, EnvBuilder, Environment, GrpcSlice,
    Marshaller, MessageReader, Method, MethodType, RequestStream, RpcContext, RpcStatus,
    ServerBuilder, ServerCredentials, ServiceBuilder, WriteFlags,
};
use logsender::{
    wire, Compression, Config, DeliveryMode, LogEntry, LogMeta, LogPayload, LogSender, Meta,
    OverflowPolicy,
};

const PATH: &str = "/proto.LogService/SubmitStream";

/// Capacity of the producer → sender queue (crossbeam for logsender, tokio mpsc for tonic).
const QUEUE_CAP: usize = 1024;

/// How often the sampler thread reads the "acknowledged" counter.
const SAMPLE_EVERY: Duration = Duration::from_micros(200);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__sink") => sink_main(&args[1..]),
        Some("__client") => client_main(&args[1..]),
        Some("__backlog") => backlog_main(&args[1..]),
        Some("__costs") => costs_main(),
        _ => parent_main(&args),
    }
}

// ---------------------------------------------------------------------------------------
// The matrix: payload sizes and clients.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    fn parse(s: &str) -> Size {
        Size::ALL
            .into_iter()
            .find(|z| z.name() == s)
            .unwrap_or_else(|| panic!("unknown size {s}"))
    }

    /// Log entries per payload.
    fn entries(self) -> usize {
        match self {
            Size::Small => 10,
            Size::Medium => 100,
            Size::Large => 1000,
        }
    }

    /// Payloads per cell at scale 1 (about a second of logsender with 4 workers on 2 cores).
    fn count(self) -> usize {
        match self {
            Size::Small => 20_000,
            Size::Medium => 5_000,
            Size::Large => 600,
        }
    }

    /// Distinct pre-built payloads cycled through (about 4 MB encoded in all).
    fn templates(self) -> usize {
        match self {
            Size::Small => 64,
            Size::Medium => 32,
            Size::Large => 8,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    /// One thread writing pre-encoded payloads into one grpcio call.
    Baseline,
    /// logsender with this delivery mode and this many workers.
    Logsender(DeliveryMode, usize),
    /// tonic + prost on a tokio runtime.
    Tonic,
    /// logsender, at-least-once, this many workers, with the default gzip (level 6).
    LogsenderGzip(usize),
    /// tonic + prost with gzip (flate2's default level, 6).
    TonicGzip,
}

impl Client {
    fn all() -> Vec<Client> {
        let mut v = vec![Client::Baseline];
        for mode in [DeliveryMode::AtMostOnce, DeliveryMode::AtLeastOnce] {
            for w in [1, 2, 4, 8] {
                v.push(Client::Logsender(mode, w));
            }
        }
        v.push(Client::Tonic);
        v.push(Client::LogsenderGzip(4));
        v.push(Client::TonicGzip);
        v
    }

    fn name(self) -> String {
        match self {
            Client::Baseline => "baseline".into(),
            Client::Logsender(DeliveryMode::AtMostOnce, w) => format!("at-most-once/{w}"),
            Client::Logsender(_, w) => format!("at-least-once/{w}"),
            Client::Tonic => "tonic".into(),
            Client::LogsenderGzip(w) => format!("at-least-once-gzip/{w}"),
            Client::TonicGzip => "tonic-gzip".into(),
        }
    }

    fn parse(s: &str) -> Client {
        Client::all()
            .into_iter()
            .find(|c| c.name() == s)
            .unwrap_or_else(|| panic!("unknown client {s}"))
    }
}

// ---------------------------------------------------------------------------------------
// Realistic payloads, deterministic.
// ---------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "request",
    "completed",
    "upstream",
    "timeout",
    "connection",
    "reset",
    "by",
    "peer",
    "user",
    "login",
    "succeeded",
    "failed",
    "for",
    "session",
    "cache",
    "miss",
    "hit",
    "retrying",
    "in",
    "ms",
    "disk",
    "usage",
    "above",
    "threshold",
    "on",
    "/var/lib",
    "GET",
    "POST",
    "/api/v1/orders",
    "/healthz",
    "status",
    "200",
    "404",
    "503",
    "took",
    "worker",
    "started",
    "stopped",
    "queue",
    "depth",
    "flushed",
    "records",
    "to",
    "postgres",
    "replica",
    "lag",
    "seconds",
    "TLS",
    "handshake",
    "certificate",
    "expires",
];

/// A log message of varied length: mostly short lines, a few long ones (stack-trace-ish).
fn message(rng: &mut Rng) -> String {
    let words = match rng.below(10) {
        0..=5 => 3 + rng.below(7),
        6..=8 => 8 + rng.below(12),
        _ => 25 + rng.below(25),
    };
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        if rng.below(6) == 0 {
            s.push_str(&rng.next().wrapping_rem(100_000).to_string());
        } else {
            s.push_str(rng.pick(WORDS));
        }
    }
    s
}

fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn entry(rng: &mut Rng, now: SystemTime, i: usize) -> LogEntry {
    let app = rng.pick(&["nginx", "api-gateway", "payments", "postgres", "sshd"]);
    let mut fields = map(&[
        ("request_id", format!("{:08x}", rng.next() as u32)),
        ("duration_ms", rng.below(5000).to_string()),
    ]);
    if rng.below(2) == 0 {
        fields.insert(
            "status".into(),
            rng.pick(&["200", "201", "404", "500"]).into(),
        );
    }
    let mut tags = map(&[("env", "prod".to_string())]);
    if rng.below(3) == 0 {
        tags.insert(
            "team".into(),
            rng.pick(&["core", "payments", "infra"]).into(),
        );
    }
    LogEntry {
        timestamp: Some(now + Duration::from_micros(i as u64 * 137)),
        level: rng
            .pick(&["info", "info", "info", "debug", "warn", "error"])
            .into(),
        message: message(rng),
        source: rng.pick(&["journald", "/var/log/syslog", "docker"]).into(),
        category: rng.pick(&["system", "http", "auth", "db"]).into(),
        pid: 1000 + rng.below(30_000) as i32,
        fields,
        tags,
        meta: Some(LogMeta {
            platform: "linux".into(),
            app_name: app.into(),
            ..Default::default()
        }),
    }
}

/// Host metadata as a GoSight agent fills it on a Kubernetes node in a cloud.
fn host_meta() -> Meta {
    Meta {
        hostname: "web-03.prod.example.internal".into(),
        ip_address: "10.20.3.17".into(),
        os: "linux".into(),
        os_version: "12.5".into(),
        kernel_version: "6.1.0-18-cloud-amd64".into(),
        architecture: "x86_64".into(),
        cloud_provider: "aws".into(),
        region: "eu-west-1".into(),
        availability_zone: "eu-west-1b".into(),
        instance_id: "i-0a1b2c3d4e5f67890".into(),
        instance_type: "m6i.large".into(),
        account_id: "123456789012".into(),
        vpc_id: "vpc-0abc1234".into(),
        subnet_id: "subnet-0def5678".into(),
        image_id: "ami-0123456789abcdef0".into(),
        container_id: "3f4e5d6c7b8a".into(),
        container_name: "api".into(),
        pod_name: "api-7d9f8c6b5-x2k4q".into(),
        namespace: "shop".into(),
        cluster_name: "prod-eu".into(),
        node_name: "ip-10-20-3-17".into(),
        container_image_name: "registry.example/api:1.42.0".into(),
        application: "shop".into(),
        environment: "production".into(),
        service: "api".into(),
        version: "1.42.0".into(),
        private_ip: "10.20.3.17".into(),
        mac_address: "0a:1b:2c:3d:4e:5f".into(),
        network_interface: "eth0".into(),
        labels: map(&[("app", "api".into()), ("tier", "backend".into())]),
        endpoint_id: "host-web-03".into(),
        platform: "debian".into(),
        platform_family: "debian".into(),
        platform_version: "12.5".into(),
        kernel_architecture: "x86_64".into(),
        virtualization_system: "kvm".into(),
        virtualization_role: "guest".into(),
        host_id: "7c1e9a52-6d0b-4f7e-9a3c-2b8d5e4f1a60".into(),
        agent_version: "0.9.3".into(),
        agent_id: "agent-7f3c2a".into(),
        tags: map(&[("owner", "platform".into())]),
        ..Default::default()
    }
}

fn payload(size: Size, variant: usize) -> LogPayload {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((variant as u64 + 1) * 0x1000_0001));
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + variant as u64);
    LogPayload {
        agent_id: "agent-7f3c2a".into(),
        host_id: "7c1e9a52-6d0b-4f7e-9a3c-2b8d5e4f1a60".into(),
        hostname: "web-03.prod.example.internal".into(),
        endpoint_id: "host-web-03".into(),
        timestamp: Some(now),
        logs: (0..size.entries())
            .map(|i| entry(&mut rng, now, i))
            .collect(),
        meta: Some(host_meta()),
    }
}

fn templates(size: Size) -> Vec<LogPayload> {
    (0..size.templates()).map(|v| payload(size, v)).collect()
}

/// `__costs`: sizes of the payloads and single-thread costs of the steps a medium payload
/// goes through (a diagnostic for reading the matrix; not part of `cargo bench`).
fn costs_main() {
    for size in Size::ALL {
        let t = templates(size);
        let lens: Vec<usize> = t.iter().map(|p| wire::encode(p).len()).collect();
        let meta = LogPayload {
            meta: t[0].meta.clone(),
            ..Default::default()
        };
        println!(
            "{}: {} entries, {:.1} KB encoded on average (min {} B, max {} B; Meta alone {} B)",
            size.name(),
            size.entries(),
            lens.iter().sum::<usize>() as f64 / lens.len() as f64 / 1e3,
            lens.iter().min().unwrap_or(&0),
            lens.iter().max().unwrap_or(&0),
            wire::encode(&meta).len()
        );
    }
    const N: usize = 4000;
    let per = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / N as f64);
    let t = templates(Size::Medium);
    let pb: Vec<prost_types::LogPayload> = t.iter().map(prost_types::from).collect();
    let time = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        f();
        t0.elapsed()
    };
    let mut items = Vec::new();
    let clone = time(&mut || items = prebuild(&t, N));
    let cold = time(&mut || {
        let bytes: usize = items.iter().map(|p| wire::encode(p).len()).sum();
        assert!(bytes > 0);
    });
    let free = time(&mut || drop(std::mem::take(&mut items)));
    let hot = time(&mut || {
        let bytes: usize = (0..N).map(|i| wire::encode(&t[i % t.len()]).len()).sum();
        assert!(bytes > 0);
    });
    let pbs = prebuild(&pb, N);
    let prost_cold = time(&mut || {
        let bytes: usize = pbs
            .iter()
            .map(|p| prost::Message::encode_to_vec(p).len())
            .sum();
        assert!(bytes > 0);
    });
    println!(
        "medium, per payload: clone {}, logsender encode {} (pre-built, cold) / {} (hot), \
         prost encode {} (cold), drop {}",
        per(clone),
        per(cold),
        per(hot),
        per(prost_cold),
        per(free)
    );
}

// ---------------------------------------------------------------------------------------
// Process measurements.
// ---------------------------------------------------------------------------------------

/// User + system CPU seconds of this process so far (/proc/self/stat, USER_HZ = 100).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` value in kB (`VmHWM` = peak RSS, `VmRSS` = current RSS).
fn proc_status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Kills this process if a cell hangs, so `cargo bench` always ends.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("bench client: no result after {limit:?}; giving up");
        std::process::exit(3);
    });
}

/// Per-payload timings of one cell. Times are nanoseconds since the cell's start.
struct Timings {
    /// Duration of the enqueue call (`send`), per payload.
    enq_ns: Vec<u64>,
    /// Whether the queue had room (the non-blocking try succeeded).
    room: Vec<bool>,
    /// When the enqueue call began.
    enq_at: Vec<u64>,
}

/// The producer loop shared by every client: hand over pre-built items one by one and
/// time each enqueue call. `send` returns whether the queue had room.
fn produce<P>(items: Vec<P>, start: Instant, mut send: impl FnMut(P) -> bool) -> Timings {
    let n = items.len();
    let mut t = Timings {
        enq_ns: Vec::with_capacity(n),
        room: Vec::with_capacity(n),
        enq_at: Vec::with_capacity(n),
    };
    for item in items {
        let t0 = Instant::now();
        let room = send(item);
        let t1 = Instant::now();
        t.enq_at.push((t0 - start).as_nanos() as u64);
        t.enq_ns.push((t1 - t0).as_nanos() as u64);
        t.room.push(room);
    }
    t
}

/// `n` items cycled from `templates`, built before the measured window.
fn prebuild<P: Clone>(templates: &[P], n: usize) -> Vec<P> {
    (0..n)
        .map(|i| templates[i % templates.len()].clone())
        .collect()
}

/// Polls a monotonic "payloads acknowledged" counter every `SAMPLE_EVERY` and gives the
/// i-th payload the time the counter first exceeded i (attribution in order: without
/// faults, epochs commit in order, and writes complete in order up to the few payloads
/// the workers encode concurrently). Stops at `n` or when `stop` is set.
fn spawn_sampler(
    n: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: impl Fn() -> u64 + Send + 'static,
) -> JoinHandle<Vec<u64>> {
    std::thread::Builder::new()
        .name("bench-sampler".into())
        .spawn(move || {
            let mut ack_at = vec![u64::MAX; n];
            let mut seen = 0usize;
            loop {
                let done = stop.load(Relaxed);
                let now = (start.elapsed()).as_nanos() as u64;
                let acked = (progress() as usize).min(n);
                if acked > seen {
                    ack_at[seen..acked].fill(now);
                    seen = acked;
                }
                if seen >= n || done {
                    return ack_at;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
        .expect("spawn sampler")
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// What one client process reports.
struct CellRun {
    n: usize,
    bytes: u64,
    /// Bytes sent on the loopback interface during the cell: what crossed the wire.
    wire_bytes: u64,
    secs: f64,
    cpu: f64,
    timings: Timings,
    ack_at: Vec<u64>,
    acked: u64,
    undelivered: u64,
    rss_base_kb: u64,
}

impl CellRun {
    /// A cell that shipped everything on one call: all of it counts, or none (the
    /// call's final status is its only acknowledgement).
    fn one_call(
        n: usize,
        secs: f64,
        cpu: f64,
        timings: Timings,
        ack_at: Vec<u64>,
        ok: bool,
        rss_base_kb: u64,
    ) -> CellRun {
        CellRun {
            n,
            bytes: 0,
            wire_bytes: 0,
            secs,
            cpu,
            timings,
            ack_at,
            acked: if ok { n as u64 } else { 0 },
            undelivered: if ok { 0 } else { n as u64 },
            rss_base_kb,
        }
    }

    fn print(self) {
        let Timings {
            enq_ns,
            room,
            enq_at,
        } = self.timings;
        let mut all = enq_ns.clone();
        all.sort_unstable();
        let mut with_room: Vec<u64> = enq_ns
            .iter()
            .zip(&room)
            .filter(|(_, r)| **r)
            .map(|(v, _)| *v)
            .collect();
        with_room.sort_unstable();
        let mut ack: Vec<u64> = enq_at
            .iter()
            .zip(&self.ack_at)
            .filter(|(_, a)| **a != u64::MAX)
            .map(|(e, a)| a.saturating_sub(*e))
            .collect();
        ack.sort_unstable();
        let us = |v: f64| v / 1e3;
        let ms = |v: f64| v / 1e6;
        let fields: Vec<(&str, f64)> = vec![
            ("n", self.n as f64),
            ("bytes", self.bytes as f64),
            ("wire_bytes", self.wire_bytes as f64),
            ("secs", self.secs),
            ("cpu", self.cpu),
            ("rss_peak_mb", proc_status_kb("VmHWM") as f64 / 1024.0),
            ("rss_base_mb", self.rss_base_kb as f64 / 1024.0),
            ("enq_p50_us", us(pct(&all, 0.50))),
            ("enq_p99_us", us(pct(&all, 0.99))),
            ("enq_max_us", us(pct(&all, 1.0))),
            ("enq_room_p99_us", us(pct(&with_room, 0.99))),
            (
                "room_frac",
                with_room.len() as f64 / all.len().max(1) as f64,
            ),
            ("ack_p50_ms", ms(pct(&ack, 0.50))),
            ("ack_p99_ms", ms(pct(&ack, 0.99))),
            ("ack_max_ms", ms(pct(&ack, 1.0))),
            ("acked", self.acked as f64),
            ("undelivered", self.undelivered as f64),
        ];
        print_result(&fields);
    }
}

fn print_result(fields: &[(&str, f64)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------
// Client role: one cell.
// ---------------------------------------------------------------------------------------

fn client_main(args: &[String]) {
    let [size, client, n, addr, ..] = args else {
        panic!("usage: __client SIZE CLIENT COUNT ADDR");
    };
    let (size, client) = (Size::parse(size), Client::parse(client));
    let n: usize = n.parse().expect("count");
    watchdog(Duration::from_secs(120));
    let templates = templates(size);
    let lens: Vec<u64> = templates
        .iter()
        .map(|p| wire::encode(p).len() as u64)
        .collect();
    let bytes = (0..n).map(|i| lens[i % lens.len()]).sum();
    let wire0 = loopback_bytes();
    let run = match client {
        Client::Baseline => run_baseline(&templates, n, addr),
        Client::Logsender(mode, workers) => {
            run_logsender(templates, n, addr, mode, workers, Compression::None)
        }
        Client::LogsenderGzip(workers) => run_logsender(
            templates,
            n,
            addr,
            DeliveryMode::AtLeastOnce,
            workers,
            Compression::Gzip,
        ),
        Client::Tonic => run_tonic(&templates, n, addr, false),
        Client::TonicGzip => run_tonic(&templates, n, addr, true),
    };
    let wire_bytes = loopback_bytes().saturating_sub(wire0);
    CellRun {
        bytes,
        wire_bytes,
        ..run
    }
    .print();
}

/// The request side of `SubmitStream` as pre-encoded bytes, driven as a duplex call on
/// the client (the GoSight ending would make grpcio's client-streaming receiver panic;
/// see DESIGN.md §3). Same bytes on the wire as a client stream.
const RAW_METHOD: Method<GrpcSlice, Vec<u8>> = Method {
    ty: MethodType::Duplex,
    name: PATH,
    req_mar: Marshaller {
        ser: ser_slice,
        de: de_slice,
    },
    resp_mar: Marshaller {
        ser: ser_vec,
        de: de_vec,
    },
};

fn ser_slice(msg: &GrpcSlice, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = msg.clone();
    Ok(())
}

fn de_slice(reader: MessageReader) -> grpcio::Result<GrpcSlice> {
    de_vec(reader).map(GrpcSlice::from)
}

fn ser_vec(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

fn de_vec(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut v)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(v)
}

/// Baseline: one thread, one call, `block_on(sink.send(..))` per pre-encoded payload.
fn run_baseline(templates: &[LogPayload], n: usize, addr: &str) -> CellRun {
    let slices: Vec<GrpcSlice> = templates
        .iter()
        .map(|p| GrpcSlice::from(wire::encode(p)))
        .collect();
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("base-cq").build());
    let channel = ChannelBuilder::new(env).connect(addr);
    assert!(
        block_on(channel.wait_for_connected(Duration::from_secs(10))),
        "baseline: cannot connect to {addr}"
    );
    let client = grpcio::Client::new(channel);
    let (mut sink, mut recv) = client
        .duplex_streaming(&RAW_METHOD, CallOption::default())
        .expect("open call");
    let items = prebuild(&slices, n);
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rss_base_kb = proc_status_kb("VmRSS");
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let w = written.clone();
    let sampler = spawn_sampler(n, start, stop.clone(), move || w.load(Relaxed));
    let timings = produce(items, start, |slice| {
        block_on(sink.send((slice, WriteFlags::default()))).expect("baseline write");
        written.fetch_add(1, Relaxed);
        true
    });
    block_on(sink.close()).expect("half-close");
    let status = block_on(recv.try_next());
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    let ok = matches!(status, Ok(None));
    if !ok {
        eprintln!("baseline: call ended with {status:?}");
    }
    CellRun::one_call(n, secs, cpu, timings, ack_at, ok, rss_base_kb)
}

/// logsender: producer thread (this one) → bounded crossbeam queue → `workers` workers.
fn run_logsender(
    templates: Vec<LogPayload>,
    n: usize,
    addr: &str,
    mode: DeliveryMode,
    workers: usize,
    compression: Compression,
) -> CellRun {
    let config = Config::builder(addr)
        .plaintext()
        .compression(compression)
        .delivery(mode)
        .build()
        .expect("config");
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAP);
    sender.start_worker_pool(rx, workers).expect("workers");
    wait_connected(&sender);
    let items = prebuild(&templates, n);
    let stop = Arc::new(AtomicBool::new(false));
    let rss_base_kb = proc_status_kb("VmRSS");
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let s = sender.clone();
    let sampler = spawn_sampler(n, start, stop.clone(), move || s.stats().acknowledged);
    let timings = produce(items, start, |p| match tx.try_send(p) {
        Ok(()) => true,
        Err(crossbeam_channel::TrySendError::Full(p)) => {
            tx.send(p).expect("queue closed");
            false
        }
        Err(e) => panic!("queue: {e}"),
    });
    let outstanding = sender.flush(Duration::from_secs(60));
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    drop(tx);
    let acked = sender.stats().acknowledged;
    let sender = Arc::into_inner(sender).expect("sole owner of the sender");
    let undelivered = sender.close().len();
    if outstanding > 0 || undelivered > 0 {
        eprintln!("logsender: {outstanding} outstanding after flush, {undelivered} undelivered");
    }
    CellRun {
        n,
        bytes: 0,
        wire_bytes: 0,
        secs,
        cpu,
        timings,
        ack_at,
        acked,
        undelivered: undelivered as u64,
        rss_base_kb,
    }
}

fn wait_connected(sender: &LogSender) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sender.stats().state != logsender::ConnectionState::Connected {
        assert!(Instant::now() < deadline, "logsender did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// tonic: producer thread (this one) → tokio mpsc (`blocking_send`) → a request stream
/// that tonic encodes with prost on a default multi-thread runtime. One
/// `client_streaming` call for the whole cell, like a tonic-build generated client.
///
/// Against a GoSight server (status OK, no message) `client_streaming` fails with
/// `Internal: Missing response message.` although the server accepted everything, so
/// tonic cells use the sink's second port, which answers an empty `LogResponse`.
fn run_tonic(templates: &[LogPayload], n: usize, addr: &str, gzip: bool) -> CellRun {
    let messages: Vec<prost_types::LogPayload> = templates.iter().map(prost_types::from).collect();
    for (m, p) in messages.iter().zip(templates) {
        assert_eq!(
            prost::Message::encoded_len(m),
            wire::encode(p).len(),
            "prost mirror disagrees with logsender's encoding"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri");
    let channel = rt.block_on(endpoint.connect()).expect("tonic connect");
    let (tx, rx) = tokio::sync::mpsc::channel::<prost_types::LogPayload>(QUEUE_CAP);
    let items = prebuild(&messages, n);
    let taken = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rss_base_kb = proc_status_kb("VmRSS");
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let t = taken.clone();
    let sampler = spawn_sampler(n, start, stop.clone(), move || t.load(Relaxed));
    let t = taken.clone();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
            .inspect(move |_| {
                t.fetch_add(1, Relaxed);
            });
    let call = rt.spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        if gzip {
            grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec =
            tonic_prost::ProstCodec::<prost_types::LogPayload, prost_types::LogResponse>::default();
        grpc.client_streaming(
            tonic::Request::new(requests),
            tonic::codegen::http::uri::PathAndQuery::from_static(PATH),
            codec,
        )
        .await
    });
    let timings = produce(items, start, |m| match tx.try_send(m) {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
            tx.blocking_send(m).expect("stream closed");
            false
        }
        Err(e) => panic!("mpsc: {e}"),
    });
    drop(tx); // ends the request stream: tonic half-closes
    let result = rt.block_on(call).expect("join");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    let ok = result.is_ok();
    if let Err(status) = &result {
        eprintln!("tonic: call ended with {status:?}");
    }
    CellRun::one_call(n, secs, cpu, timings, ack_at, ok, rss_base_kb)
}

/// Hand-written prost messages mirroring proto/log.proto and proto/meta.proto (no
/// protoc, no tonic-build), and the conversion a tonic user would not need (they would
/// build these directly; it runs before the timed part).
mod prost_types {
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogPayload {
        #[prost(string, tag = "1")]
        pub agent_id: String,
        #[prost(string, tag = "2")]
        pub host_id: String,
        #[prost(string, tag = "3")]
        pub hostname: String,
        #[prost(string, tag = "4")]
        pub endpoint_id: String,
        #[prost(message, optional, tag = "5")]
        pub timestamp: Option<Timestamp>,
        #[prost(message, repeated, tag = "6")]
        pub logs: Vec<LogEntry>,
        #[prost(message, optional, tag = "7")]
        pub meta: Option<Meta>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogEntry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub level: String,
        #[prost(string, tag = "3")]
        pub message: String,
        #[prost(string, tag = "4")]
        pub source: String,
        #[prost(string, tag = "5")]
        pub category: String,
        #[prost(int32, tag = "6")]
        pub pid: i32,
        #[prost(map = "string, string", tag = "7")]
        pub fields: HashMap<String, String>,
        #[prost(map = "string, string", tag = "8")]
        pub tags: HashMap<String, String>,
        #[prost(message, optional, tag = "9")]
        pub meta: Option<LogMeta>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogMeta {
        #[prost(string, tag = "1")]
        pub platform: String,
        #[prost(string, tag = "2")]
        pub app_name: String,
        #[prost(string, tag = "3")]
        pub app_version: String,
        #[prost(string, tag = "4")]
        pub container_id: String,
        #[prost(string, tag = "5")]
        pub container_name: String,
        #[prost(string, tag = "6")]
        pub unit: String,
        #[prost(string, tag = "7")]
        pub service: String,
        #[prost(string, tag = "8")]
        pub event_id: String,
        #[prost(string, tag = "9")]
        pub user: String,
        #[prost(string, tag = "10")]
        pub executable: String,
        #[prost(string, tag = "11")]
        pub path: String,
        #[prost(map = "string, string", tag = "12")]
        pub extra: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogResponse {
        #[prost(string, tag = "1")]
        pub status: String,
        #[prost(int32, tag = "2")]
        pub status_code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Meta {
        #[prost(string, tag = "1")]
        pub hostname: String,
        #[prost(string, tag = "2")]
        pub ip_address: String,
        #[prost(string, tag = "3")]
        pub os: String,
        #[prost(string, tag = "4")]
        pub os_version: String,
        #[prost(string, tag = "5")]
        pub kernel_version: String,
        #[prost(string, tag = "6")]
        pub architecture: String,
        #[prost(string, tag = "7")]
        pub cloud_provider: String,
        #[prost(string, tag = "8")]
        pub region: String,
        #[prost(string, tag = "9")]
        pub availability_zone: String,
        #[prost(string, tag = "10")]
        pub instance_id: String,
        #[prost(string, tag = "11")]
        pub instance_type: String,
        #[prost(string, tag = "12")]
        pub account_id: String,
        #[prost(string, tag = "13")]
        pub project_id: String,
        #[prost(string, tag = "14")]
        pub resource_group: String,
        #[prost(string, tag = "15")]
        pub vpc_id: String,
        #[prost(string, tag = "16")]
        pub subnet_id: String,
        #[prost(string, tag = "17")]
        pub image_id: String,
        #[prost(string, tag = "18")]
        pub service_id: String,
        #[prost(string, tag = "19")]
        pub container_id: String,
        #[prost(string, tag = "20")]
        pub container_name: String,
        #[prost(string, tag = "21")]
        pub pod_name: String,
        #[prost(string, tag = "22")]
        pub namespace: String,
        #[prost(string, tag = "23")]
        pub cluster_name: String,
        #[prost(string, tag = "24")]
        pub node_name: String,
        #[prost(string, tag = "25")]
        pub container_image_name: String,
        #[prost(string, tag = "26")]
        pub container_image_id: String,
        #[prost(string, tag = "27")]
        pub application: String,
        #[prost(string, tag = "28")]
        pub environment: String,
        #[prost(string, tag = "29")]
        pub service: String,
        #[prost(string, tag = "30")]
        pub version: String,
        #[prost(string, tag = "31")]
        pub deployment_id: String,
        #[prost(string, tag = "32")]
        pub public_ip: String,
        #[prost(string, tag = "33")]
        pub private_ip: String,
        #[prost(string, tag = "34")]
        pub mac_address: String,
        #[prost(string, tag = "35")]
        pub network_interface: String,
        #[prost(map = "string, string", tag = "36")]
        pub labels: HashMap<String, String>,
        #[prost(string, tag = "37")]
        pub endpoint_id: String,
        #[prost(string, tag = "38")]
        pub platform: String,
        #[prost(string, tag = "39")]
        pub platform_family: String,
        #[prost(string, tag = "40")]
        pub platform_version: String,
        #[prost(string, tag = "41")]
        pub kernel_architecture: String,
        #[prost(string, tag = "42")]
        pub virtualization_system: String,
        #[prost(string, tag = "43")]
        pub virtualization_role: String,
        #[prost(string, tag = "44")]
        pub host_id: String,
        #[prost(string, tag = "45")]
        pub agent_version: String,
        #[prost(string, tag = "46")]
        pub agent_id: String,
        #[prost(string, tag = "47")]
        pub resource_id: String,
        #[prost(string, tag = "48")]
        pub kind: String,
        #[prost(map = "string, string", tag = "49")]
        pub tags: HashMap<String, String>,
    }

    fn ts(t: Option<SystemTime>) -> Option<Timestamp> {
        let d = t?.duration_since(UNIX_EPOCH).ok()?;
        Some(Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        })
    }

    pub fn from(p: &logsender::LogPayload) -> LogPayload {
        LogPayload {
            agent_id: p.agent_id.clone(),
            host_id: p.host_id.clone(),
            hostname: p.hostname.clone(),
            endpoint_id: p.endpoint_id.clone(),
            timestamp: ts(p.timestamp),
            logs: p.logs.iter().map(entry).collect(),
            meta: p.meta.as_ref().map(meta),
        }
    }

    fn entry(e: &logsender::LogEntry) -> LogEntry {
        LogEntry {
            timestamp: ts(e.timestamp),
            level: e.level.clone(),
            message: e.message.clone(),
            source: e.source.clone(),
            category: e.category.clone(),
            pid: e.pid,
            fields: e.fields.clone(),
            tags: e.tags.clone(),
            meta: e.meta.as_ref().map(|m| LogMeta {
                platform: m.platform.clone(),
                app_name: m.app_name.clone(),
                app_version: m.app_version.clone(),
                container_id: m.container_id.clone(),
                container_name: m.container_name.clone(),
                unit: m.unit.clone(),
                service: m.service.clone(),
                event_id: m.event_id.clone(),
                user: m.user.clone(),
                executable: m.executable.clone(),
                path: m.path.clone(),
                extra: m.extra.clone(),
            }),
        }
    }

    fn meta(m: &logsender::Meta) -> Meta {
        Meta {
            hostname: m.hostname.clone(),
            ip_address: m.ip_address.clone(),
            os: m.os.clone(),
            os_version: m.os_version.clone(),
            kernel_version: m.kernel_version.clone(),
            architecture: m.architecture.clone(),
            cloud_provider: m.cloud_provider.clone(),
            region: m.region.clone(),
            availability_zone: m.availability_zone.clone(),
            instance_id: m.instance_id.clone(),
            instance_type: m.instance_type.clone(),
            account_id: m.account_id.clone(),
            project_id: m.project_id.clone(),
            resource_group: m.resource_group.clone(),
            vpc_id: m.vpc_id.clone(),
            subnet_id: m.subnet_id.clone(),
            image_id: m.image_id.clone(),
            service_id: m.service_id.clone(),
            container_id: m.container_id.clone(),
            container_name: m.container_name.clone(),
            pod_name: m.pod_name.clone(),
            namespace: m.namespace.clone(),
            cluster_name: m.cluster_name.clone(),
            node_name: m.node_name.clone(),
            container_image_name: m.container_image_name.clone(),
            container_image_id: m.container_image_id.clone(),
            application: m.application.clone(),
            environment: m.environment.clone(),
            service: m.service.clone(),
            version: m.version.clone(),
            deployment_id: m.deployment_id.clone(),
            public_ip: m.public_ip.clone(),
            private_ip: m.private_ip.clone(),
            mac_address: m.mac_address.clone(),
            network_interface: m.network_interface.clone(),
            labels: m.labels.clone(),
            endpoint_id: m.endpoint_id.clone(),
            platform: m.platform.clone(),
            platform_family: m.platform_family.clone(),
            platform_version: m.platform_version.clone(),
            kernel_architecture: m.kernel_architecture.clone(),
            virtualization_system: m.virtualization_system.clone(),
            virtualization_role: m.virtualization_role.clone(),
            host_id: m.host_id.clone(),
            agent_version: m.agent_version.clone(),
            agent_id: m.agent_id.clone(),
            resource_id: m.resource_id.clone(),
            kind: m.kind.clone(),
            tags: m.tags.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sink role.
// ---------------------------------------------------------------------------------------

/// The sink never decodes: a request is just its length.
const SINK_METHOD: Method<usize, Vec<u8>> = Method {
    ty: MethodType::ClientStreaming,
    name: PATH,
    req_mar: Marshaller {
        ser: ser_len,
        de: de_len,
    },
    resp_mar: Marshaller {
        ser: ser_vec,
        de: de_vec,
    },
};

fn ser_len(_: &usize, _: &mut GrpcSlice) -> grpcio::Result<()> {
    Ok(()) // requests are never serialized by the server
}

fn de_len(reader: MessageReader) -> grpcio::Result<usize> {
    Ok(reader.len())
}

#[derive(Default)]
struct SinkCounts {
    messages: AtomicU64,
    bytes: AtomicU64,
    ok_streams: AtomicU64,
}

fn sink_main(args: &[String]) {
    let port: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    let counts = Arc::new(SinkCounts::default());
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("sink-cq").build());
    // Servers live until the process exits (stopping one with an open call would hang).
    let (_gosight, gosight_port) = sink_server(&env, &counts, false, port);
    let (_answering, answering_port) = sink_server(&env, &counts, true, 0);
    println!("SINK-PORTS {gosight_port} {answering_port}");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "COUNT" {
            println!(
                "COUNT {} {} {} {}",
                counts.messages.load(Relaxed),
                counts.bytes.load(Relaxed),
                counts.ok_streams.load(Relaxed),
                cpu_secs()
            );
            let _ = std::io::stdout().flush();
        }
    }
    std::process::exit(0);
}

/// One server on 127.0.0.1:`port` (0 = any). `answer`: end streams with an empty
/// `LogResponse` instead of GoSight's OK-without-message.
fn sink_server(
    env: &Arc<Environment>,
    counts: &Arc<SinkCounts>,
    answer: bool,
    port: u16,
) -> (grpcio::Server, u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut server = ServerBuilder::new(env.clone())
            .register_service(sink_service(counts, answer))
            .build()
            .expect("build sink server");
        match server.add_listening_port(format!("127.0.0.1:{port}"), ServerCredentials::insecure())
        {
            Ok(bound) => {
                server.start();
                return (server, bound);
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("sink: bind 127.0.0.1:{port} failed ({e}); retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("sink: cannot bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// The `SubmitStream` handler: count each message and its bytes, then end the stream.
fn sink_service(counts: &Arc<SinkCounts>, answer: bool) -> grpcio::Service {
    let counts = counts.clone();
    ServiceBuilder::new()
        .add_client_streaming_handler(
            &SINK_METHOD,
            move |ctx: RpcContext<'_>,
                  mut stream: RequestStream<usize>,
                  sink: ClientStreamingSink<Vec<u8>>| {
                let counts = counts.clone();
                ctx.spawn(async move {
                    loop {
                        match stream.try_next().await {
                            Ok(Some(len)) => {
                                counts.messages.fetch_add(1, Relaxed);
                                counts.bytes.fetch_add(len as u64, Relaxed);
                            }
                            Ok(None) => break,
                            Err(_) => return, // cancelled by the client
                        }
                    }
                    let done = if answer {
                        sink.success(Vec::new()).await
                    } else {
                        sink.fail(RpcStatus::ok()).await
                    };
                    if done.is_ok() {
                        counts.ok_streams.fetch_add(1, Relaxed);
                    }
                });
            },
        )
        .build()
}

/// The parent's (or the backlog client's) handle on a sink process.
struct SinkProcess {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    gosight_port: u16,
    answering_port: u16,
}

/// What the sink has counted so far.
#[derive(Clone, Copy, Default)]
struct SinkSnapshot {
    messages: u64,
    bytes: u64,
    ok_streams: u64,
    cpu: f64,
}

impl SinkProcess {
    fn spawn(port: u16) -> SinkProcess {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(["__sink", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sink");
        let stdin = child.stdin.take().expect("sink stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("sink stdout")).lines();
        let ports = loop {
            let line = lines
                .next()
                .expect("sink exited before it was ready")
                .expect("read sink");
            if let Some(rest) = line.strip_prefix("SINK-PORTS ") {
                break rest.to_string();
            }
        };
        let mut ports = ports
            .split_whitespace()
            .map(|p| p.parse::<u16>().expect("port"));
        SinkProcess {
            child,
            stdin,
            lines,
            gosight_port: ports.next().expect("port"),
            answering_port: ports.next().expect("port"),
        }
    }

    fn snapshot(&mut self) -> SinkSnapshot {
        writeln!(self.stdin, "COUNT").expect("sink control");
        self.stdin.flush().expect("sink control");
        loop {
            let line = self.lines.next().expect("sink gone").expect("read sink");
            if let Some(rest) = line.strip_prefix("COUNT ") {
                let v: Vec<f64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0.0))
                    .collect();
                return SinkSnapshot {
                    messages: v[0] as u64,
                    bytes: v[1] as u64,
                    ok_streams: v[2] as u64,
                    cpu: v[3],
                };
            }
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Backlog role: the collector is down for a while, then up.
// ---------------------------------------------------------------------------------------

/// Backlog variants: (name, max_buffered_payloads, max_buffered_bytes).
const BACKLOG_VARIANTS: [(&str, usize, usize); 2] = [
    ("payload-bound", 2_000, 64 << 20),
    ("byte-bound", 10_000, 16 << 20),
];
const BACKLOG_PAYLOADS: usize = 5_000;
const BACKLOG_DOWN: Duration = Duration::from_millis(2_000);
const BACKLOG_QUEUE: usize = 256;
const BACKLOG_WORKERS: usize = 4;
/// How long the backlog client waits for the first write after the sink is up before it
/// declares the sender stuck and kicks it with `flush`.
const STALL_WAIT: Duration = Duration::from_secs(2);

fn backlog_main(args: &[String]) {
    let [variant, port, ..] = args else {
        panic!("usage: __backlog VARIANT PORT");
    };
    let (_, max_payloads, max_bytes) = *BACKLOG_VARIANTS
        .iter()
        .find(|v| v.0 == variant)
        .expect("variant");
    let port: u16 = port.parse().expect("port");
    let n = scaled(BACKLOG_PAYLOADS);
    watchdog(Duration::from_secs(180));
    let templates = templates(Size::Medium);
    let config = Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .compression(Compression::None)
        .delivery(DeliveryMode::AtLeastOnce)
        .max_buffered_payloads(max_payloads)
        .max_buffered_bytes(max_bytes)
        .overflow(OverflowPolicy::Block { timeout: None })
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(250))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("config");
    let rss_base_mb = proc_status_kb("VmRSS") as f64 / 1024.0;
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(BACKLOG_QUEUE);
    sender
        .start_worker_pool(rx, BACKLOG_WORKERS)
        .expect("workers");
    let start = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let produced = produced.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                tx.send(templates[i % templates.len()].clone())
                    .expect("queue");
                produced.fetch_add(1, Relaxed);
            }
        })
    };
    // A sampler for the memory bound and the first acknowledgement.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (sender, stop) = (sender.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut max_held, mut max_bytes, mut first_ack) = (0u64, 0u64, None);
            while !stop.load(Relaxed) {
                let s = sender.stats();
                max_held = max_held.max(s.unacked);
                max_bytes = max_bytes.max(s.unacked_bytes);
                if first_ack.is_none() && s.acknowledged > 0 {
                    first_ack = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (max_held, max_bytes, first_ack)
        })
    };
    std::thread::sleep(BACKLOG_DOWN.saturating_sub(start.elapsed()));
    let held_at_down_end = sender.stats();
    let produced_at_up = produced.load(Relaxed);
    let rss_down_mb = proc_status_kb("VmRSS") as f64 / 1024.0;
    let mut sink = SinkProcess::spawn(port);
    let up = Instant::now();
    // Known library defect (see BENCHMARKS.md): when the buffer filled while the collector
    // was away, every worker waits inside the overflow policy, so none takes the wake-up
    // that the supervisor sends once the stream is up, and nothing is written. Detect
    // that (nothing written within STALL_WAIT) and unstick it the only way the public
    // API offers: `flush`, which writes the outbox from the calling thread.
    let mut stalled = false;
    while sender.stats().sent == 0 {
        if up.elapsed() >= STALL_WAIT {
            stalled = true;
            let _ = sender.flush(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let unstuck = up.elapsed();
    producer.join().expect("producer");
    let outstanding = sender.flush(Duration::from_secs(120));
    let done = Instant::now();
    stop.store(true, Relaxed);
    let (max_held, max_held_bytes, first_ack) = sampler.join().expect("sampler");
    let stats = sender.stats();
    let sender = Arc::into_inner(sender).expect("sole owner");
    let undelivered = sender.close().len();
    let seen = sink.snapshot();
    let backlog = held_at_down_end.unacked + held_at_down_end.queue_depth;
    let first_ack = first_ack.unwrap_or(done);
    // Drain is timed from the first write after the sink came up (so a stall and its
    // kick are reported apart, in `first_write_ms`).
    let drain = done - (up + unstuck);
    let drain_rate = (n as f64) / drain.as_secs_f64();
    print_result(&[
        ("n", n as f64),
        ("max_payloads", max_payloads as f64),
        ("max_bytes_mb", max_bytes as f64 / 1048576.0),
        ("down_secs", up.duration_since(start).as_secs_f64()),
        ("produced_at_up", produced_at_up as f64),
        ("backlog_at_up", backlog as f64),
        (
            "held_mb_at_up",
            held_at_down_end.unacked_bytes as f64 / 1048576.0,
        ),
        (
            "first_ack_ms",
            first_ack.saturating_duration_since(up).as_secs_f64() * 1e3,
        ),
        ("drain_secs", drain.as_secs_f64()),
        ("stalled", if stalled { 1.0 } else { 0.0 }),
        ("first_write_ms", unstuck.as_secs_f64() * 1e3),
        ("drain_rate", drain_rate),
        ("max_held", max_held as f64),
        ("max_held_mb", max_held_bytes as f64 / 1048576.0),
        ("rss_base_mb", rss_base_mb),
        ("rss_down_mb", rss_down_mb),
        ("rss_peak_mb", proc_status_kb("VmHWM") as f64 / 1024.0),
        ("acked", stats.acknowledged as f64),
        ("epochs", stats.epochs_committed as f64),
        ("outstanding", outstanding as f64),
        ("undelivered", undelivered as f64),
        ("sink_messages", seen.messages as f64),
    ]);
}

// ---------------------------------------------------------------------------------------
// Parent: orchestration, statistics, output.
// ---------------------------------------------------------------------------------------

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `count` times `LOGSENDER_BENCH_SCALE` (at least 1).
fn scaled(count: usize) -> usize {
    let scale: f64 = env_or("LOGSENDER_BENCH_SCALE", 1.0);
    ((count as f64 * scale).round() as usize).max(1)
}

type Sample = BTreeMap<String, f64>;

/// Runs this binary with `args` and parses its `RESULT` line.
fn run_child(args: &[String]) -> Option<Sample> {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn client");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT "));
    if line.is_none() {
        eprintln!("bench: {args:?} gave no result ({})", out.status);
    }
    Some(
        line?
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
            .collect(),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Half the range, relative to the median, in percent.
fn spread(v: &[f64]) -> f64 {
    let fin: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let (lo, hi) = fin
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    100.0 * (hi - lo) / 2.0 / median(&fin)
}

struct Cell {
    size: Size,
    client: Client,
    reps: Vec<Sample>,
}

impl Cell {
    fn metric(&self, key: &str) -> Vec<f64> {
        self.reps
            .iter()
            .map(|s| s.get(key).copied().unwrap_or(f64::NAN))
            .collect()
    }

    fn med(&self, key: &str) -> f64 {
        median(&self.metric(key))
    }

    /// Derived per-rep values: payloads/s and MB/s over the measured window.
    fn rates(&self) -> (Vec<f64>, Vec<f64>) {
        self.reps
            .iter()
            .map(|s| {
                let secs = s.get("secs").copied().unwrap_or(f64::NAN);
                let acked = s.get("acked").copied().unwrap_or(0.0);
                let n = s.get("n").copied().unwrap_or(1.0);
                let bytes = s.get("bytes").copied().unwrap_or(0.0) * (acked / n).min(1.0);
                (acked / secs, bytes / secs / 1e6)
            })
            .unzip()
    }
}

fn parent_main(args: &[String]) {
    let reps: usize = env_or("LOGSENDER_BENCH_REPS", 3).max(1);
    let filter = std::env::var("LOGSENDER_BENCH_FILTER")
        .ok()
        .or_else(|| args.iter().find(|a| !a.starts_with('-')).cloned())
        .unwrap_or_default();
    let wanted = |name: &str| filter.split(',').any(|f| name.contains(f.trim()));
    let began = Instant::now();
    let mut cells: Vec<Cell> = Vec::new();
    for size in Size::ALL {
        for client in Client::all() {
            if wanted(&format!("{}/{}", size.name(), client.name())) {
                cells.push(Cell {
                    size,
                    client,
                    reps: Vec::new(),
                });
            }
        }
    }
    let backlog_variants: Vec<&str> = BACKLOG_VARIANTS
        .iter()
        .map(|v| v.0)
        .filter(|v| wanted(&format!("backlog/{v}")))
        .collect();
    eprintln!(
        "bench: {} cells x {reps} reps, {} backlog variants (LOGSENDER_BENCH_FILTER={filter:?}, \
         LOGSENDER_BENCH_SCALE={})",
        cells.len(),
        backlog_variants.len(),
        env_or("LOGSENDER_BENCH_SCALE", 1.0)
    );

    if !cells.is_empty() {
        let mut sink = SinkProcess::spawn(0);
        for rep in 0..reps {
            for cell in &mut cells {
                let port = match cell.client {
                    Client::Tonic | Client::TonicGzip => sink.answering_port,
                    _ => sink.gosight_port,
                };
                let n = scaled(cell.size.count());
                let before = sink.snapshot();
                let result = run_child(&[
                    "__client".into(),
                    cell.size.name().into(),
                    cell.client.name(),
                    n.to_string(),
                    format!("127.0.0.1:{port}"),
                ]);
                let after = sink.snapshot();
                let Some(mut sample) = result else { continue };
                sample.insert(
                    "sink_messages".into(),
                    (after.messages - before.messages) as f64,
                );
                sample.insert("sink_bytes".into(), (after.bytes - before.bytes) as f64);
                sample.insert(
                    "sink_streams".into(),
                    (after.ok_streams - before.ok_streams) as f64,
                );
                sample.insert("sink_cpu".into(), after.cpu - before.cpu);
                let secs = sample.get("secs").copied().unwrap_or(f64::NAN);
                if sample.get("sink_messages") != sample.get("n") {
                    eprintln!(
                        "bench: WARNING {}/{}: sink counted {} messages, expected {n}",
                        cell.size.name(),
                        cell.client.name(),
                        after.messages - before.messages
                    );
                }
                eprintln!(
                    "bench: rep {}/{reps} {:>6}/{:<16} {:>9.0} payloads/s  ({:.2} s)",
                    rep + 1,
                    cell.size.name(),
                    cell.client.name(),
                    sample.get("acked").copied().unwrap_or(0.0) / secs,
                    secs
                );
                cell.reps.push(sample);
            }
        }
    }

    let mut backlog: Vec<(String, Vec<Sample>)> = Vec::new();
    for variant in backlog_variants {
        let mut runs = Vec::new();
        for rep in 0..reps {
            let port = free_port();
            if let Some(s) = run_child(&["__backlog".into(), variant.into(), port.to_string()]) {
                eprintln!(
                    "bench: rep {}/{reps} backlog/{variant}: drained {} in {:.2} s",
                    rep + 1,
                    s.get("n").copied().unwrap_or(0.0),
                    s.get("drain_secs").copied().unwrap_or(f64::NAN)
                );
                runs.push(s);
            }
        }
        backlog.push((variant.to_string(), runs));
    }

    let elapsed = began.elapsed().as_secs_f64();
    let table = matrix_table(&cells) + "\n" + &backlog_table(&backlog);
    println!("{table}");
    println!(
        "{reps} repetitions, median (± half the range over repetitions); whole run {elapsed:.0} s."
    );
    write_json(&cells, &backlog, reps, &filter, elapsed);
}

/// Bytes sent on the loopback interface so far (`lo` in /proc/net/dev, headers
/// included): during a cell, what crossed the wire between client and sink (both
/// directions; the sink's side is a few bytes per call). grpc core writes with
/// `sendmsg`, which /proc/self/io does not count.
fn loopback_bytes() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (name, rest) = l.split_once(':')?;
                if name.trim() != "lo" {
                    return None;
                }
                // receive: bytes packets errs drop fifo frame compressed multicast,
                // then transmit: bytes ...
                rest.split_whitespace().nth(8)?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// A port that was free a moment ago (for a sink that starts later).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", v);
    // Thousands separators.
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_lat(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn matrix_table(cells: &[Cell]) -> String {
    if cells.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str(
        "| size | client | payloads/s | MB/s | × base | wire MB | enqueue p50 / p99 / max µs | \
         p99 with room µs (room %) | enq→ack p50 / p99 / max ms | CPU s | peak RSS MB |\n",
    );
    t.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for cell in cells {
        let (pps, mbs) = cell.rates();
        let base = cells
            .iter()
            .find(|c| c.size == cell.size && c.client == Client::Baseline)
            .map(|c| median(&c.rates().0));
        let ratio = base.map_or(f64::NAN, |b| median(&pps) / b);
        let avg_kb = cell.med("bytes") / cell.med("n") / 1e3;
        t.push_str(&format!(
            "| {} ({:.1} KB) | {} | {} ±{:.0}% | {:.1} | {} | {:.1} | {} / {} / {} | {} ({:.0}%) | {} / {} / {} | {:.2} | {:.0} |\n",
            cell.size.name(),
            avg_kb,
            cell.client.name(),
            fmt_rate(median(&pps)),
            spread(&pps),
            median(&mbs),
            if ratio.is_finite() { format!("{ratio:.2}×") } else { "–".into() },
            cell.med("wire_bytes") / 1e6,
            fmt_lat(cell.med("enq_p50_us")),
            fmt_lat(cell.med("enq_p99_us")),
            fmt_lat(cell.med("enq_max_us")),
            fmt_lat(cell.med("enq_room_p99_us")),
            100.0 * cell.med("room_frac"),
            fmt_lat(cell.med("ack_p50_ms")),
            fmt_lat(cell.med("ack_p99_ms")),
            fmt_lat(cell.med("ack_max_ms")),
            cell.med("cpu"),
            cell.med("rss_peak_mb"),
        ));
    }
    t
}

fn backlog_table(runs: &[(String, Vec<Sample>)]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str(
        "| backlog | bound (payloads / MiB) | payloads | backlog at up (payloads / MiB) | \
         first write after up ms | drain s | payloads/s draining | epochs | \
         max held (payloads / MiB) | RSS before / down / peak MB | delivered |\n",
    );
    t.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (variant, reps) in runs {
        let med = |k: &str| {
            median(
                &reps
                    .iter()
                    .map(|s| s.get(k).copied().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let rates: Vec<f64> = reps
            .iter()
            .map(|s| s.get("drain_rate").copied().unwrap_or(f64::NAN))
            .collect();
        t.push_str(&format!(
            "| {variant} | {} / {:.0} | {} | {} / {:.1} | {:.0}{} | {:.2} | {} ±{:.0}% | {:.0} | {} / {:.1} | {:.0} / {:.0} / {:.0} | {} of {} |\n",
            fmt_rate(med("max_payloads")),
            med("max_bytes_mb"),
            fmt_rate(med("n")),
            fmt_rate(med("backlog_at_up")),
            med("held_mb_at_up"),
            med("first_write_ms"),
            if med("stalled") > 0.0 { " (stuck, kicked)" } else { "" },
            med("drain_secs"),
            fmt_rate(median(&rates)),
            spread(&rates),
            med("epochs"),
            fmt_rate(med("max_held")),
            med("max_held_mb"),
            med("rss_base_mb"),
            med("rss_down_mb"),
            med("rss_peak_mb"),
            fmt_rate(med("sink_messages")),
            fmt_rate(med("n")),
        ));
    }
    t
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_sample(s: &Sample) -> String {
    let fields: Vec<String> = s
        .iter()
        .map(|(k, v)| format!("\"{k}\": {}", json_num(*v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Median and spread of every metric of a set of samples.
fn json_summary(reps: &[Sample]) -> String {
    let keys: Vec<&String> = reps.first().map(|s| s.keys().collect()).unwrap_or_default();
    let fields: Vec<String> = keys
        .iter()
        .map(|k| {
            let v: Vec<f64> = reps
                .iter()
                .map(|s| s.get(*k).copied().unwrap_or(f64::NAN))
                .collect();
            format!(
                "\"{k}\": {{\"median\": {}, \"spread_pct\": {}}}",
                json_num(median(&v)),
                json_num(spread(&v))
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

fn write_json(
    cells: &[Cell],
    backlog: &[(String, Vec<Sample>)],
    reps: usize,
    filter: &str,
    secs: f64,
) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut cell_json = Vec::new();
    for cell in cells {
        let (pps, mbs) = cell.rates();
        let base = cells
            .iter()
            .find(|c| c.size == cell.size && c.client == Client::Baseline)
            .map_or(f64::NAN, |c| median(&c.rates().0));
        cell_json.push(format!(
            "    {{\"size\": \"{}\", \"client\": \"{}\", \"payloads_per_s\": {{\"median\": {}, \"spread_pct\": {}}}, \
             \"mb_per_s\": {{\"median\": {}, \"spread_pct\": {}}}, \"ratio_to_baseline\": {}, \
             \"summary\": {}, \"reps\": [{}]}}",
            cell.size.name(),
            cell.client.name(),
            json_num(median(&pps)),
            json_num(spread(&pps)),
            json_num(median(&mbs)),
            json_num(spread(&mbs)),
            json_num(median(&pps) / base),
            json_summary(&cell.reps),
            cell.reps.iter().map(json_sample).collect::<Vec<_>>().join(", "),
        ));
    }
    let backlog_json: Vec<String> = backlog
        .iter()
        .map(|(v, reps)| {
            format!(
                "    {{\"variant\": \"{v}\", \"summary\": {}, \"reps\": [{}]}}",
                json_summary(reps),
                reps.iter().map(json_sample).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"unix_time\": {unix},\n  \"cores\": {cores},\n  \"reps\": {reps},\n  \"scale\": {},\n  \
         \"filter\": \"{}\",\n  \"elapsed_s\": {},\n  \"queue_capacity\": {QUEUE_CAP},\n  \
         \"sample_every_us\": {},\n  \"cells\": [\n{}\n  ],\n  \"backlog\": [\n{}\n  ]\n}}\n",
        json_num(env_or("LOGSENDER_BENCH_SCALE", 1.0)),
        filter.replace(['"', '\\'], ""),
        json_num(secs),
        SAMPLE_EVERY.as_micros(),
        cell_json.join(",\n"),
        backlog_json.join(",\n"),
    );
    // target/bench next to the binary's target dir (target/release/deps/throughput-*).
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|t| t.join("bench")))
        .unwrap_or_else(|| "target/bench".into());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bench: cannot create {}: {e}", dir.display());
        return;
    }
    for name in [format!("throughput-{unix}.json"), "latest.json".to_string()] {
        let path = dir.join(name);
        match std::fs::write(&path, &json) {
            Ok(()) => eprintln!("bench: wrote {}", path.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
        }
    }
}
