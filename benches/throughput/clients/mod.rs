//! The client role (`__client SIZE CLIENT COUNT ADDR`): one cell in its own process, so
//! that its CPU time and peak RSS are its own. Prints one `RESULT` line.
//!
//! Every client runs the same producer loop (`produce`): hand over pre-built items one
//! by one and time each call, while a sampler thread reads an "acknowledged" counter.

mod raw;
mod sender;
mod tonic_client;
mod tonic_otlp;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logsender::{otlp, wire, LogSender};

use crate::matrix::{Client, Size};
use crate::payloads::templates;
use crate::procfs::{cpu_secs, loopback_bytes, proc_status_kb, tcp_bytes};
use crate::roles::{print_result, watchdog};
use crate::stats::pct;

/// Capacity of the producer → sender queue (crossbeam for logsender, tokio mpsc for tonic).
pub const QUEUE_CAP: usize = 1024;

/// How often the sampler thread reads the "acknowledged" counter.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// The one place that reads logsender's "acknowledged" count while a cell runs (the
/// enq→ack sampler): `LogSender::acknowledged`, one atomic load, once per `SAMPLE_EVERY`.
pub fn acknowledged_now(sender: &LogSender) -> u64 {
    sender.acknowledged()
}

pub fn client_main(args: &[String]) {
    let [size, client, n, addr, ..] = args else {
        panic!("usage: __client SIZE CLIENT COUNT ADDR");
    };
    let (size, client) = (Size::parse(size), Client::parse(client));
    let n: usize = n.parse().expect("count");
    watchdog(Duration::from_secs(120));
    let templates = templates(size);
    // Encoded bytes on the client's wire: OTLP's request of one payload (one
    // ResourceLogs), or GoSight's LogPayload.
    let lens: Vec<u64> = templates
        .iter()
        .map(|p| {
            if client.otlp() {
                otlp::encode(&otlp::to_request(p)).expect("encode").len() as u64
            } else {
                wire::encode(p).len() as u64
            }
        })
        .collect();
    let bytes = (0..n).map(|i| lens[i % lens.len()]).sum();
    let lo0 = loopback_bytes();
    let run = match client {
        Client::Baseline => raw::run_baseline(&templates, n, addr),
        Client::EncodeWrite => raw::run_encode_write(&templates, n, addr),
        Client::SendLogs => sender::run_send_logs(&templates, n, addr),
        Client::Workers {
            mode,
            workers,
            gzip,
        } => sender::run_workers(&templates, n, addr, mode, workers, gzip, false),
        Client::Tonic { gzip } => tonic_client::run_tonic(&templates, n, addr, gzip),
        Client::Entries { workers } => sender::run_entries(&templates, n, addr, workers),
        Client::Otlp { workers, gzip } => sender::run_workers(
            &templates,
            n,
            addr,
            logsender::DeliveryMode::AtLeastOnce,
            workers,
            gzip,
            true,
        ),
        Client::TonicOtlp { gzip } => tonic_otlp::run_tonic_otlp(&templates, n, addr, gzip),
    };
    let lo_bytes = loopback_bytes().saturating_sub(lo0);
    CellRun {
        bytes,
        lo_bytes,
        ..run
    }
    .print();
}

/// The measured window: wall clock, this process's CPU time and TCP bytes.
pub struct Window {
    pub start: Instant,
    cpu0: f64,
    tcp0: u64,
    rss_base_kb: u64,
}

/// What a window measured.
pub struct Measured {
    secs: f64,
    cpu: f64,
    tcp_bytes: u64,
    rss_base_kb: u64,
}

impl Window {
    /// Opens the window (after setup: connected, items pre-built).
    pub fn open() -> Window {
        let rss_base_kb = proc_status_kb("VmRSS");
        let (cpu0, tcp0) = (cpu_secs(), tcp_bytes());
        Window {
            start: Instant::now(),
            cpu0,
            tcp0,
            rss_base_kb,
        }
    }

    /// Closes it; call while the client's connection is still open.
    pub fn close(&self) -> Measured {
        Measured {
            secs: self.start.elapsed().as_secs_f64(),
            cpu: cpu_secs() - self.cpu0,
            tcp_bytes: tcp_bytes().saturating_sub(self.tcp0),
            rss_base_kb: self.rss_base_kb,
        }
    }
}

/// Per-payload timings of one cell. Times are nanoseconds since the cell's start.
pub struct Timings {
    /// Duration of the producer's call, per payload.
    enq_ns: Vec<u64>,
    /// Whether the queue had room (the non-blocking try succeeded).
    room: Vec<bool>,
    /// When the call began.
    enq_at: Vec<u64>,
}

/// The producer loop shared by every client: hand over `items` one by one and time each
/// call. `send` returns whether the queue had room (true where there is no queue).
pub fn produce<P>(
    items: impl ExactSizeIterator<Item = P>,
    start: Instant,
    mut send: impl FnMut(P) -> bool,
) -> Timings {
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

/// Polls a monotonic "payloads acknowledged" counter every `SAMPLE_EVERY` and gives the
/// i-th payload the time the counter first exceeded i (attribution in order: without
/// faults, epochs commit in order, and writes complete in order up to the few payloads
/// the workers encode concurrently). Stops at `n` or when `stop` is set.
pub fn spawn_sampler(
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

/// What one client process reports.
pub struct CellRun {
    pub n: usize,
    /// Encoded payload bytes of the cell (set by `client_main`).
    pub bytes: u64,
    /// Bytes on the loopback interface during the cell, whoever sent them.
    pub lo_bytes: u64,
    pub window: Measured,
    pub timings: Timings,
    pub ack_at: Vec<u64>,
    pub acked: u64,
    pub undelivered: u64,
    /// Extra metrics of one kind of client.
    pub extra: Vec<(&'static str, f64)>,
}

impl CellRun {
    pub fn new(n: usize, window: Measured, timings: Timings, ack_at: Vec<u64>) -> CellRun {
        CellRun {
            n,
            bytes: 0,
            lo_bytes: 0,
            window,
            timings,
            ack_at,
            acked: 0,
            undelivered: 0,
            extra: Vec::new(),
        }
    }

    /// A cell that shipped everything on one call: all of it counts, or none (the
    /// call's final status is its only acknowledgement).
    pub fn one_call(
        n: usize,
        window: Measured,
        timings: Timings,
        ack_at: Vec<u64>,
        ok: bool,
    ) -> CellRun {
        CellRun {
            acked: if ok { n as u64 } else { 0 },
            undelivered: if ok { 0 } else { n as u64 },
            ..CellRun::new(n, window, timings, ack_at)
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
        let mut fields: Vec<(&str, f64)> = vec![
            ("n", self.n as f64),
            ("bytes", self.bytes as f64),
            ("wire_bytes", self.window.tcp_bytes as f64),
            ("lo_bytes", self.lo_bytes as f64),
            ("secs", self.window.secs),
            ("cpu", self.window.cpu),
            ("rss_peak_mb", proc_status_kb("VmHWM") as f64 / 1024.0),
            ("rss_base_mb", self.window.rss_base_kb as f64 / 1024.0),
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
        fields.extend(self.extra);
        print_result(&fields);
    }
}

/// Waits (before the measured window) until the sender has a stream.
fn wait_connected(sender: &LogSender) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sender.stats().state != logsender::ConnectionState::Connected {
        assert!(Instant::now() < deadline, "logsender did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }
}
