//! Many producer threads feed a bounded crossbeam channel drained by a worker pool that
//! shares one stream. With no fault, every payload must reach the sink exactly once and
//! unaltered, and `close` must hand nothing back.

mod support;

use std::time::Duration;

use logsender::{DeliveryMode, LogPayload, LogSender};
use support::helpers::{
    assert_close_returns_nothing, assert_connects, assert_exactly_once, assert_no_background_panic,
    watch_panics,
};
use support::sink::Sink;
use support::{fast_config, payload, sender_with_pool};

const PRODUCERS: usize = 8;
const WORKERS: usize = 4;
const BOUND: Duration = Duration::from_secs(30);

fn run(mode: DeliveryMode, per_producer: usize) {
    watch_panics();
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .delivery(mode)
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 256, WORKERS);

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut sent = Vec::with_capacity(per_producer);
                for seq in 0..per_producer {
                    let p = payload(producer, seq);
                    tx.send(p.clone()).expect("queue payload");
                    sent.push(p);
                }
                sent
            })
        })
        .collect();
    drop(tx);
    let mut sent = Vec::with_capacity(PRODUCERS * per_producer);
    for h in producers {
        sent.extend(h.join().expect("producer panicked"));
    }
    assert_eq!(sent.len(), PRODUCERS * per_producer);

    assert_close_returns_nothing(sender, BOUND + Duration::from_secs(5));
    if mode == DeliveryMode::AtMostOnce {
        // A completed write is all AtMostOnce promises; give the sink a moment to read.
        sink.wait_for(sent.len(), Duration::from_secs(10));
    }
    assert_exactly_once(&sent, &sink.received());
    assert_eq!(sink.bad_payloads(), 0);
    assert_eq!(sink.calls().failed, 0);
    assert_no_background_panic();
}

#[test]
fn eight_producers_four_workers_at_least_once() {
    run(DeliveryMode::AtLeastOnce, 2_000);
}

#[test]
fn eight_producers_four_workers_at_most_once() {
    run(DeliveryMode::AtMostOnce, 1_000);
}

/// Half the producers go through the pool, half call `send_logs` themselves, all at
/// once on the same stream (the Go original raced here).
#[test]
fn pool_and_send_logs_share_the_stream() {
    watch_panics();
    let per_producer = 1_000;
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    assert_connects(&sender, Duration::from_secs(10));
    let (tx, rx) = crossbeam_channel::bounded::<LogPayload>(256);
    sender.start_worker_pool(rx, WORKERS).unwrap();

    let sent: Vec<LogPayload> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let tx = tx.clone();
                let sender = &sender;
                scope.spawn(move || {
                    let mut sent = Vec::with_capacity(per_producer);
                    for seq in 0..per_producer {
                        let p = payload(producer, seq);
                        if producer % 2 == 0 {
                            tx.send(p.clone()).expect("queue payload");
                        } else {
                            sender
                                .send_logs(&p)
                                .unwrap_or_else(|e| panic!("send_logs {}: {e}", p.host_id));
                        }
                        sent.push(p);
                    }
                    sent
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("producer panicked"))
            .collect()
    });
    drop(tx);

    assert_close_returns_nothing(sender, BOUND + Duration::from_secs(5));
    assert_exactly_once(&sent, &sink.received());
    assert_eq!(sink.bad_payloads(), 0);
    assert_no_background_panic();
}
