//! The disk spool with real files and real processes: what a sender accepted while the
//! collector was away outlives it (a shutdown, a SIGKILL), a restart on the same
//! directory delivers it, and the space comes back.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logsender::{
    DropReason, DroppedEvent, Error, EventHandler, LogSender, OverflowPolicy, SpoolEvent, SpoolSync,
};
use support::helpers::{child_args, free_port, temp_path, wait_until};
use support::sink::{Ending, Sink};
use support::{fast_config, id_of, payload, sender_with_pool};

/// Keeps the spool events it hears, and the ids of the payloads dropped.
#[derive(Default)]
struct Events(Mutex<Vec<String>>, Mutex<Vec<(String, DropReason)>>);

impl EventHandler for Events {
    fn on_spool(&self, event: &SpoolEvent) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }

    fn on_dropped(&self, event: DroppedEvent) {
        self.1
            .lock()
            .unwrap()
            .push((id_of(event.payload()), event.reason()));
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A config for `addr` with a spool in `dir` of `spool` bytes (segments of 16 KiB) and
/// room for `memory` payloads in memory.
fn spooled(addr: &str, dir: &Path, memory: usize, spool: u64) -> logsender::Config {
    fast_config(addr)
        .max_buffered_payloads(memory)
        .spool(dir)
        .spool_max_bytes(spool)
        .spool_segment_bytes(16 << 10)
        .build()
        .unwrap()
}

#[test]
fn a_restart_sends_what_a_shutdown_left_in_the_spool_and_gives_the_space_back() {
    let dir = temp_path("spool-restart");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let n = 300;
    {
        // No collector: everything waits, most of it on disk (memory holds 20).
        let config = spooled(&addr, &dir, 20, logsender::DEFAULT_SPOOL_MAX_BYTES);
        // One worker: the spool holds them in intake order (several workers' batches of
        // up to 16 reach it in whichever order they finish encoding).
        let (sender, tx) = sender_with_pool(config, 64, 1);
        for seq in 0..n {
            tx.send(payload(1, seq)).unwrap();
        }
        let d = sender.sync(Duration::from_secs(20)).unwrap();
        assert!(d.durable, "{d:?}");
        assert_eq!(d.spooled, n as u64);
        assert_eq!(d.memory_only, 0);
        let stats = sender.stats();
        assert!(stats.unacked <= 20, "memory bound: {stats:?}");
        assert_eq!(stats.dropped(), 0);
        drop(tx);
        let done = sender.shutdown(Duration::from_millis(300));
        assert!(done.undelivered.is_empty());
        assert_eq!(done.report.left_in_spool, n as u64, "{:?}", done.report);
        assert_eq!(done.report.entries_left_in_spool, 3 * n as u64);
        assert!(!done.report.all_delivered());
    }
    assert!(dir_bytes(&dir) > 0);
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let events = Arc::new(Events::default());
    let config = fast_config(&addr)
        .max_buffered_payloads(20)
        .spool(&dir)
        .event_handler(events.clone())
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let report = sender.flush(Duration::from_secs(30));
    assert!(report.all_delivered(), "{report:?}");
    let stats = sender.stats();
    assert_eq!(stats.replayed, n as u64);
    assert_eq!(stats.spool_corrupt, 0);
    let got: HashSet<String> = sink.ok_ids().into_iter().collect();
    for seq in 0..n {
        assert!(got.contains(&id_of(&payload(1, seq))), "{seq} missing");
    }
    // Oldest first: the sink saw them in the order they were sent.
    let order: Vec<String> = sink.received().iter().map(id_of).collect();
    let first: Vec<String> = (0..5).map(|s| id_of(&payload(1, s))).collect();
    assert_eq!(&order[..5], &first[..], "oldest first");
    assert!(events.0.lock().unwrap()[0].starts_with("Replaying { payloads: 300"));
    let done = sender.shutdown(Duration::from_secs(5));
    assert!(done.report.all_delivered(), "{:?}", done.report);
    // Back to the empty spool's size: the lock file, empty.
    assert_eq!(
        dir_bytes(&dir),
        0,
        "{:?}",
        std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_sender_on_the_same_directory_is_refused() {
    let dir = temp_path("spool-lock");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = || fast_config(&addr).spool(&dir).build().unwrap();
    let first = LogSender::new(config()).unwrap();
    assert!(matches!(
        LogSender::new(config()),
        Err(Error::SpoolLocked { .. })
    ));
    drop(first);
    // Released with the first.
    let again = LogSender::new(config()).unwrap();
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_most_once_with_a_spool_is_refused() {
    let r = fast_config("127.0.0.1:1")
        .delivery(logsender::DeliveryMode::AtMostOnce)
        .spool(temp_path("amo"))
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig { field: "spool", .. })),
        "{r:?}"
    );
}

const CHILD: &str = "LOGSENDER_SPOOL_CHILD";

/// The child: ships numbered payloads into the spool (the collector is away) and, after
/// each `sync` that says durable, prints how many are. Killed by the parent.
#[test]
#[ignore = "entry point of the child process"]
fn spool_child() {
    let Some((mode, addr)) = child_args(CHILD) else {
        return;
    };
    let (producer, dir) = mode.split_once(':').unwrap();
    let producer: usize = producer.parse().unwrap();
    let config = fast_config(&addr)
        .max_buffered_payloads(50)
        .spool(dir)
        .spool_sync(SpoolSync::Os)
        .spool_segment_bytes(64 << 10)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 256, 2);
    let mut seq = 0;
    loop {
        for _ in 0..40 {
            tx.send(payload(producer, seq)).unwrap();
            seq += 1;
        }
        let d = sender.sync(Duration::from_secs(10)).unwrap();
        if d.durable {
            println!("DURABLE n={seq}");
        }
    }
}

#[test]
fn a_killed_process_loses_nothing_it_reported_durable() {
    let dir = temp_path("spool-kill");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut durable = Vec::new();
    let rounds = 5;
    for producer in 0..rounds {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "spool_child",
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{producer}:{} {addr}", dir.display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Killed at a different point each time (after 1 to 5 durable reports).
        let want = 1 + producer % 5;
        let mut seen = 0;
        let mut n = 0;
        let started = Instant::now();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix("DURABLE n=") {
                n = v.parse().unwrap();
                seen += 1;
                if seen >= want {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child too slow"
            );
        }
        // SIGKILL: no goodbye, no shutdown.
        child.kill().unwrap();
        let _ = child.wait();
        assert!(n > 0, "round {producer}: nothing durable");
        durable.push((producer, n));
    }
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let config = fast_config(&addr).spool(&dir).build().unwrap();
    let sender = LogSender::new(config).unwrap();
    let report = sender.flush(Duration::from_secs(60));
    assert!(report.all_delivered(), "{report:?}");
    let stats = sender.stats();
    let got: Vec<String> = sink.ok_ids();
    let set: HashSet<&String> = got.iter().collect();
    let mut expected = 0;
    for (producer, n) in &durable {
        for seq in 0..*n {
            expected += 1;
            let id = id_of(&payload(*producer, seq));
            assert!(set.contains(&id), "{id} was durable and did not arrive");
        }
    }
    println!(
        "durable {expected}, arrived {} ({} duplicates), replayed {}",
        got.len(),
        got.len() - set.len(),
        stats.replayed
    );
    assert!(stats.replayed >= expected as u64);
    drop(sender);
    assert!(wait_until(Duration::from_secs(5), || dir_bytes(&dir) == 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unmounts the tmpfs it mounted, and removes its mount point.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// A tmpfs of `size` bytes, if this process may mount one (CI runs as root).
    fn mount(size: u64) -> Option<Tmpfs> {
        let point = temp_path("spool-tmpfs");
        std::fs::create_dir_all(&point).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&point)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&point);
            return None;
        }
        Some(Tmpfs(point))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_is_reported_shipping_goes_on_and_the_spool_is_used_again() {
    let Some(fs) = Tmpfs::mount(1 << 20) else {
        println!("skipped: cannot mount a tmpfs here (not root?); CI runs it as root");
        return;
    };
    let dir = fs.0.join("spool");
    let filler = fs.0.join("filler");
    // Leave about 100 KiB free.
    std::fs::write(&filler, vec![7u8; 900 << 10]).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let events = Arc::new(Events::default());
    let config = fast_config(&addr)
        .max_buffered_payloads(5_000)
        .spool(&dir)
        .spool_segment_bytes(16 << 10)
        .event_handler(events.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 64, 2);
    let n = 400; // ~400 KiB: more than the disk has room for
    for seq in 0..n {
        tx.send(payload(2, seq)).unwrap();
    }
    let d = sender.sync(Duration::from_secs(20)).unwrap();
    let stats = sender.stats();
    assert!(stats.spool_io_errors > 0, "{stats:?}");
    assert!(!d.durable && d.memory_only > 0, "{d:?}");
    println!("after the disk filled: {d:?}, {stats:?}");
    assert_eq!(d.spooled + d.memory_only, n as u64, "nothing lost: {d:?}");
    assert_eq!(stats.dropped(), 0);
    {
        let ev = events.0.lock().unwrap();
        let io = ev
            .iter()
            .find(|e| e.starts_with("Io"))
            .expect("an Io event");
        assert!(io.contains(&dir.display().to_string()), "{io}");
        assert!(io.contains("StorageFull") || io.contains("space"), "{io}");
    }
    // Room again: the spool takes payloads again once its rest is over.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let before = sender.stats().spooled;
    for seq in n..n + 20 {
        tx.send(payload(2, seq)).unwrap();
    }
    let d = sender.sync(Duration::from_secs(20)).unwrap();
    assert!(d.spooled >= before + 20, "{d:?} (before: {before})");
    // (The event is sent right after the append, maybe after `sync` saw it.)
    assert!(wait_until(Duration::from_secs(5), || events
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("Usable"))));
    // And the collector comes: everything, spooled or held in memory, arrives.
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let report = sender.flush(Duration::from_secs(30));
    assert!(report.all_delivered(), "{report:?}");
    let got: HashSet<String> = sink.ok_ids().into_iter().collect();
    for seq in 0..n + 20 {
        assert!(got.contains(&id_of(&payload(2, seq))), "{seq} missing");
    }
    drop(tx);
    drop(sender);
    drop(fs);
}

/// `flush` with the collector away: what it waited for is outstanding, and of that
/// `left_in_spool` (entries too) counts exactly what the spool holds of it: held in
/// memory too or waiting on disk, but not what is held in memory only (the spool was
/// full), not what came after the flush began, and an earlier run's payloads still on
/// disk after a restart.
#[test]
fn a_flush_reports_exactly_its_payloads_in_the_spool() {
    let dir = temp_path("spool-flush-report");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = |memory: usize, spool: u64| spooled(&addr, &dir, memory, spool);
    let n = 240;
    let late = |tx: &crossbeam_channel::Sender<_>, from: usize| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            for seq in from..from + 30 {
                let _ = tx.send(payload(1, seq));
            }
        })
    };
    // 1. Memory holds 20; the rest waits on disk. Payloads sent while the flush runs
    //    are not its own: they are not counted.
    let (sender, tx) = sender_with_pool(config(20, 1 << 30), 4096, 2);
    for seq in 0..n {
        tx.send(payload(1, seq)).unwrap();
    }
    let d = sender.sync(Duration::from_secs(20)).unwrap();
    assert!(d.durable && d.spooled == n as u64, "{d:?}");
    assert!(sender.stats().unacked <= 20);
    let t = late(&tx, n);
    let report = sender.flush(Duration::from_millis(400));
    t.join().unwrap();
    // (Under a loaded CPU the late ones may come before the flush takes its bounds:
    // then they are its own, and in the spool too.)
    assert!(
        report.outstanding == n as u64 || report.outstanding == n as u64 + 30,
        "{report:?}"
    );
    assert_eq!(report.left_in_spool, report.outstanding, "{report:?}");
    assert_eq!(
        report.entries_left_in_spool,
        3 * report.outstanding,
        "{report:?}"
    );
    assert!(!report.all_delivered());
    drop(tx);
    let done = sender.shutdown(Duration::from_millis(200));
    assert_eq!(
        done.report.left_in_spool,
        n as u64 + 30,
        "{:?}",
        done.report
    );
    assert_eq!(done.report.entries_left_in_spool, 3 * (n as u64 + 30));
    drop(sender);
    // 2. A restart, the collector still away: the earlier run's payloads, on disk, are
    //    what its flush waits for and what it reports left in the spool.
    let old = n as u64 + 30;
    let (sender, tx) = sender_with_pool(config(20, 1 << 30), 4096, 2);
    let report = sender.flush(Duration::from_millis(300));
    assert_eq!(report.outstanding, old, "{report:?}");
    assert_eq!(report.left_in_spool, old, "{report:?}");
    assert_eq!(report.entries_left_in_spool, 3 * old, "{report:?}");
    drop(tx);
    let done = sender.shutdown(Duration::from_millis(200));
    assert_eq!(done.report.left_in_spool, old);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
    // 3. A small spool and room in memory: what the full spool did not take is held in
    //    memory only, outstanding but not in the spool.
    let (sender, tx) = sender_with_pool(config(1000, 64 << 10), 4096, 2);
    for seq in 0..n {
        tx.send(payload(1, seq)).unwrap();
    }
    let d = sender.sync(Duration::from_secs(20)).unwrap();
    assert!(d.memory_only > 0 && d.spooled > 50, "{d:?}");
    assert_eq!(d.spooled + d.memory_only, n as u64, "{d:?}");
    let report = sender.flush(Duration::from_millis(300));
    assert_eq!(report.outstanding, n as u64, "{report:?}");
    assert_eq!(report.left_in_spool, d.spooled, "{report:?}");
    assert_eq!(report.entries_left_in_spool, 3 * d.spooled, "{report:?}");
    drop(tx);
    let done = sender.shutdown(Duration::from_millis(200));
    assert_eq!(done.report.left_in_spool, d.spooled);
    assert_eq!(done.report.handed_back, d.memory_only);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full spool under `DropOldest`: the oldest payloads waiting on disk are evicted (a
/// whole segment at a time), counted and reported as dropped with their payloads, the
/// spool stays within its bound, and everything not dropped arrives once the collector
/// comes, the newest included.
#[test]
fn a_full_spool_under_drop_oldest_evicts_the_oldest_from_disk() {
    let dir = temp_path("spool-drop-oldest");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let events = Arc::new(Events::default());
    let max = 128 << 10;
    let config = fast_config(&addr)
        .max_buffered_payloads(10)
        .overflow(OverflowPolicy::DropOldest)
        .spool(&dir)
        .spool_max_bytes(max)
        .spool_segment_bytes(16 << 10)
        .event_handler(events.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 64, 2);
    let n = 600; // ~600 KiB into a 128 KiB spool
    for seq in 0..n {
        tx.send(payload(3, seq)).unwrap();
        assert!(dir_bytes(&dir) <= max, "over the bound at {seq}");
    }
    let d = sender.sync(Duration::from_secs(20)).unwrap();
    assert!(d.durable, "{d:?}");
    let stats = sender.stats();
    assert!(stats.dropped_oldest > 100, "{stats:?}");
    assert_eq!(stats.entries_dropped, 3 * stats.dropped_oldest);
    assert!(stats.spool_bytes <= max);
    // The handler heard of each, with its payload (read back from disk).
    let dropped: Vec<String> = {
        let ev = events.1.lock().unwrap();
        assert!(ev.iter().all(|(_, r)| *r == DropReason::Oldest));
        ev.iter().map(|(id, _)| id.clone()).collect()
    };
    assert_eq!(dropped.len() as u64, stats.dropped_oldest);
    let unique: HashSet<&String> = dropped.iter().collect();
    assert_eq!(unique.len(), dropped.len(), "a payload dropped twice");
    // The oldest went: none of the last 50 was dropped.
    let newest: HashSet<String> = (n - 50..n).map(|s| id_of(&payload(3, s))).collect();
    assert!(dropped.iter().all(|id| !newest.contains(id)));
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let report = sender.flush(Duration::from_secs(30));
    assert_eq!(report.outstanding, 0, "{report:?}");
    assert_eq!(report.dropped, stats.dropped_oldest, "{report:?}");
    let got: HashSet<String> = sink.ok_ids().into_iter().collect();
    assert_eq!(
        sender.stats().acknowledged + stats.dropped_oldest,
        n as u64,
        "every payload acknowledged or dropped, once"
    );
    let gone: HashSet<&String> = dropped.iter().collect();
    for seq in 0..n {
        let id = id_of(&payload(3, seq));
        assert!(
            got.contains(&id) != gone.contains(&id),
            "{id}: arrived {}, dropped {}",
            got.contains(&id),
            gone.contains(&id)
        );
    }
    drop(tx);
    let done = sender.shutdown(Duration::from_secs(5));
    assert_eq!(done.report.left_in_spool, 0);
    assert_eq!(dir_bytes(&dir), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shutdown_taking_spool` hands back what the spool holds, an earlier run's first,
/// then this run's in order, and leaves the spool empty.
#[test]
fn shutdown_taking_spool_hands_back_everything_oldest_first() {
    let dir = temp_path("spool-take");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = || spooled(&addr, &dir, 20, logsender::DEFAULT_SPOOL_MAX_BYTES);
    {
        let (sender, tx) = sender_with_pool(config(), 256, 2);
        for seq in 0..100 {
            tx.send(payload(4, seq)).unwrap();
        }
        assert!(sender.sync(Duration::from_secs(10)).unwrap().durable);
        drop(tx);
        let done = sender.shutdown(Duration::from_millis(200));
        assert_eq!(done.report.left_in_spool, 100);
    }
    let (sender, tx) = sender_with_pool(config(), 256, 2);
    for seq in 100..250 {
        tx.send(payload(4, seq)).unwrap();
    }
    assert!(sender.sync(Duration::from_secs(10)).unwrap().durable);
    let done = sender.shutdown_taking_spool(Duration::from_millis(200));
    let ids: Vec<String> = done.undelivered.iter().map(id_of).collect();
    // The earlier run's first, in the order it spooled them (its two workers' batches
    // may interleave), as a replay would send them; then this run's, in intake order.
    let mut old = ids[..100].to_vec();
    old.sort_by_key(|id| id[2..].parse::<usize>().unwrap());
    let want: Vec<String> = (0..100).map(|s| id_of(&payload(4, s))).collect();
    assert_eq!(old, want);
    let want: Vec<String> = (100..250).map(|s| id_of(&payload(4, s))).collect();
    assert_eq!(&ids[100..], &want[..]);
    assert_eq!(done.report.handed_back, 250, "{:?}", done.report);
    assert_eq!(done.report.entries_handed_back, 750);
    assert_eq!(done.report.left_in_spool, 0);
    assert_eq!(done.report.entries_left_in_spool, 0);
    drop(tx);
    drop(sender);
    assert_eq!(dir_bytes(&dir), 0);
    let sender = LogSender::new(config()).unwrap();
    assert_eq!(sender.stats().spooled, 0);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spool drained while the sender runs gives its space back at once (its active
/// segment too), not at the next start.
#[test]
fn a_spool_drained_while_running_is_back_to_its_empty_size() {
    let dir = temp_path("spool-drained");
    let sink = Sink::with_ending(Ending::OkNoMessage);
    let config = fast_config(&sink.addr())
        .spool(&dir)
        .spool_segment_bytes(16 << 10)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 256, 2);
    for seq in 0..300 {
        tx.send(payload(5, seq)).unwrap();
    }
    let report = sender.flush(Duration::from_secs(20));
    assert!(report.all_delivered(), "{report:?}");
    assert!(wait_until(Duration::from_secs(5), || dir_bytes(&dir) == 0
        && sender.stats().spool_bytes == 0));
    // And it takes new payloads as before.
    for seq in 300..310 {
        tx.send(payload(5, seq)).unwrap();
    }
    assert!(sender.flush(Duration::from_secs(20)).all_delivered());
    assert_eq!(sink.ok_ids().len(), 310);
    drop(tx);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `flush` waiting while a `shutdown` leaves its payloads in the spool returns at once
/// and says so: left in the spool (payloads and entries), not delivered; with
/// `shutdown_taking_spool`, handed back. The same for an earlier run's payloads.
#[test]
fn a_flush_racing_shutdown_reports_what_stays_in_the_spool() {
    let dir = temp_path("spool-flush-race");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = || spooled(&addr, &dir, 20, logsender::DEFAULT_SPOOL_MAX_BYTES);
    let race = |sender: Arc<LogSender>, take: bool| {
        let flusher = {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let began = Instant::now();
                (sender.flush(Duration::from_secs(20)), began.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let done = if take {
            sender.shutdown_taking_spool(Duration::from_millis(200))
        } else {
            sender.shutdown(Duration::from_millis(200))
        };
        let (report, took) = flusher.join().unwrap();
        assert!(took < Duration::from_secs(5), "the flush waited {took:?}");
        assert!(!report.all_delivered(), "{report:?}");
        assert_eq!(report.outstanding, 0, "{report:?}");
        (report, done)
    };
    // 1. This run's payloads, most of them on disk only.
    let (sender, tx) = sender_with_pool(config(), 256, 2);
    for seq in 0..100 {
        tx.send(payload(6, seq)).unwrap();
    }
    assert!(sender.sync(Duration::from_secs(10)).unwrap().durable);
    drop(tx);
    let (report, done) = race(Arc::new(sender), false);
    assert_eq!(report.left_in_spool, 100, "{report:?}");
    assert_eq!(report.entries_left_in_spool, 300, "{report:?}");
    assert_eq!(report.handed_back, 0, "{report:?}");
    assert_eq!(done.report.left_in_spool, 100);
    // 2. An earlier run's, read back in part (memory holds 20), handed back.
    let (sender, tx) = sender_with_pool(config(), 256, 2);
    assert!(wait_until(Duration::from_secs(5), || sender
        .stats()
        .replayed
        == 20));
    drop(tx);
    let (report, done) = race(Arc::new(sender), true);
    assert_eq!(report.handed_back, 100, "{report:?}");
    assert_eq!(report.entries_handed_back, 300, "{report:?}");
    assert_eq!(report.left_in_spool, 0, "{report:?}");
    assert_eq!(done.undelivered.len(), 100);
    assert_eq!(dir_bytes(&dir), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record this run spooled, damaged on disk while the sender runs, before it was read
/// back: skipped and reported when it is reached, counted lost (not waited for), and
/// every other payload is delivered, those of its segment read back before included.
#[test]
fn a_record_damaged_while_the_sender_runs_is_counted_lost() {
    let dir = temp_path("spool-run-damage");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let events = Arc::new(Events::default());
    let config = fast_config(&addr)
        .max_buffered_payloads(5)
        .spool(&dir)
        .spool_segment_bytes(4096)
        .event_handler(events.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 128, 1);
    let n = 60;
    for seq in 0..n {
        tx.send(payload(7, seq)).unwrap();
    }
    assert!(sender.sync(Duration::from_secs(20)).unwrap().durable);
    // The second segment (the first holds the 5 in memory) is on disk only: flip a byte
    // in the body of its second record.
    let mut segs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let first_len = 36 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let at = first_len + 36 + 10;
    bytes[at] ^= 0xff;
    std::fs::write(&segs[1], &bytes).unwrap();
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let report = sender.flush(Duration::from_secs(20));
    assert_eq!(report.outstanding, 0, "{report:?}");
    assert_eq!(report.lost_in_spool, 1, "{report:?}");
    assert_eq!(report.entries_lost_in_spool, 3, "{report:?}");
    assert_eq!(report.acknowledged, n as u64 - 1, "{report:?}");
    assert!(!report.all_delivered());
    assert!(events
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("Corrupt")));
    assert_eq!(sink.ok_ids().iter().collect::<HashSet<_>>().len(), n - 1);
    drop(tx);
    let done = sender.shutdown(Duration::from_secs(5));
    assert_eq!(done.report.lost_in_spool, 1);
    assert_eq!(done.report.left_in_spool, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spool written on one wire is replayed on the other: its records say which wire's
/// bytes they hold (`LSP1` GoSight, `LSO1` OTLP) and are re-encoded when loaded, so a
/// sender switched between collectors over a backlog loses nothing of it.
#[test]
fn a_spool_written_on_one_wire_is_replayed_on_the_other() {
    use logsender::Wire;
    use support::fast_config_on;
    for (from, to, magic) in [
        (Wire::GoSightStream, Wire::OtlpLogs, b"LSP1"),
        (Wire::OtlpLogs, Wire::GoSightStream, b"LSO1"),
    ] {
        let dir = temp_path("spool-cross-wire");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let n = 120;
        {
            // No collector: everything goes to the spool (memory holds 10).
            let config = fast_config_on(&addr, from)
                .max_buffered_payloads(10)
                .spool(&dir)
                .spool_segment_bytes(16 << 10)
                .build()
                .unwrap();
            let (sender, tx) = sender_with_pool(config, 64, 1);
            for seq in 0..n {
                tx.send(payload(3, seq)).unwrap();
            }
            let d = sender.sync(Duration::from_secs(20)).unwrap();
            assert_eq!(d.spooled, n as u64, "{from:?}: {d:?}");
            drop(tx);
            let done = sender.shutdown(Duration::from_millis(300));
            assert_eq!(done.report.left_in_spool, n as u64, "{:?}", done.report);
        }
        // Every record on disk is tagged with the wire it was written for.
        let mut records = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            records += bytes.windows(4).filter(|w| w == magic).count();
        }
        assert!(records >= n, "{from:?}: {records} records tagged {magic:?}");
        let sink = Sink::start_with(port, Ending::OkNoMessage, None);
        let config = fast_config_on(&addr, to)
            .max_buffered_payloads(10)
            .spool(&dir)
            .build()
            .unwrap();
        let sender = LogSender::new(config).unwrap();
        let report = sender.flush(Duration::from_secs(30));
        assert!(report.all_delivered(), "{from:?} → {to:?}: {report:?}");
        let stats = sender.stats();
        assert_eq!(stats.replayed, n as u64);
        assert_eq!(stats.spool_corrupt, 0);
        assert_eq!(stats.entries_acknowledged, 3 * n as u64);
        // Each arrived whole, on the new wire only.
        sink.assert_spoke(to);
        let got: std::collections::HashMap<String, usize> = sink
            .received()
            .iter()
            .map(|p| (id_of(p), p.logs.len()))
            .collect();
        for seq in 0..n {
            let id = id_of(&payload(3, seq));
            assert_eq!(got.get(&id), Some(&3), "{from:?} → {to:?}: {id}");
        }
        let done = sender.shutdown(Duration::from_secs(5));
        assert!(done.report.all_delivered(), "{:?}", done.report);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
