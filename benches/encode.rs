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
//! And the same payloads on the OTLP wire (an `ExportLogsServiceRequest` of one
//! `ResourceLogs`; more bytes than GoSight's, so compare ns, not MB/s, with `a`):
//!
//! - `d/otlp::encode_payload`: the hand-written encoder, `otlp::encode_payload(&p,
//!   otlp::MAX_REQUEST_BYTES)` (every payload here fits: one record), then `p` is dropped;
//! - `e/otlp-pb-by-ref`: `otlp::encode(&otlp::to_request(&p))` (clones into the
//!   generated messages), then the messages and `p` are dropped.
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

use std::hint::black_box;
use std::time::{Duration, Instant};

use logsender::wire::{self, pb};
use logsender::{otlp, LogPayload};
use protobuf::Message;

#[path = "common/generate.rs"]
mod generate;
#[path = "common/rng.rs"]
mod rng;

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
    OtlpHand,
    OtlpByRef,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::Hand,
        Variant::ByValue,
        Variant::ByRef,
        Variant::OtlpHand,
        Variant::OtlpByRef,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Hand => "a/wire::encode",
            Variant::ByValue => "b/pb-by-value",
            Variant::ByRef => "c/pb-by-ref",
            Variant::OtlpHand => "d/otlp::encode_payload",
            Variant::OtlpByRef => "e/otlp-pb-by-ref",
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
            Variant::OtlpHand => {
                for p in items {
                    let b = otlp::encode_payload(&p, otlp::MAX_REQUEST_BYTES).expect("fits");
                    bytes += b.len();
                    black_box(b);
                    drop(p);
                }
            }
            Variant::OtlpByRef => {
                for p in items {
                    let b = otlp::encode(&otlp::to_request(&p)).expect("encode");
                    bytes += b.len();
                    black_box(b);
                    drop(p);
                }
            }
        }
        (t0.elapsed(), bytes)
    }
}

fn payload(size: Size, variant: usize) -> LogPayload {
    generate::payload(size.entries(), variant)
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
            let otlp_hand = otlp::encode_payload(t, otlp::MAX_REQUEST_BYTES).unwrap();
            let otlp_pb = otlp::encode(&otlp::to_request(t)).unwrap();
            assert!(otlp_hand == otlp_pb, "OTLP encoders disagree");
        }
        let n = size.count();
        let mut ns: [Vec<f64>; 5] = Default::default();
        let mut mbs: [Vec<f64>; 5] = Default::default();
        let mut encoded = [0; 5];
        for rep in 0..=reps {
            for k in 0..Variant::ALL.len() {
                let i = (k + rep) % Variant::ALL.len();
                let items = prebuild(&templates, n);
                let (took, bytes) = Variant::ALL[i].run(items);
                encoded[i] = bytes;
                if rep > 0 {
                    ns[i].push(took.as_nanos() as f64 / n as f64);
                    mbs[i].push(bytes as f64 / took.as_secs_f64() / 1e6);
                }
            }
        }
        let base = summary(ns[0].clone()).0;
        for (i, v) in Variant::ALL.iter().enumerate() {
            let (m, lo, hi) = summary(ns[i].clone());
            let (bm, blo, bhi) = summary(mbs[i].clone());
            let avg = encoded[i] as f64 / n as f64;
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
