//! The sink process: a grpcio server for `SubmitStream` that only counts messages and
//! bytes, and the parent's handle on it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use grpcio::{
    ClientStreamingSink, EnvBuilder, Environment, RequestStream, RpcContext, RpcStatus,
    ServerBuilder, ServerCredentials, ServiceBuilder,
};

use crate::procfs::cpu_secs;
use crate::protocol::SINK_METHOD;

#[derive(Default)]
struct SinkCounts {
    messages: AtomicU64,
    bytes: AtomicU64,
    ok_streams: AtomicU64,
}

pub fn sink_main(args: &[String]) {
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
pub struct SinkProcess {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pub gosight_port: u16,
    pub answering_port: u16,
}

/// What the sink has counted so far.
#[derive(Clone, Copy, Default)]
pub struct SinkSnapshot {
    pub messages: u64,
    pub bytes: u64,
    pub ok_streams: u64,
    pub cpu: f64,
}

impl SinkProcess {
    pub fn spawn(port: u16) -> SinkProcess {
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

    pub fn snapshot(&mut self) -> SinkSnapshot {
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
