//! Encoder benchmark (`cargo bench --bench encode`): `wire::encode` against the
//! rust-protobuf generated encoder, single thread, on the payloads of the throughput bench.
//!
//! Three ways to turn an owned `LogPayload` into the bytes of one message:
//!
//! - `a/wire::encode`: `wire::encode(&p)`, then `p` is dropped;
//! - `b/pb-by-value`: `pb::log::LogPayload::from(p)` (moves the strings and maps), then
//!   `write_to_bytes()`, then the generated message is dropped;
//! - `c/pb-by-ref`: `pb::log::LogPayload::from(&p)` (clones), then `write_to_bytes()`,
//!   then the generated message and `p` are dropped.
//!
//! Each variant consumes clones built before the clock starts, and frees the same strings
//! and maps inside the timed region (its payload, or the message its payload moved into),
//! plus the encoded bytes: what a worker does with a payload it owns. Every rep times each
//! variant once over `count` payloads cycled from the templates; the order of the variants
//! rotates from rep to rep. Prints the median and the interquartile range (p25–p75) of
//! ns per payload and of MB/s (encoded bytes, 10⁶ per second).
//!
//! `LOGSENDER_BENCH_FILTER` (comma-separated substrings, as for the throughput bench)
//! selects sizes: `encode/small`, `encode/medium`, `encode/large`.
//! `LOGSENDER_BENCH_ENCODE_REPS` sets the number of timed reps (default 9).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logsender::wire::{self, pb};
use logsender::{LogEntry, LogMeta, LogPayload, Meta};
use protobuf::Message;

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

    /// Log entries per payload (as in the throughput bench).
    fn entries(self) -> usize {
        match self {
            Size::Small => 10,
            Size::Medium => 100,
            Size::Large => 1000,
        }
    }

    /// Distinct payloads cycled through (as in the throughput bench).
    fn templates(self) -> usize {
        match self {
            Size::Small => 64,
            Size::Medium => 32,
            Size::Large => 8,
        }
    }

    /// Payloads per timed run: about 17 MB encoded, 50–100 ms per variant.
    fn count(self) -> usize {
        match self {
            Size::Small => 6000,
            Size::Medium => 800,
            Size::Large => 80,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Hand,
    ByValue,
    ByRef,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Hand, Variant::ByValue, Variant::ByRef];

    fn name(self) -> &'static str {
        match self {
            Variant::Hand => "a/wire::encode",
            Variant::ByValue => "b/pb-by-value",
            Variant::ByRef => "c/pb-by-ref",
        }
    }

    /// Encodes and frees every payload of `items`; returns the elapsed time and the
    /// encoded bytes.
    fn run(self, items: Vec<LogPayload>) -> (Duration, usize) {
        let mut bytes = 0;
        let t0 = Instant::now();
        match self {
            Variant::Hand => {
                for p in items {
                    let b = wire::encode(&p);
                    bytes += b.len();
                    black_box(b);
                    drop(p);
                }
            }
            Variant::ByValue => {
                for p in items {
                    let m = pb::log::LogPayload::from(p);
                    let b = m.write_to_bytes().expect("encode");
                    bytes += b.len();
                    black_box(b);
                    drop(m);
                }
            }
            Variant::ByRef => {
                for p in items {
                    let b = pb::log::LogPayload::from(&p)
                        .write_to_bytes()
                        .expect("encode");
                    bytes += b.len();
                    black_box(b);
                    drop(p);
                }
            }
        }
        (t0.elapsed(), bytes)
    }
}

// ---------------------------------------------------------------------------------------
// Realistic payloads, deterministic: the generator of benches/throughput.rs.
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

// ---------------------------------------------------------------------------------------
// Measurement.
// ---------------------------------------------------------------------------------------

/// `n` payloads cycled from `templates`, cloned before the clock starts.
fn prebuild(templates: &[LogPayload], n: usize) -> Vec<LogPayload> {
    (0..n)
        .map(|i| templates[i % templates.len()].clone())
        .collect()
}

/// The `q`-quantile of sorted `v`, linearly interpolated.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Median, p25, p75 of `v`.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (quantile(&v, 0.5), quantile(&v, 0.25), quantile(&v, 0.75))
}

fn main() {
    let filter: Vec<String> = std::env::var("LOGSENDER_BENCH_FILTER")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let reps: usize = std::env::var("LOGSENDER_BENCH_ENCODE_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9)
        .max(1);
    let sizes: Vec<Size> = Size::ALL
        .into_iter()
        .filter(|s| {
            let cell = format!("encode/{}", s.name());
            filter.is_empty() || filter.iter().any(|f| cell.contains(f.as_str()))
        })
        .collect();
    if sizes.is_empty() {
        eprintln!("encode bench: LOGSENDER_BENCH_FILTER={filter:?} selects no size");
        return;
    }
    let started = Instant::now();
    eprintln!("encode bench: single thread, 1 warm-up + {reps} timed reps per cell");
    println!("| size | variant | ns/payload median | IQR (p25–p75) | MB/s median | IQR (p25–p75) | × a |");
    println!("|---|---|---:|---|---:|---|---:|");
    for size in sizes {
        let templates: Vec<LogPayload> = (0..size.templates()).map(|v| payload(size, v)).collect();
        // The three produce the same bytes (moved and cloned maps iterate like the
        // original), so the MB/s are comparable.
        for t in &templates {
            let hand = wire::encode(t);
            let by_ref = pb::log::LogPayload::from(t).write_to_bytes().unwrap();
            let by_value = pb::log::LogPayload::from(t.clone())
                .write_to_bytes()
                .unwrap();
            assert!(hand == by_ref && hand == by_value, "encoders disagree");
        }
        let n = size.count();
        let mut ns: [Vec<f64>; 3] = Default::default();
        let mut mbs: [Vec<f64>; 3] = Default::default();
        let mut encoded = 0;
        for rep in 0..=reps {
            for k in 0..Variant::ALL.len() {
                let i = (k + rep) % Variant::ALL.len();
                let items = prebuild(&templates, n);
                let (took, bytes) = Variant::ALL[i].run(items);
                encoded = bytes;
                if rep > 0 {
                    ns[i].push(took.as_nanos() as f64 / n as f64);
                    mbs[i].push(bytes as f64 / took.as_secs_f64() / 1e6);
                }
            }
        }
        let avg = encoded as f64 / n as f64;
        let base = summary(ns[0].clone()).0;
        for (i, v) in Variant::ALL.iter().enumerate() {
            let (m, lo, hi) = summary(ns[i].clone());
            let (bm, blo, bhi) = summary(mbs[i].clone());
            println!(
                "| {} ({:.1} KB) | {} | {m:.0} | {lo:.0}–{hi:.0} | {bm:.0} | {blo:.0}–{bhi:.0} | {:.2} |",
                size.name(),
                avg / 1e3,
                v.name(),
                m / base
            );
        }
    }
    eprintln!("encode bench: {:.1} s", started.elapsed().as_secs_f64());
}
