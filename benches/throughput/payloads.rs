//! Deterministic, realistic payloads (the same for every client), and the `__costs`
//! diagnostic.

use std::time::{Duration, Instant};

use logsender::{wire, LogPayload, LogSender};

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
