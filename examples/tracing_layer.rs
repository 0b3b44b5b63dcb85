use logsender::{Batching, Config, LogPayload, LogSender, TracingLayer};
use tracing_subscriber::layer::SubscriberExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
    let layer =
        TracingLayer::new(Batching::new(LogPayload::from_host("agent-1"))).layer(&sender)?;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer()) // your terminal output, as before
        .with(layer);
    tracing::subscriber::set_global_default(subscriber)?;
    let span = tracing::info_span!("request", id = 7);
    span.in_scope(|| tracing::info!(user = "ada", "signed in")); // fields: user, id, spans
    sender.shutdown(std::time::Duration::from_secs(10)); // delivers the last events
    Ok(())
}
