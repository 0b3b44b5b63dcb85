use logsender::{Batching, Config, LogPayload, LogSender, TracingLayer};
use tracing_subscriber::{filter::LevelFilter, Layer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
    let terminal = tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO);
    let _guard = TracingLayer::new(Batching::new(LogPayload::from_host("agent-1")))
        .filter_from_env("RUST_LOG") // "info" unless RUST_LOG says otherwise
        .install_with(sender, terminal)?; // the program's subscriber, with your output
    let span = tracing::info_span!("request", id = 7);
    span.in_scope(|| tracing::info!(user = "ada", "signed in")); // fields: user, id, spans
    Ok(()) // dropping the guard delivers the last events (or says what it could not)
}
