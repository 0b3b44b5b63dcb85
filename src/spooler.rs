//! The spool in motion: workers append what they take in ([`spool_taken`]), the spool
//! thread ([`run`]) releases what left the ledger for good, loads what waits on disk as
//! the memory bounds make room, and syncs at the configured interval; `sync`, `flush`
//! and `shutdown` make it durable ([`sync_now`]).
//!
//! Lock order: the spool lock, then the ledger lock inside it (never the other way
//! round). File syncs run with neither held.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use grpcio::GrpcSlice;
use log::{error, info, warn};
use parking_lot::Mutex;

use crate::config::{OverflowPolicy, SpoolSync, Wire};
use crate::events::{DropReason, SpoolEvent};
use crate::ledger::{Item, OldSettled, Origin};
use crate::model::LogPayload;
use crate::shared::Shared;
use crate::spool::{record::Header, AppendError, Finding, Loaded, RecordId, Spool};
use crate::stats::Counters;

/// The origin source of payloads an earlier run spooled (their `ord` counts them in
/// the order they are read back): a `flush` waits for all of them.
pub(crate) const REPLAY_SOURCE: u32 = u32::MAX;

/// How often the spool thread looks for work when nothing wakes it.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// What intake does with a payload the spool did not take.
pub(crate) enum NotSpooled {
    /// Held in memory only, under the memory bounds and the overflow policy.
    Memory(Item, Option<LogPayload>),
    /// Dropped by the overflow policy (the spool is full): counted already; the caller
    /// reports it.
    Dropped(Item, Option<LogPayload>),
}

/// Appends payloads a worker took in to the spool. Each is then in memory too (the
/// ledger's outbox: there was room and nothing older waits on disk) or waits on disk
/// until the spool thread loads it. Returns those the spool did not take.
pub(crate) fn spool_taken(
    shared: &Shared,
    spool: &Mutex<Spool>,
    items: Vec<(Item, Option<LogPayload>)>,
) -> Vec<NotSpooled> {
    let mut rest = Vec::new();
    let mut findings = Vec::new();
    let mut evicted = Vec::new();
    let mut recovered = false;
    let mut appended = false;
    let to_sync = {
        let mut sp = spool.lock();
        for (mut item, payload) in items {
            let header = header_of(shared, &item);
            let load = shared.ledger.lock().fits(item.len());
            let mut outcome = sp.append(header, item.bytes.as_slice(), load, &mut findings);
            if shared.config.overflow == OverflowPolicy::DropOldest {
                // Full: the oldest segment waiting on disk goes, while one can.
                while matches!(outcome, Err(AppendError::Full)) && sp.could_hold(item.len()) {
                    let gone = sp.evict_oldest(&mut findings);
                    if gone.is_empty() {
                        break;
                    }
                    count_evicted(shared, &gone);
                    evicted.extend(gone);
                    let load = shared.ledger.lock().fits(item.len());
                    outcome = sp.append(header, item.bytes.as_slice(), load, &mut findings);
                }
            }
            match outcome {
                Ok((id, loaded)) => {
                    appended = true;
                    item.spooled = Some(id);
                    let mut ledger = shared.ledger.lock();
                    ledger.spooled(item.origin);
                    if loaded {
                        ledger.admit_spooled(item);
                    } else {
                        // It waits on disk, still reserved (a `flush` waits for it), its
                        // memory freed here.
                        ledger.on_disk_only(item.origin);
                    }
                }
                Err(AppendError::Full) if shared.config.overflow == OverflowPolicy::DropNewest => {
                    let mut ledger = shared.ledger.lock();
                    shared.count_dropped(DropReason::Newest, item.entries);
                    ledger.unreserve(item.origin);
                    rest.push(NotSpooled::Dropped(item, payload));
                }
                Err(e) => {
                    if let AppendError::Io(f) = e {
                        findings.push(f);
                    }
                    // Still counted as not through the spool until intake has
                    // admitted it (see `intake`), so that `sync` cannot miss it.
                    rest.push(NotSpooled::Memory(item, payload));
                }
            }
        }
        recovered = recovered || sp.take_recovered();
        settle_lost(shared, &mut sp);
        publish(shared, &sp);
        appended && shared.spool_sync() == Some(SpoolSync::EveryAppend)
    };
    if to_sync {
        sync_now(shared, spool);
    }
    if recovered {
        let path = spool.lock().dir().to_path_buf();
        info!("the spool in {} is used again", path.display());
        shared.handler(|h| h.on_spool(&SpoolEvent::Usable { path }));
    }
    report(shared, findings);
    shared.ledger_changed.notify_all();
    for l in evicted {
        shared.report_dropped(
            decode_record(wire_of(&l.header), &l.body),
            DropReason::Oldest,
        );
    }
    rest
}

/// Counts records `DropOldest` evicted from the spool as dropped, under the ledger lock
/// that lets them go (a `flush` never sees one gone and not counted): this run's stop
/// being outstanding, an earlier run's leave the count of those waiting on disk.
fn count_evicted(shared: &Shared, evicted: &[Loaded]) {
    let mut ledger = shared.ledger.lock();
    for l in evicted {
        shared.count_dropped(DropReason::Oldest, l.header.entries);
        if l.replayed {
            Counters::sub(&shared.counters.spool_unloaded_old, 1);
        } else {
            ledger.unreserve(Origin {
                source: l.header.source,
                ord: l.header.ord,
            });
        }
    }
}

/// Appends a `send_logs` payload: accepted then, in the outbox for the writer
/// (`Ok(true)`) or waiting on disk (`Ok(false)`). `Err` gives the item back: the spool
/// did not take it.
pub(crate) fn spool_direct(
    shared: &Shared,
    spool: &Mutex<Spool>,
    mut item: Item,
) -> Result<bool, Item> {
    let header = header_of(shared, &item);
    let mut findings = Vec::new();
    let outcome = {
        let mut sp = spool.lock();
        let mut ledger = shared.ledger.lock();
        let load = ledger.fits(item.len()) && !ledger.is_closing();
        let outcome = match sp.append(header, item.bytes.as_slice(), load, &mut findings) {
            Ok((id, loaded)) => {
                item.spooled = Some(id);
                // Accepted: in the outbox (the writer writes it) or waiting on disk,
                // reserved for `flush` either way.
                ledger.reserve(item.origin, item.entries);
                ledger.spooled(item.origin);
                if loaded {
                    ledger.admit_spooled(item);
                } else {
                    ledger.on_disk_only(item.origin);
                }
                Ok(loaded)
            }
            Err(AppendError::Io(f)) => {
                findings.push(f);
                Err(item)
            }
            Err(_) => Err(item),
        };
        drop(ledger);
        publish(shared, &sp);
        outcome
    };
    report(shared, findings);
    outcome
}

/// The spool record header of a payload (its origin and sequence, for this run).
fn header_of(shared: &Shared, item: &Item) -> Header {
    Header {
        otlp: shared.config.wire == Wire::OtlpLogs,
        len: u32::try_from(item.len()).unwrap_or(u32::MAX),
        entries: item.entries,
        source: item.origin.source,
        ord: item.origin.ord,
        seq: item.seq,
    }
}

/// Sets the spool's gauges in the counters.
fn publish(shared: &Shared, sp: &Spool) {
    let c = sp.counts();
    Counters::set(&shared.counters.spool_bytes, c.bytes);
    Counters::set(&shared.counters.spooled, c.live);
}

/// Counts and reports what was found wrong with the spool.
pub(crate) fn report(shared: &Shared, findings: Vec<Finding>) {
    for f in findings {
        match f {
            Finding::Damage { path, offset, len } => {
                warn!(
                    "spool: skipped {len} damaged bytes at offset {offset} of {}",
                    path.display()
                );
                Counters::add(&shared.counters.spool_corrupt, 1);
                shared.handler(|h| h.on_spool(&SpoolEvent::Corrupt { path, offset, len }));
            }
            Finding::Io { path, error } => {
                error!("spool: {}: {error}", path.display());
                Counters::add(&shared.counters.spool_io_errors, 1);
                let event = SpoolEvent::Io {
                    path,
                    kind: error.kind(),
                    error: error.to_string(),
                };
                shared.handler(|h| h.on_spool(&event));
            }
        }
    }
}

/// The spool thread: until `stop` disconnects, release, load, sync at the interval;
/// then once more (release what the last commits acknowledged).
pub(crate) fn run(shared: &Shared, spool: &Mutex<Spool>, stop: &Receiver<()>) {
    let interval = match shared.spool_sync() {
        Some(SpoolSync::Interval(t)) => Some(t),
        _ => None,
    };
    let mut next_sync = interval.map(crate::clock::deadline_in);
    let mut released = Vec::new();
    let mut replay_ord = 0u64;
    loop {
        step(shared, spool, &mut released, &mut replay_ord);
        let now = Instant::now();
        if let (Some(t), Some(every)) = (next_sync, interval) {
            if now >= t {
                if spool.lock().dirty() {
                    let _ = sync_now(shared, spool);
                }
                next_sync = Some(crate::clock::after(now, every));
            }
        }
        let wait = next_sync.map_or(LOOK_EVERY, |t| {
            t.saturating_duration_since(now).min(LOOK_EVERY)
        });
        {
            let mut ledger = shared.ledger.lock();
            if !ledger.has_released() {
                shared.ledger_changed.wait_for(&mut ledger, wait);
            }
        }
        if matches!(
            stop.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Disconnected)
        ) {
            step(shared, spool, &mut released, &mut replay_ord);
            return;
        }
    }
}

/// Releases what left the ledger for good, then loads what waits on disk while the
/// memory bounds have room.
fn step(
    shared: &Shared,
    spool: &Mutex<Spool>,
    released: &mut Vec<(RecordId, u32)>,
    replay_ord: &mut u64,
) {
    shared.ledger.lock().take_released(released);
    let mut findings = Vec::new();
    let mut loaded_any = false;
    {
        let mut sp = spool.lock();
        if !released.is_empty() {
            sp.release(released, &mut findings);
        }
        while sp.backlog() > 0 {
            let fits = |len: usize| shared.ledger.lock().fits(len);
            let Some(l) = sp.load_next(fits, &mut findings) else {
                break;
            };
            let origin = if l.replayed {
                *replay_ord += 1;
                Origin {
                    source: REPLAY_SOURCE,
                    ord: *replay_ord - 1,
                }
            } else {
                Origin {
                    source: l.header.source,
                    ord: l.header.ord,
                }
            };
            let item = Item {
                seq: if l.replayed {
                    shared.next_seq()
                } else {
                    l.header.seq
                },
                origin,
                bytes: GrpcSlice::from(adopt(shared, &l.header, l.body)),
                entries: l.header.entries,
                written_before: l.replayed,
                strikes: 0,
                spooled: Some(l.id),
            };
            shared.ledger.lock().admit_spooled(item);
            if l.replayed {
                // Lowered after the ledger has it: a `flush` reading this first, then
                // the ledger, counts it at least once.
                Counters::add(&shared.counters.replayed, 1);
                Counters::sub(&shared.counters.spool_unloaded_old, 1);
            }
            loaded_any = true;
        }
        // Records that can no longer be read (their segment was removed or cut short
        // meanwhile) are gone without a load: `flush` does not wait for them.
        settle_lost(shared, &mut sp);
        publish(shared, &sp);
    }
    report(shared, findings);
    if loaded_any {
        shared.wake_writer();
    }
}

/// Syncs everything appended so far to disk (files, then the directory). Returns
/// whether that is done: false if a sync failed, this one or any before it (after a
/// failed `fdatasync` the kernel may have dropped what it could not write, so what was
/// appended before it cannot be known to be on disk: no later sync says it is). A
/// failure is reported, and what it was to sync is tried again by the next sync.
pub(crate) fn sync_now(shared: &Shared, spool: &Mutex<Spool>) -> bool {
    // One sync at a time: one that finds nothing left to sync returns only after the
    // sync that took the files has finished (and put them back if it failed).
    let _one = shared.spool_syncing.lock();
    let (to_sync, dir) = {
        let mut sp = spool.lock();
        (sp.take_unsynced(), sp.dir().to_path_buf())
    };
    if !to_sync.is_empty() {
        crate::hooks::pause(crate::hooks::Point::WhileSpoolSyncs);
        if let Err(error) = to_sync.run() {
            spool.lock().unsynced_again(to_sync);
            report(shared, vec![Finding::Io { path: dir, error }]);
        }
    }
    !spool.lock().sync_failed()
}

/// For `shutdown`: what is in the spool stays there, for the next sender on its
/// directory, synced. Returns what `held` holds in memory only (decoded, oldest first;
/// handed back), and what stays in the spool (payloads, entries). An earlier run's
/// payloads never read back are recorded as left for a `flush` racing this (before the
/// count of those on disk is lowered).
pub(crate) fn leave_all(
    shared: &Shared,
    spool: &Mutex<Spool>,
    held: Vec<Item>,
) -> (Vec<LogPayload>, (u64, u64)) {
    let (spooled, memory): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|item| item.spooled.is_some());
    let _ = sync_now(shared, spool);
    let left = {
        let sp = spool.lock();
        let c = sp.counts();
        shared.ledger.lock().settle_old(OldSettled {
            left: (c.unloaded_old, c.unloaded_old_entries),
            handed_back: (0, 0),
        });
        Counters::set(&shared.counters.spool_unloaded_old, 0);
        (
            (spooled.len() as u64).saturating_add(sp.backlog()),
            spooled
                .iter()
                .map(|i| u64::from(i.entries))
                .sum::<u64>()
                .saturating_add(sp.backlog_entries()),
        )
    };
    (
        memory
            .iter()
            .filter_map(|i| shared.decode_item(i))
            .collect(),
        left,
    )
}

/// For [`LogSender::shutdown_taking_spool`](crate::LogSender::shutdown_taking_spool):
/// every payload `held` (what the ledger gave back) and every one waiting on disk
/// (this run's are `on_disk`), decoded, oldest first (an earlier run's, then this run's
/// in intake order), and released from the spool, which is then synced. What cannot be
/// read back or decoded is counted lost (and, for a racing `flush`, not handed back).
/// Also returns what is still live in the spool (payloads, entries).
pub(crate) fn take_all(
    shared: &Shared,
    spool: &Mutex<Spool>,
    held: Vec<Item>,
    on_disk: Vec<(Origin, u32)>,
) -> (Vec<LogPayload>, (u64, u64)) {
    let mut findings = Vec::new();
    let mut release: Vec<(RecordId, u32)> = held
        .iter()
        .filter_map(|i| i.spooled.map(|id| (id, i.entries)))
        .collect();
    // (sort key: an earlier run's first, then intake order), this run's origin, entries,
    // (the body's wire, body)
    type Taken = ((u8, u64), Option<Origin>, u32, (Wire, Vec<u8>));
    let mut all: Vec<Taken> = held
        .into_iter()
        .map(|i| {
            let replayed = i.origin.source == REPLAY_SOURCE;
            let origin = (!replayed).then_some(i.origin);
            let key = (u8::from(!replayed) * 2, i.seq);
            (
                key,
                origin,
                i.entries,
                (shared.config.wire, i.bytes.as_slice().to_vec()),
            )
        })
        .collect();
    let mut waiting: BTreeMap<Origin, u32> = on_disk.into_iter().collect();
    let mut old = (0u64, 0u64);
    let left = {
        let mut sp = spool.lock();
        while let Some(l) = sp.load_next(|_| true, &mut findings) {
            release.push((l.id, l.header.entries));
            let entries = u64::from(l.header.entries);
            if l.replayed {
                old = (old.0 + 1, old.1.saturating_add(entries));
                all.push((
                    (1, old.0),
                    None,
                    l.header.entries,
                    (wire_of(&l.header), l.body),
                ));
            } else {
                let origin = Origin {
                    source: l.header.source,
                    ord: l.header.ord,
                };
                waiting.remove(&origin);
                all.push((
                    (2, l.header.seq),
                    Some(origin),
                    l.header.entries,
                    (wire_of(&l.header), l.body),
                ));
            }
        }
        sp.release(&mut release, &mut findings);
        {
            let mut ledger = shared.ledger.lock();
            ledger.settle_old(OldSettled {
                left: (0, 0),
                handed_back: old,
            });
            // This run's that waited on disk and were not read back: lost.
            let lost: Vec<Origin> = waiting.keys().copied().collect();
            ledger.not_handed_back(&lost);
            count_lost(
                shared,
                lost.len() as u64,
                waiting.values().map(|e| u64::from(*e)).sum(),
            );
        }
        Counters::set(&shared.counters.spool_unloaded_old, 0);
        settle_lost(shared, &mut sp);
        publish(shared, &sp);
        let c = sp.counts();
        (c.live, c.live_entries)
    };
    let _ = sync_now(shared, spool);
    report(shared, findings);
    all.sort_by_key(|t| t.0);
    let mut undecodable = Vec::new();
    let mut payloads = Vec::with_capacity(all.len());
    for (_, origin, entries, (wire, body)) in all {
        match decode_record(wire, &body) {
            Some(p) => payloads.push(p),
            None => undecodable.push((origin, entries)),
        }
    }
    if !undecodable.is_empty() {
        let mut ledger = shared.ledger.lock();
        let origins: Vec<Origin> = undecodable.iter().filter_map(|(o, _)| *o).collect();
        ledger.not_handed_back(&origins);
        let entries = undecodable.iter().map(|(_, e)| u64::from(*e)).sum();
        count_lost(shared, undecodable.len() as u64, entries);
    }
    (payloads, left)
}

/// The wire a record's body was written for.
fn wire_of(header: &Header) -> Wire {
    if header.otlp {
        Wire::OtlpLogs
    } else {
        Wire::GoSightStream
    }
}

/// A record's body in this sender's wire form: as it is, or re-encoded if it was
/// written for the other wire (a sender whose wire changed over a backlog). Should that
/// fail (an entry over the OTLP request cap), the body goes as it is: the collector's
/// rejection then dead-letters it with its status.
fn adopt(shared: &Shared, header: &Header, body: Vec<u8>) -> Vec<u8> {
    let from = wire_of(header);
    let to = shared.config.wire;
    if from == to {
        return body;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| info!("spool: records written for {from:?} are re-encoded for {to:?}"));
    match from
        .decode(&body)
        .and_then(|p| to.encode(&p, shared.config.request_cap()))
    {
        Ok(bytes) => bytes,
        Err(e) => {
            error!("spool: a record written for {from:?} cannot be re-encoded for {to:?}: {e}");
            body
        }
    }
}

/// A spool record's payload (`None`, logged, if its checked bytes do not decode).
fn decode_record(wire: Wire, body: &[u8]) -> Option<LogPayload> {
    wire.decode_or_log(body, "a spool record that passed its checksum")
}

/// Counts payloads the spool lost (called under the ledger lock that stops them being
/// outstanding or handed back).
fn count_lost(shared: &Shared, payloads: u64, entries: u64) {
    Counters::add(&shared.counters.spool_lost, payloads);
    Counters::add(&shared.counters.entries_spool_lost, entries);
}

/// Counts what the spool lost since the last look (files removed or damaged before
/// their records were read back) and stops waiting for it: an earlier run's leave the
/// count of those on disk, this run's stop being outstanding, counted under the same
/// ledger lock (a `flush` never sees one gone and not counted). Called with the spool
/// lock held.
fn settle_lost(shared: &Shared, sp: &mut Spool) {
    let lost = sp.take_lost();
    if lost.is_empty() {
        return;
    }
    let (payloads, entries) = {
        let mut ledger = shared.ledger.lock();
        let (p, e) = ledger.lose(&lost.runs);
        let (p, e) = (
            p.saturating_add(lost.old),
            e.saturating_add(lost.old_entries),
        );
        count_lost(shared, p, e);
        (p, e)
    };
    Counters::sub(&shared.counters.spool_unloaded_old, lost.old);
    if payloads > 0 {
        error!("spool: lost {payloads} payloads ({entries} entries) before they were sent: their file was removed or damaged");
    }
    shared.ledger_changed.notify_all();
}
