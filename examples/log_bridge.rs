use logsender::{Batching, Config, LogBridge, LogPayload, LogSender};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
    let _guard = LogBridge::new(Batching::new(LogPayload::from_host("agent-1")))
        .filter_from_env("RUST_LOG") // "info" unless RUST_LOG says otherwise
        .install(sender)?; // the program's logger from here on
    log::info!(user = "ada", attempt = 2; "signed in");
    Ok(()) // dropping the guard delivers the last lines (or says what it could not)
}
