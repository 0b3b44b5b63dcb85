//! The peer a Rust user would otherwise pick: tonic + prost on tokio.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures_util::StreamExt;
use logsender::{wire, LogPayload};

use super::{produce, spawn_sampler, CellRun, Window, QUEUE_CAP};
use crate::payloads::prebuild;
use crate::prost_mirror;
use crate::protocol::PATH;

/// tonic: producer thread (this one) → tokio mpsc (`blocking_send`) → a request stream
/// that tonic encodes with prost on a default multi-thread runtime. One
/// `client_streaming` call for the whole cell, like a tonic-build generated client.
/// `gzip`: `send_compressed(Gzip)`, at tonic's fixed level (`TONIC_GZIP_LEVEL`).
///
/// Against a GoSight server (status OK, no message) `client_streaming` fails with
/// `Internal: Missing response message.` although the server accepted everything, so
/// tonic cells use the sink's second port, which answers an empty `LogResponse`.
pub fn run_tonic(templates: &[LogPayload], n: usize, addr: &str, gzip: bool) -> CellRun {
    let messages: Vec<prost_mirror::LogPayload> =
        templates.iter().map(prost_mirror::from).collect();
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
    let _connection = channel.clone(); // keeps the connection open until the window is measured
    let (tx, rx) = tokio::sync::mpsc::channel::<prost_mirror::LogPayload>(QUEUE_CAP);
    let items = prebuild(&messages, n);
    let taken = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let window = Window::open();
    let t = taken.clone();
    let sampler = spawn_sampler(n, window.start, stop.clone(), move || t.load(Relaxed));
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
            tonic_prost::ProstCodec::<prost_mirror::LogPayload, prost_mirror::LogResponse>::default(
            );
        grpc.client_streaming(
            tonic::Request::new(requests),
            tonic::codegen::http::uri::PathAndQuery::from_static(PATH),
            codec,
        )
        .await
    });
    let timings = produce(items.into_iter(), window.start, |m| match tx.try_send(m) {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
            tx.blocking_send(m).expect("stream closed");
            false
        }
        Err(e) => panic!("mpsc: {e}"),
    });
    drop(tx); // ends the request stream: tonic half-closes
    let result = rt.block_on(call).expect("join");
    let measured = window.close();
    stop.store(true, Relaxed);
    let ack_at = sampler.join().expect("sampler");
    let ok = result.is_ok();
    if let Err(status) = &result {
        eprintln!("tonic: call ended with {status:?}");
    }
    CellRun::one_call(n, measured, timings, ack_at, ok)
}
