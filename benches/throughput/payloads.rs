//! Deterministic, realistic payloads (the same for every client), and the `__costs`
//! diagnostic.

use std::time::{Duration, Instant};

use logsender::{otlp, wire, LogPayload, LogSender};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;

use crate::matrix::Size;
use crate::prost_mirror;

pub fn payload(size: Size, variant: usize) -> LogPayload {
    crate::generate::payload(size.entries(), variant)
}

pub fn templates(size: Size) -> Vec<LogPayload> {
    (0..size.templates()).map(|v| payload(size, v)).collect()
}

/// `n` items cycled from `templates`, built before the measured window.
pub fn prebuild<P: Clone>(templates: &[P], n: usize) -> Vec<P> {
    (0..n)
        .map(|i| templates[i % templates.len()].clone())
        .collect()
}

/// `__costs`: sizes of the payloads and single-thread costs of the steps a medium payload
/// goes through (a diagnostic for reading the matrix; not part of `cargo bench`).
pub fn costs_main() {
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
    let pb: Vec<prost_mirror::LogPayload> = t.iter().map(prost_mirror::from).collect();
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
    // OTLP: the sizes of one payload's request, and what encoding a medium one costs
    // logsender (`to_request` + `encode`) and prost (the peer's decoded copy), and what
    // prost's `encoded_len` alone costs (the peer's 4 MiB check).
    for size in Size::ALL {
        let lens: Vec<usize> = templates(size)
            .iter()
            .map(|p| otlp_bytes(p).len())
            .collect();
        println!(
            "{} on OTLP: {:.1} KB per payload's request on average",
            size.name(),
            lens.iter().sum::<usize>() as f64 / lens.len() as f64 / 1e3,
        );
    }
    let otlp_items = prebuild(&t, N);
    let logsender_otlp = time(&mut || {
        let bytes: usize = otlp_items.iter().map(|p| otlp_bytes(p).len()).sum();
        assert!(bytes > 0);
    });
    let requests: Vec<ExportLogsServiceRequest> = t
        .iter()
        .map(|p| ExportLogsServiceRequest::decode(otlp_bytes(p).as_slice()).expect("decode"))
        .collect();
    let requests = prebuild(&requests, N);
    let prost_otlp = time(&mut || {
        let bytes: usize = requests.iter().map(|r| r.encode_to_vec().len()).sum();
        assert!(bytes > 0);
    });
    let prost_len = time(&mut || {
        let bytes: usize = requests.iter().map(|r| r.encoded_len()).sum();
        assert!(bytes > 0);
    });
    println!(
        "medium on OTLP, per payload: logsender to_request + encode {}, prost encode {}, \
         prost encoded_len {} (pre-built, cold)",
        per(logsender_otlp),
        per(prost_otlp),
        per(prost_len)
    );
    // The sink's count of a full large request (13 payloads, 4 MiB): its handler's work.
    let large = templates(Size::Large);
    let mut request = Vec::new();
    for p in large.iter().cycle() {
        let bytes = otlp_bytes(p);
        if request.len() + bytes.len() > otlp::MAX_REQUEST_BYTES {
            break;
        }
        request.extend_from_slice(&bytes);
    }
    const WALKS: usize = 100;
    let mut counted = None;
    let walk = time(&mut || {
        for _ in 0..WALKS {
            counted = crate::otlp_sink::count_export(&mut request.as_slice(), request.len());
        }
    });
    let counted = counted.expect("sink walk");
    println!(
        "sink count of a {:.1} MB large request ({} payloads, {} records): {:.0} µs, {:.1} µs per payload",
        request.len() as f64 / 1e6,
        counted.payloads,
        counted.records,
        walk.as_secs_f64() * 1e6 / WALKS as f64,
        walk.as_secs_f64() * 1e6 / WALKS as f64 / counted.payloads as f64,
    );
    // What the enq→ack sampler pays per reading (an idle sender: no stream, no contention).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(1, |a| a.port());
    let config = logsender::Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let reads = time(&mut || {
        let acked: u64 = (0..N)
            .map(|_| crate::clients::acknowledged_now(&sender))
            .sum();
        assert_eq!(acked, 0);
    });
    println!(
        "acknowledged_now (LogSender::acknowledged), idle sender: {:.0} ns",
        reads.as_secs_f64() * 1e9 / N as f64
    );
}

fn otlp_bytes(p: &LogPayload) -> Vec<u8> {
    otlp::encode(&otlp::to_request(p)).expect("otlp::encode")
}
