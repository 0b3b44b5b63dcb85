use logsender::{Batching, Config, Level, LogEntry, LogPayload, LogSender};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sender = LogSender::new(Config::builder("127.0.0.1:50051").plaintext().build()?)?;
    let log = sender.entry_sender(Batching::new(LogPayload::from_host("agent-1")))?;
    for i in 0..1000 {
        log.log(LogEntry::new(Level::Info, format!("line {i}")).with_field("n", i.to_string()))?;
    }
    let done = sender.shutdown(Duration::from_secs(10)); // sends the last batch, stops every thread
    println!("{:?}", done.report); // `all_delivered()`, or what was dropped, dead-lettered ...
    Ok(())
}
