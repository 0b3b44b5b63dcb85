//! A byte-counting TCP proxy on 127.0.0.1: what crosses it is what a collector on
//! another machine would receive on the wire. It also reads the HTTP/2 frames going to
//! the server and counts the gRPC messages in them by their compressed flag.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A proxy forwarding `127.0.0.1:port` to a target, counting the bytes that go from
/// the client to the server.
pub struct Proxy {
    port: u16,
    upstream: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

/// What went from clients to the server.
#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    compressed: AtomicU64,
    plain: AtomicU64,
}

impl Proxy {
    /// Starts a proxy to `target` (`127.0.0.1:port`).
    pub fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let upstream = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (upstream.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        pipe(&client, &server, Some(count.clone()));
                        pipe(&server, &client, None);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            upstream,
            stop,
        }
    }

    /// `127.0.0.1:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Bytes that went from clients to the server so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream.bytes.load(Ordering::SeqCst)
    }

    /// gRPC messages sent to the server so far with the compressed flag set, and without.
    pub fn messages(&self) -> (u64, u64) {
        (
            self.upstream.compressed.load(Ordering::SeqCst),
            self.upstream.plain.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread until either side closes; with `count`, counts
/// the bytes and the gRPC messages in them.
fn pipe(from: &TcpStream, to: &TcpStream, count: Option<Arc<Counts>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = Frames::default();
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(c) = &count {
                        c.bytes.fetch_add(n as u64, Ordering::SeqCst);
                        frames.feed(&buf[..n], c);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A minimal reader of the client side of an HTTP/2 connection: skips the preface,
/// splits frames, and reassembles each stream's DATA into gRPC messages (a flag byte,
/// a 4-byte length, the message).
#[derive(Default)]
struct Frames {
    input: Vec<u8>,
    preface_done: bool,
    streams: std::collections::HashMap<u32, Vec<u8>>,
}

impl Frames {
    fn feed(&mut self, bytes: &[u8], counts: &Counts) {
        self.input.extend_from_slice(bytes);
        if !self.preface_done {
            const PREFACE: usize = 24;
            if self.input.len() < PREFACE {
                return;
            }
            self.input.drain(..PREFACE);
            self.preface_done = true;
        }
        while self.input.len() >= 9 {
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if self.input.len() < 9 + len {
                return;
            }
            let (kind, flags) = (self.input[3], self.input[4]);
            let stream = u32::from_be_bytes([
                self.input[5] & 0x7f,
                self.input[6],
                self.input[7],
                self.input[8],
            ]);
            let frame: Vec<u8> = self.input.drain(..9 + len).skip(9).collect();
            if kind != 0 {
                continue;
            }
            // DATA, possibly padded.
            let data = if flags & 0x8 != 0 && !frame.is_empty() {
                let pad = usize::from(frame[0]);
                &frame[1..frame.len().saturating_sub(pad).max(1)]
            } else {
                &frame[..]
            };
            let pending = self.streams.entry(stream).or_default();
            pending.extend_from_slice(data);
            while pending.len() >= 5 {
                let size = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]);
                let size = size as usize;
                if pending.len() < 5 + size {
                    break;
                }
                if pending[0] == 1 {
                    counts.compressed.fetch_add(1, Ordering::SeqCst);
                } else {
                    counts.plain.fetch_add(1, Ordering::SeqCst);
                }
                pending.drain(..5 + size);
            }
        }
    }
}
