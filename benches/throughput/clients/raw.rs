//! The two reference clients on one raw grpcio call: `baseline` (pre-encoded bytes, one
//! write in flight) and `encode+write` (encode each payload, write with buffer hints).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_executor::block_on;
use futures_util::{SinkExt, TryStreamExt};
use grpcio::{
    CallOption, ChannelBuilder, ClientDuplexReceiver, ClientDuplexSender, EnvBuilder, Environment,
    GrpcSlice, WriteFlags,
};
use logsender::{wire, LogPayload};

use super::{produce, spawn_sampler, CellRun, Window};
use crate::payloads::prebuild;
use crate::protocol::RAW_METHOD;

/// Writes per flush in `encode+write`, as logsender batches (stream.rs `MAX_BATCH`).
const HINT_BATCH: usize = 64;

struct RawCall {
    sink: ClientDuplexSender<GrpcSlice>,
    recv: ClientDuplexReceiver<Vec<u8>>,
    // Keeps the connection open until the window is measured.
    _client: grpcio::Client,
    _env: Arc<Environment>,
}

/// One call on a fresh channel with one completion queue, driven as a duplex call.
fn open(addr: &str, name: &str) -> RawCall {
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix(name).build());
    let channel = ChannelBuilder::new(env.clone()).connect(addr);
    assert!(
        block_on(channel.wait_for_connected(Duration::from_secs(10))),
        "{name}: cannot connect to {addr}"
    );
    let client = grpcio::Client::new(channel);
    let (sink, recv) = client
        .duplex_streaming(&RAW_METHOD, CallOption::default())
        .expect("open call");
    RawCall {
        sink,
        recv,
        _client: client,
        _env: env,
    }
}

impl RawCall {
    /// Half-closes and waits for the final status: true for GoSight's OK.
    fn finish(&mut self, name: &str) -> bool {
        block_on(self.sink.close()).expect("half-close");
        let status = block_on(self.recv.try_next());
        let ok = matches!(status, Ok(None));
        if !ok {
            eprintln!("{name}: call ended with {status:?}");
        }
        ok
    }
}

/// `baseline`: one thread, one call, `block_on(sink.send(..))` per pre-encoded payload.
pub fn run_baseline(templates: &[LogPayload], n: usize, addr: &str) -> CellRun {
    let slices: Vec<GrpcSlice> = templates
        .iter()
        .map(|p| GrpcSlice::from(wire::encode(p)))
        .collect();
    let mut call = open(addr, "base-cq");
    let items = prebuild(&slices, n);
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let window = Window::open();
    let w = written.clone();
    let sampler = spawn_sampler(n, window.start, stop.clone(), move || w.load(Relaxed));
    let timings = produce(items.into_iter(), window.start, |slice| {
        block_on(call.sink.send((slice, WriteFlags::default()))).expect("baseline write");
        written.fetch_add(1, Relaxed);
        true
    });
    let ok = call.finish("baseline");
    let measured = window.close();
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    CellRun::one_call(n, measured, timings, ack_at, ok)
}

/// `encode+write`: the practical limit of one writer. One thread encodes each pre-built
/// payload (`wire::encode`), drops it, and feeds the bytes into one call with
/// `buffer_hint(true)`, except every `HINT_BATCH`th, which is written unhinted and
/// flushed, as logsender writes its batches. "Acknowledged" = flushed.
pub fn run_encode_write(templates: &[LogPayload], n: usize, addr: &str) -> CellRun {
    let mut call = open(addr, "encw-cq");
    let items = prebuild(templates, n);
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let window = Window::open();
    let w = written.clone();
    let sampler = spawn_sampler(n, window.start, stop.clone(), move || w.load(Relaxed));
    let mut i = 0;
    let timings = produce(items.into_iter(), window.start, |payload| {
        let slice = GrpcSlice::from(wire::encode(&payload));
        drop(payload);
        i += 1;
        let last = i % HINT_BATCH == 0 || i == n;
        let flags = WriteFlags::default().buffer_hint(!last);
        block_on(call.sink.feed((slice, flags))).expect("encode+write write");
        if last {
            block_on(call.sink.flush()).expect("encode+write flush");
            written.store(i as u64, Relaxed);
        }
        true
    });
    let ok = call.finish("encode+write");
    let measured = window.close();
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    CellRun::one_call(n, measured, timings, ack_at, ok)
}
