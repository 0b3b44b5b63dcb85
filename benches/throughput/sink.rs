//! The sink process: a grpcio server for GoSight's `SubmitStream` and OTLP's logs
//! `Export` that only counts messages and bytes (and, for OTLP, records), and the
//! parent's handle on it. The bridges bench (`benches/bridges/`) builds its own sink
//! from the same parts (`bind`, `stream_service`, `serve`, `../common/otlp_sink.rs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use grpcio::{
    ClientStreamingSink, EnvBuilder, Environment, Method, RequestStream, RpcContext, RpcStatus,
    ServerBuilder, ServerCredentials, ServiceBuilder,
};

use crate::otlp_sink::{otlp_service, OTLP_METHOD};
use crate::procfs::cpu_secs;
use crate::protocol::SINK_METHOD;

/// What a sink process has counted, over all its servers.
#[derive(Default)]
pub struct SinkCounts {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub ok_streams: AtomicU64,
    /// Log records in those messages, where the server counts them (OTLP `LogRecord`s;
    /// the bridges bench's GoSight server counts entries, the throughput sink's does
    /// not look inside GoSight messages).
    pub records: AtomicU64,
}

pub fn sink_main(args: &[String]) {
    let port: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    let counts = Arc::new(SinkCounts::default());
    let env = sink_env();
    // Servers live until the process exits (stopping one with an open call would hang).
    // The first serves both wires: GoSight's stream (OK, no message) and OTLP's Export
    // (each ResourceLogs counts as a message, each LogRecord as a record).
    let (_gosight, gosight_port) = bind(&env, port, || {
        vec![
            stream_service(&counts, &SINK_METHOD, false),
            otlp_service(&counts, &OTLP_METHOD),
        ]
    });
    let (_answering, answering_port) = bind(&env, 0, || {
        vec![stream_service(&counts, &SINK_METHOD, true)]
    });
    serve(&counts, &[gosight_port, answering_port], |_| None);
}

/// The sink's grpcio environment: one completion queue.
pub fn sink_env() -> Arc<Environment> {
    Arc::new(EnvBuilder::new().cq_count(1).name_prefix("sink-cq").build())
}

/// Announces `ports` (`SINK-PORTS a b ...`), then answers the parent on stdin until it
/// closes: `COUNT` with the counts and this process's CPU seconds, any other line with
/// `other`'s answer, if it has one. Then exits.
pub fn serve(
    counts: &SinkCounts,
    ports: &[u16],
    mut other: impl FnMut(&str) -> Option<String>,
) -> ! {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    println!("SINK-PORTS {}", ports.join(" "));
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = if line.trim() == "COUNT" {
            Some(format!(
                "COUNT {} {} {} {} {}",
                counts.messages.load(Relaxed),
                counts.bytes.load(Relaxed),
                counts.ok_streams.load(Relaxed),
                cpu_secs(),
                counts.records.load(Relaxed),
            ))
        } else {
            other(line.trim())
        };
        if let Some(answer) = answer {
            println!("{answer}");
            let _ = std::io::stdout().flush();
        }
    }
    std::process::exit(0);
}

/// A server with the services `services` makes, on 127.0.0.1:`port` (0 = any), retried
/// for up to 10 s while the port is still taken.
pub fn bind(
    env: &Arc<Environment>,
    port: u16,
    services: impl Fn() -> Vec<grpcio::Service>,
) -> (grpcio::Server, u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut builder = ServerBuilder::new(env.clone());
        for service in services() {
            builder = builder.register_service(service);
        }
        let mut server = builder.build().expect("build sink server");
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

/// What a sink's request deserializer made of one message.
pub trait Counted: Send + 'static {
    /// The message's encoded bytes.
    fn bytes(&self) -> u64;
    /// Log records in it (0 where the sink does not look inside).
    fn records(&self) -> u64 {
        0
    }
}

/// The throughput sink's requests: just their length.
impl Counted for usize {
    fn bytes(&self) -> u64 {
        *self as u64
    }
}

/// The `SubmitStream` handler: count each message, its bytes and its records, then end
/// the stream. `answer`: end streams with an empty `LogResponse` instead of GoSight's
/// OK-without-message.
pub fn stream_service<R: Counted>(
    counts: &Arc<SinkCounts>,
    method: &Method<R, Vec<u8>>,
    answer: bool,
) -> grpcio::Service {
    let counts = counts.clone();
    ServiceBuilder::new()
        .add_client_streaming_handler(
            method,
            move |ctx: RpcContext<'_>,
                  mut stream: RequestStream<R>,
                  sink: ClientStreamingSink<Vec<u8>>| {
                let counts = counts.clone();
                ctx.spawn(async move {
                    loop {
                        match stream.try_next().await {
                            Ok(Some(message)) => {
                                counts.messages.fetch_add(1, Relaxed);
                                counts.bytes.fetch_add(message.bytes(), Relaxed);
                                counts.records.fetch_add(message.records(), Relaxed);
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
    /// The ports the sink announced, in its order (throughput: GoSight, answering).
    pub ports: Vec<u16>,
}

/// What the sink has counted so far.
#[derive(Clone, Copy, Default)]
pub struct SinkSnapshot {
    pub messages: u64,
    pub bytes: u64,
    pub ok_streams: u64,
    pub cpu: f64,
    /// Records counted (OTLP `LogRecord`s; the bridges sink's GoSight entries too).
    pub records: u64,
}

impl SinkProcess {
    /// The throughput sink (`__sink PORT`): GoSight's ending on `PORT` (0 = any), the
    /// answering one on another.
    pub fn spawn(port: u16) -> SinkProcess {
        SinkProcess::spawn_role(&["__sink".to_string(), port.to_string()])
    }

    /// Runs this binary with `args` as a sink and waits for its `SINK-PORTS` line.
    pub fn spawn_role(args: &[String]) -> SinkProcess {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(args)
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
        let ports = ports
            .split_whitespace()
            .map(|p| p.parse::<u16>().expect("port"))
            .collect();
        SinkProcess {
            child,
            stdin,
            lines,
            ports,
        }
    }

    /// The port of the GoSight-ending server (in the throughput sink, also OTLP's).
    pub fn gosight_port(&self) -> u16 {
        self.ports[0]
    }

    /// The throughput sink's answering server (an empty `LogResponse`, for tonic).
    pub fn answering_port(&self) -> u16 {
        self.ports[1]
    }

    pub fn snapshot(&mut self) -> SinkSnapshot {
        let rest = self.ask("COUNT");
        let v: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        SinkSnapshot {
            messages: v[0] as u64,
            bytes: v[1] as u64,
            ok_streams: v[2] as u64,
            cpu: v[3],
            records: v[4] as u64,
        }
    }

    /// Sends `command` and returns the rest of the first line that starts with it.
    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("sink control");
        self.stdin.flush().expect("sink control");
        let prefix = format!("{command} ");
        loop {
            let line = self.lines.next().expect("sink gone").expect("read sink");
            if let Some(rest) = line.strip_prefix(&prefix) {
                return rest.to_string();
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
