//! logsender's clients: the worker pool behind a crossbeam queue, and the producer
//! calling `send_logs` itself.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use logsender::{
    Batching, Compression, Config, ConfigBuilder, DeliveryMode, LogError, LogPayload, LogSender,
};

use super::{
    acknowledged_now, produce, spawn_sampler, wait_connected, CellRun, Measured, Timings, Window,
    QUEUE_CAP,
};
use crate::matrix::Gzip;
use crate::otlp_wire::otlp_wire;
use crate::payloads::prebuild;

/// Worker cells: producer thread (this one) → bounded crossbeam queue → `workers`
/// workers. The timed call is crossbeam's `try_send` (then `send` when full): the
/// workers' own intake cost shows only in the process's CPU time. `otlp`: the same
/// settings on the OTLP wire (`otlp_wire`: `Wire::OtlpLogs`, 4 exports in flight).
pub fn run_workers(
    templates: &[LogPayload],
    n: usize,
    addr: &str,
    mode: DeliveryMode,
    workers: usize,
    gzip: Gzip,
    otlp: bool,
) -> CellRun {
    let builder = Config::builder(addr).plaintext().delivery(mode);
    let builder = match gzip {
        Gzip::Off => builder.compression(Compression::None),
        Gzip::Default => builder, // the library's own compression and level
        Gzip::Level(level) => builder.compression(Compression::Gzip).gzip_level(level),
    };
    let builder = if otlp { otlp_wire(builder) } else { builder };
    let sender = Arc::new(LogSender::new(builder.build().expect("config")).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAP);
    sender.start_worker_pool(rx, workers).expect("workers");
    let (items, cell) = Cell::open(&sender, templates, n);
    let window = &cell.window;
    let timings = produce(items.into_iter(), window.start, |p| match tx.try_send(p) {
        Ok(()) => true,
        Err(crossbeam_channel::TrySendError::Full(p)) => {
            tx.send(p).expect("queue closed");
            false
        }
        Err(e) => panic!("queue: {e}"),
    });
    let (outstanding, measured, ack_at) = cell.close(&sender);
    drop(tx);
    finish(sender, n, measured, timings, ack_at, outstanding)
}

/// Entry cells: the producer logs each payload's entries one by one through an
/// `EntrySender` whose batches hold as many entries as a payload (so the sink sees the
/// same number of payloads, of about the same size), fed to `workers` workers. The
/// timed call is the payload's worth of `log` calls; the batcher's and the workers'
/// costs show in the process's CPU time.
pub fn run_entries(templates: &[LogPayload], n: usize, addr: &str, workers: usize) -> CellRun {
    let config = Config::builder(addr)
        .plaintext()
        .compression(Compression::None)
        .delivery(DeliveryMode::AtLeastOnce)
        .build()
        .expect("config");
    let max_bytes = config.max_message_size();
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let per_payload = templates[0].logs.len();
    let template = LogPayload {
        logs: Vec::new(),
        ..templates[0].clone()
    };
    let log = sender
        .entry_sender(
            Batching::new(template)
                .max_entries(per_payload)
                .max_bytes(max_bytes)
                .linger(Duration::from_secs(1))
                .workers(workers),
        )
        .expect("entry sender");
    let (items, cell) = Cell::open(&sender, templates, n);
    let window = &cell.window;
    let timings = produce(items.into_iter(), window.start, |p| {
        let mut room = true;
        for entry in p.logs {
            if let Err(LogError::Full(entry)) = log.try_log(entry) {
                room = false;
                log.log(*entry).expect("entry sender open");
            }
        }
        room
    });
    let (outstanding, measured, ack_at) = cell.close(&sender);
    drop(log);
    finish(sender, n, measured, timings, ack_at, outstanding)
}

/// `send_logs`: the producer calls `LogSender::send_logs(&payload)` itself, no workers
/// (at-least-once, uncompressed). The timed call is logsender's own intake: encode,
/// hold, write one payload. A call that fails (no stream for a moment, buffer full) is
/// retried after 100 µs; the time until success counts, and the retries are reported.
pub fn run_send_logs(templates: &[LogPayload], n: usize, addr: &str) -> CellRun {
    let config: ConfigBuilder = Config::builder(addr)
        .plaintext()
        .compression(Compression::None)
        .delivery(DeliveryMode::AtLeastOnce);
    let sender = Arc::new(LogSender::new(config.build().expect("config")).expect("sender"));
    let (items, cell) = Cell::open(&sender, templates, n);
    let window = &cell.window;
    let (mut retries, mut last_error) = (0u64, None);
    let timings = produce(items.iter(), window.start, |p| {
        while let Err(e) = sender.send_logs(p) {
            retries += 1;
            assert!(retries < 1_000_000, "send_logs keeps failing: {e}");
            last_error = Some(e);
            std::thread::sleep(Duration::from_micros(100));
        }
        true
    });
    let (outstanding, measured, ack_at) = cell.close(&sender);
    if let Some(e) = last_error {
        eprintln!("send_logs: {retries} calls failed and were retried (last: {e})");
    }
    let mut run = finish(sender, n, measured, timings, ack_at, outstanding);
    run.extra.push(("send_retries", retries as f64));
    run
}

/// A cell's measured window and its enq→ack sampler.
struct Cell {
    window: Window,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<Vec<u64>>,
}

impl Cell {
    /// Waits for the stream, builds the items, then opens the window and starts the
    /// sampler.
    fn open(
        sender: &Arc<LogSender>,
        templates: &[LogPayload],
        n: usize,
    ) -> (Vec<LogPayload>, Cell) {
        wait_connected(sender);
        let items = prebuild(templates, n);
        let stop = Arc::new(AtomicBool::new(false));
        let window = Window::open();
        let s = sender.clone();
        let sampler = spawn_sampler(n, window.start, stop.clone(), move || acknowledged_now(&s));
        let cell = Cell {
            window,
            stop,
            sampler,
        };
        (items, cell)
    }

    /// Flushes, closes the window and stops the sampler: what is outstanding, what
    /// the window measured, and when each payload was acknowledged.
    fn close(self, sender: &LogSender) -> (u64, Measured, Vec<u64>) {
        let outstanding = sender.flush(Duration::from_secs(60)).outstanding;
        let measured = self.window.close();
        self.stop.store(true, Relaxed);
        let ack_at = self.sampler.join().expect("sampler");
        (outstanding, measured, ack_at)
    }
}

/// Closes the sender (untimed) and reports what it acknowledged.
fn finish(
    sender: Arc<LogSender>,
    n: usize,
    measured: Measured,
    timings: Timings,
    ack_at: Vec<u64>,
    outstanding: u64,
) -> CellRun {
    let acked = sender.stats().acknowledged;
    let sender = Arc::into_inner(sender).expect("sole owner of the sender");
    let undelivered = sender.close().undelivered.len();
    if outstanding > 0 || undelivered > 0 {
        eprintln!("logsender: {outstanding} outstanding after flush, {undelivered} undelivered");
    }
    CellRun {
        acked,
        undelivered: undelivered as u64,
        ..CellRun::new(n, measured, timings, ack_at)
    }
}
