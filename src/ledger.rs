//! The ledger: every payload logsender holds, from intake until it is acknowledged,
//! dropped or dead-lettered, with the memory bounds, the overflow policy, and the
//! isolation of payloads a collector rejects (poison payloads).
//!
//! A payload lives in exactly one place: the *outbox* (waiting to be written; re-sends
//! at the front), a writer's hands (being written), an *epoch* (written on a stream
//! whose final status has not arrived), a *suspect group* (failed in an epoch the
//! collector rejected, waiting to be re-sent alone), or *on trial* (its epoch failed and
//! a probe call is finding out whether the collector or the payloads are at fault). The
//! held count and bytes cover all of them.

use grpcio::GrpcSlice;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::OverflowPolicy;
use crate::events::DropReason;
use crate::spool::{RecordId, Run};

/// Where a payload came from, for `flush`: source 0 is `send_logs`, source `n > 0` the
/// `n`-th worker queue; `ord` counts payloads taken from that source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Origin {
    pub(crate) source: u32,
    pub(crate) ord: u64,
}

/// One encoded payload in logsender's care.
pub(crate) struct Item {
    /// Global intake order (oldest first when handed back).
    pub(crate) seq: u64,
    /// Where it came from, so `flush` knows whether it was submitted before it.
    pub(crate) origin: Origin,
    /// The encoded `LogPayload`, exactly as it goes on the wire.
    pub(crate) bytes: GrpcSlice,
    /// How many entries the payload carries (for the reports' entry counts).
    pub(crate) entries: u32,
    /// Written at least once before (so a re-send may be a duplicate).
    pub(crate) written_before: bool,
    /// How often the collector rejected this payload while it travelled alone and
    /// accepted an empty call right after (see [`Ledger::convict`]).
    pub(crate) strikes: u8,
    /// Where it is in the spool, if it is spooled: released from there when it leaves
    /// the ledger for good.
    pub(crate) spooled: Option<RecordId>,
}

impl Item {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Why [`Ledger::admit`] did not take a payload.
pub(crate) enum Refused {
    /// No room under the bounds and the policy says wait: the caller writes the outbox
    /// out, waits for room (or for the stream to change) and offers the item again.
    NoRoom(Item),
    /// Not taken (and not held); the caller reports the payload with this reason.
    Dropped(Item, DropReason),
}

/// Payloads written on one stream (at-least-once).
#[derive(Default)]
struct Epoch {
    written: Vec<Item>,
    /// For an epoch dedicated to one suspect group: what is still to be written on it.
    /// Normal epochs take from the outbox instead.
    unwritten: VecDeque<Item>,
    /// `Some(root)` for an epoch dedicated to a suspect group (see [`Group::root`]).
    dedicated: Option<u64>,
    /// Epochs with payloads committed when this one was opened.
    opened_at: u64,
}

/// Payloads re-sent together, alone in an epoch, because an epoch that carried them
/// was rejected.
struct Group {
    items: Vec<Item>,
    /// How many epochs with payloads had been committed when the epoch this group
    /// descends from was opened. A rejection of the group counts against its payloads
    /// only if more have been committed since: proof that the collector took data from
    /// others meanwhile (an empty probe only proves it takes calls).
    root: u64,
    /// A struck payload's next try waits until then (see [`STRIKE_WAIT`]).
    not_before: Option<Instant>,
}

impl Group {
    fn due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }
}

/// A rejected epoch's payloads while a probe decides who is at fault.
struct Trial {
    items: Vec<Item>,
    /// `Some(root)` if the epoch was dedicated to a suspect group.
    dedicated: Option<u64>,
    /// See [`Epoch::opened_at`].
    opened_at: u64,
}

/// What a writer may take for an epoch.
pub(crate) enum Batch {
    /// Payloads to write.
    Items(Vec<Item>),
    /// Nothing to write now.
    Empty,
    /// A dedicated epoch whose group is entirely written: time to commit it.
    GroupWritten,
}

/// The verdict of [`Ledger::convict`] on a group whose epoch the collector rejected
/// while it accepted an empty call.
pub(crate) enum Verdict {
    /// Split in two groups, each re-sent alone.
    Split,
    /// A payload alone got another strike; it is re-sent alone.
    Strike,
    /// No payload alone is proven at fault (no epoch with payloads was committed since
    /// the trouble began: the collector may be refusing all data); the group waits at the
    /// back, and the caller backs off.
    Unproven,
    /// These payloads are rejected for good; the caller dead-letters them, then
    /// [`Ledger::forget_rejected`] them (they are held until then, so that a `flush`
    /// does not return before the dead-letter handler saw them).
    Reject(Vec<Item>),
}

/// How many times a payload is rejected alone, each time with the collector accepting an
/// empty call right after, before it is dead-lettered for a retryable status code.
pub(crate) const MAX_STRIKES: u8 = 3;

/// How long a payload struck alone waits before its next try: this, doubled for each
/// strike before (1 s, then 2 s), whatever else opens epochs meanwhile, so that a
/// passing outage cannot strike a payload out in a few round trips.
pub(crate) const STRIKE_WAIT: Duration = Duration::from_secs(1);

/// Where an outstanding payload is, as far as the spool goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disk {
    /// Not in the spool (no spool, not through it yet, or it did not take it).
    No,
    /// In the spool, and in memory too (or in a writer's hands).
    Spooled,
    /// In the spool only: it waits on disk to be read back.
    OnDiskOnly,
}

/// An outstanding payload: its entries, and where it is.
#[derive(Clone, Copy, Debug)]
struct Out {
    entries: u32,
    disk: Disk,
}

/// What `shutdown` left in the spool, or handed back from it, of an earlier run's
/// payloads never read back (they have no origin here): payloads, entries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OldSettled {
    pub(crate) left: (u64, u64),
    pub(crate) handed_back: (u64, u64),
}

/// Payloads held, by where they are.
pub(crate) struct Ledger {
    outbox: VecDeque<Item>,
    epochs: BTreeMap<u64, Epoch>,
    /// Groups to re-send, each alone in its own epoch, front first.
    suspects: VecDeque<Group>,
    /// Rejected epochs' payloads, by epoch id, while a probe decides who is at fault.
    on_trial: BTreeMap<u64, Trial>,
    /// Epochs with payloads committed so far.
    data_commits: u64,
    /// Payloads taken in and not settled, with their entry counts and where they are.
    outstanding: BTreeMap<Origin, Out>,
    /// Payloads `close` left in the spool (for a `flush` racing it), with their entries.
    left_behind: BTreeMap<Origin, u32>,
    /// The same for an earlier run's payloads still on disk.
    old_settled: OldSettled,
    /// Payloads `close` took back undelivered (from here or from a queue), with their
    /// entry counts: a `flush` racing the close reports them as handed back, not as
    /// settled.
    handed_back: BTreeMap<Origin, u32>,
    held: usize,
    held_bytes: usize,
    max_held: usize,
    max_bytes: usize,
    /// Bumped whenever a stream is installed.
    generation: u64,
    /// Set (under this lock, so no waiter misses it) when the sender starts closing.
    closing: bool,
    /// Spool records of payloads that left for good, for the spool thread to release.
    to_release: Vec<(RecordId, u32)>,
    /// With a spool: payloads taken off a queue and not through the spool yet (for
    /// `sync`).
    unspooled: Option<BTreeSet<Origin>>,
}

impl Ledger {
    pub(crate) fn new(max_held: usize, max_bytes: usize) -> Self {
        Ledger {
            outbox: VecDeque::new(),
            epochs: BTreeMap::new(),
            suspects: VecDeque::new(),
            on_trial: BTreeMap::new(),
            data_commits: 0,
            outstanding: BTreeMap::new(),
            left_behind: BTreeMap::new(),
            old_settled: OldSettled::default(),
            handed_back: BTreeMap::new(),
            held: 0,
            held_bytes: 0,
            max_held,
            max_bytes,
            generation: 0,
            closing: false,
            to_release: Vec::new(),
            unspooled: None,
        }
    }

    /// Payloads and bytes held right now.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.held, self.held_bytes)
    }

    /// How many more payloads the bound on their number lets in now.
    pub(crate) fn room(&self) -> usize {
        self.max_held.saturating_sub(self.held)
    }

    fn has_room(&self, bytes: usize) -> bool {
        self.held == 0
            || (self.held < self.max_held
                && self.held_bytes.saturating_add(bytes) <= self.max_bytes)
    }

    fn hold(&mut self, item: &Item) {
        self.held += 1;
        self.held_bytes += item.len();
        let disk = if item.spooled.is_some() {
            Disk::Spooled
        } else {
            Disk::No
        };
        self.outstanding.insert(
            item.origin,
            Out {
                entries: item.entries,
                disk,
            },
        );
    }

    /// Forgets items that reached a final state; returns how many were held. An item
    /// no longer held (`close` took everything back meanwhile) is skipped, so a late
    /// release cannot make the counts wrap.
    fn release<'a>(&mut self, items: impl IntoIterator<Item = &'a Item>) -> usize {
        let mut n = 0;
        for item in items {
            if self.outstanding.remove(&item.origin).is_some() {
                self.held = self.held.saturating_sub(1);
                self.held_bytes = self.held_bytes.saturating_sub(item.len());
                n += 1;
                if let Some(id) = item.spooled {
                    self.to_release.push((id, item.entries));
                }
            }
        }
        n
    }

    /// Spool records to release (see [`Item::spooled`]), taken by the spool thread.
    pub(crate) fn take_released(&mut self, into: &mut Vec<(RecordId, u32)>) {
        into.append(&mut self.to_release);
    }

    /// Whether spool records wait to be released.
    pub(crate) fn has_released(&self) -> bool {
        !self.to_release.is_empty()
    }

    /// Takes in a payload read back from the spool (or spooled with room to spare), at
    /// the back of the outbox, with no overflow policy: the caller checked
    /// [`Ledger::fits`] (what does not fit waits on disk).
    pub(crate) fn admit_spooled(&mut self, item: Item) {
        self.hold(&item);
        self.outbox.push_back(item);
    }

    /// Whether a payload of `bytes` fits the memory bounds now (no policy, closing or
    /// not).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        self.has_room(bytes)
    }

    /// Marks the sender as closing. Called with the lock held, then the caller notifies
    /// the condvar: a worker waiting for room cannot miss it.
    pub(crate) fn start_closing(&mut self) {
        self.closing = true;
    }

    /// Whether the sender is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Takes a new payload into the outbox, applying `policy` when the bounds are reached:
    /// `DropNewest` refuses it, `DropOldest` evicts from the front of the outbox into
    /// `evicted` (the caller reports them), and `Block` (or `DropOldest` with nothing to
    /// evict) answers [`Refused::NoRoom`]. Once the sender is closing it admits
    /// unconditionally, so that nothing in a worker's hands is lost: `close` hands it back.
    pub(crate) fn admit(
        &mut self,
        item: Item,
        policy: OverflowPolicy,
        evicted: &mut Vec<Item>,
    ) -> Result<(), Refused> {
        while !self.has_room(item.len()) && !self.closing {
            match policy {
                OverflowPolicy::DropNewest => {
                    return Err(Refused::Dropped(item, DropReason::Newest))
                }
                OverflowPolicy::DropOldest if !self.outbox.is_empty() => {
                    if let Some(old) = self.outbox.pop_front() {
                        self.release([&old]);
                        evicted.push(old);
                    }
                }
                _ => return Err(Refused::NoRoom(item)),
            }
        }
        self.hold(&item);
        self.outbox.push_back(item);
        Ok(())
    }

    /// Whether a payload of `bytes` would fit now (or the sender is closing, when
    /// everything is taken).
    pub(crate) fn room_for(&self, bytes: usize) -> bool {
        self.closing || self.has_room(bytes)
    }

    /// Counts stream installations: a waiter for room that sees it change writes before
    /// it waits again.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A new stream was installed: waiters for room write before waiting again.
    pub(crate) fn stream_changed(&mut self) {
        self.generation += 1;
    }

    /// Whether the held payloads or bytes reached half their bound (time to commit
    /// early, so acknowledgements free room before the bound is hit).
    pub(crate) fn half_full(&self) -> bool {
        self.held >= self.max_held / 2 + self.max_held % 2
            || self.held_bytes >= self.max_bytes / 2 + self.max_bytes % 2
    }

    /// Holds a payload that `send_logs` is about to write itself, if it fits without
    /// applying any policy.
    pub(crate) fn try_hold(&mut self, item: &Item) -> bool {
        if !self.closing && self.has_room(item.len()) {
            self.hold(item);
            true
        } else {
            false
        }
    }

    /// Marks a payload outstanding from the moment a worker takes it off the queue, so
    /// that `flush` waits for it while it is still being encoded.
    pub(crate) fn reserve(&mut self, origin: Origin, entries: u32) {
        self.outstanding.insert(
            origin,
            Out {
                entries,
                disk: Disk::No,
            },
        );
        if let Some(u) = &mut self.unspooled {
            u.insert(origin);
        }
    }

    /// With a spool: tracks payloads between their reservation and the spool.
    pub(crate) fn track_unspooled(&mut self) {
        self.unspooled = Some(BTreeSet::new());
    }

    /// A reserved payload went through the spool (in it, or held in memory only).
    pub(crate) fn spooled(&mut self, origin: Origin) {
        if let Some(u) = &mut self.unspooled {
            u.remove(&origin);
        }
    }

    /// A reserved payload is in the spool only, waiting on disk (its memory freed).
    pub(crate) fn on_disk_only(&mut self, origin: Origin) {
        if let Some(o) = self.outstanding.get_mut(&origin) {
            o.disk = Disk::OnDiskOnly;
        }
    }

    /// Payloads of `targets` taken off a queue and not through the spool yet.
    pub(crate) fn unspooled_before(&self, targets: &[(u32, u64)]) -> usize {
        let Some(u) = &self.unspooled else { return 0 };
        targets
            .iter()
            .map(|&(source, ord)| {
                u.range(Origin { source, ord: 0 }..Origin { source, ord })
                    .count()
            })
            .sum()
    }

    /// Forgets this run's payloads of `runs` that waited on disk (their file is gone:
    /// those read back or released before are not among them); returns how many, and
    /// their entries. The caller counts them under this same hold of the lock.
    pub(crate) fn lose(&mut self, runs: &[Run]) -> (u64, u64) {
        let (mut payloads, mut entries) = (0u64, 0u64);
        for r in runs {
            for ord in r.first..r.first.saturating_add(r.count) {
                let origin = Origin {
                    source: r.source,
                    ord,
                };
                if let Entry::Occupied(o) = self.outstanding.entry(origin) {
                    if o.get().disk == Disk::OnDiskOnly {
                        payloads += 1;
                        entries = entries.saturating_add(u64::from(o.remove().entries));
                    }
                }
            }
        }
        (payloads, entries)
    }

    /// Payloads taken in, through the spool's step, and not in the spool (it was full
    /// or failing): held in memory only.
    pub(crate) fn not_spooled(&self) -> usize {
        self.outstanding
            .iter()
            .filter(|(origin, o)| {
                o.disk == Disk::No && !self.unspooled.as_ref().is_some_and(|u| u.contains(origin))
            })
            .count()
    }

    /// Of the outstanding payloads whose origin is before `targets[source]`, those in
    /// the spool (held in memory too, or waiting on disk), and their entries.
    pub(crate) fn spooled_before(&self, targets: &[(u32, u64)]) -> (u64, u64) {
        count_before(&self.outstanding, targets, |o| {
            (o.disk != Disk::No).then_some(o.entries)
        })
    }

    /// Undoes [`Ledger::reserve`] for a payload that was not admitted (dropped, or
    /// dead-lettered before it was held).
    pub(crate) fn unreserve(&mut self, origin: Origin) {
        self.outstanding.remove(&origin);
        self.spooled(origin);
    }

    /// Stops holding payloads rejected for good, once they were dead-lettered.
    pub(crate) fn forget_rejected(&mut self, items: &[Item]) -> usize {
        self.release(items)
    }

    /// Stops holding a payload that was never queued (a failed `send_logs`).
    pub(crate) fn forget(&mut self, item: &Item) {
        self.release([item]);
    }

    /// Takes what a writer should write next on `epoch` (`None`: at-most-once, no
    /// epochs): up to `max` payloads and `max_bytes` (more only if the first payload
    /// alone is) of a dedicated epoch's group, or from the front of the outbox.
    pub(crate) fn take_batch(&mut self, epoch: Option<u64>, max: usize, max_bytes: usize) -> Batch {
        let from = match epoch.and_then(|id| self.epochs.get_mut(&id)) {
            Some(e) if e.dedicated.is_some() => {
                if e.unwritten.is_empty() {
                    return Batch::GroupWritten;
                }
                &mut e.unwritten
            }
            _ => &mut self.outbox,
        };
        let batch = take_front(from, max, max_bytes);
        if batch.is_empty() {
            Batch::Empty
        } else {
            Batch::Items(batch)
        }
    }

    /// How many payloads wait to be written (outbox and suspect groups).
    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.len() + self.suspects.iter().map(|g| g.items.len()).sum::<usize>()
    }

    /// How many payloads wait in the outbox proper (what a normal epoch takes).
    pub(crate) fn normal_len(&self) -> usize {
        self.outbox.len()
    }

    /// Starts tracking epoch `id` (at-least-once). If a suspect group is due at `now`,
    /// the epoch is dedicated to it: it carries that group and nothing else. Returns
    /// whether it is.
    pub(crate) fn open_epoch(&mut self, id: u64, now: Instant) -> bool {
        let due = self.suspects.iter().position(|g| g.due(now));
        let epoch = match due.and_then(|i| self.suspects.remove(i)) {
            Some(group) => Epoch {
                written: Vec::new(),
                unwritten: group.items.into(),
                dedicated: Some(group.root),
                opened_at: self.data_commits,
            },
            None => Epoch {
                opened_at: self.data_commits,
                ..Epoch::default()
            },
        };
        let dedicated = epoch.dedicated.is_some();
        self.epochs.insert(id, epoch);
        dedicated
    }

    /// Whether a suspect group due at `now` waits for an epoch of its own.
    pub(crate) fn has_suspects(&self, now: Instant) -> bool {
        self.suspects.iter().any(|g| g.due(now))
    }

    /// When the next struck group that is not due yet will be.
    pub(crate) fn next_suspect_due(&self, now: Instant) -> Option<Instant> {
        self.suspects
            .iter()
            .filter_map(|g| g.not_before)
            .filter(|t| *t > now)
            .min()
    }

    /// Whether epoch `id` is dedicated to a suspect group not entirely written yet (it
    /// asks to rotate itself once it is).
    pub(crate) fn group_unwritten(&self, id: u64) -> bool {
        self.epochs
            .get(&id)
            .is_some_and(|e| e.dedicated.is_some() && !e.unwritten.is_empty())
    }

    /// Payloads written in epoch `id` and not yet settled.
    pub(crate) fn epoch_len(&self, id: u64) -> usize {
        self.epochs.get(&id).map_or(0, |e| e.written.len())
    }

    /// Records payloads written on epoch `id`. If that epoch already ended (its status
    /// arrived while the write was finishing), they go back to the outbox instead; returns
    /// `false` then.
    pub(crate) fn written(&mut self, id: u64, items: Vec<Item>) -> bool {
        match self.epochs.get_mut(&id) {
            Some(epoch) => {
                epoch.written.extend(items);
                true
            }
            None => {
                self.requeue(items);
                false
            }
        }
    }

    /// Settles payloads that count as delivered the moment they are written (at-most-once).
    pub(crate) fn settle(&mut self, items: &[Item]) -> usize {
        self.release(items)
    }

    /// Epoch `id` ended `OK` after its half-close: its payloads are delivered. Returns
    /// them, so that the caller frees their buffers after it lets go of the lock.
    pub(crate) fn commit(&mut self, id: u64) -> Vec<Item> {
        match self.epochs.remove(&id) {
            Some(e) => {
                // A dedicated group not entirely written is not delivered yet.
                self.put_back(e.unwritten.into(), e.dedicated);
                if self.release(&e.written) > 0 {
                    self.data_commits += 1;
                }
                e.written
            }
            None => Vec::new(),
        }
    }

    /// Epoch `id` failed for a reason that says nothing about its payloads (the
    /// connection broke, a timeout): they are re-sent first. A suspect group stays a
    /// group. Returns how many.
    pub(crate) fn fail(&mut self, id: u64) -> usize {
        let Some(e) = self.epochs.remove(&id) else {
            return 0;
        };
        let mut items = e.written;
        items.extend(e.unwritten);
        items.sort_by_key(|i| i.seq);
        self.put_back(items, e.dedicated)
    }

    /// Puts payloads back to be sent: as a suspect group if they came from an epoch
    /// dedicated to one, else at the front of the outbox. Returns how many.
    fn put_back(&mut self, items: Vec<Item>, dedicated: Option<u64>) -> usize {
        let n = items.len();
        match dedicated {
            Some(root) if n > 0 => self.suspects.push_front(Group {
                items: mark_written(items),
                root,
                not_before: None,
            }),
            _ => self.requeue(items),
        }
        n
    }

    /// Epoch `id` was rejected by the collector: what it carried goes on trial until a
    /// probe tells whether the collector rejects every call (see [`Ledger::acquit`]) or
    /// not (see [`Ledger::convict`]); what it never carried goes back to be sent. Returns
    /// how many are on trial.
    pub(crate) fn try_epoch(&mut self, id: u64) -> usize {
        let Some(e) = self.epochs.remove(&id) else {
            return 0;
        };
        // What a dedicated epoch never carried goes back to its group's place.
        self.put_back(e.unwritten.into(), e.dedicated);
        let n = e.written.len();
        if n > 0 {
            let mut items = e.written;
            items.sort_by_key(|i| i.seq);
            self.on_trial.insert(
                id,
                Trial {
                    items,
                    dedicated: e.dedicated,
                    opened_at: e.opened_at,
                },
            );
        }
        n
    }

    /// The collector rejects an empty call too: epoch `id`'s payloads are not at fault.
    /// They are re-sent (returns how many), unless `for_good`, when the collector rejects
    /// everything permanently: then they are returned, to be dead-lettered and then
    /// [`Ledger::forget_rejected`].
    pub(crate) fn acquit(&mut self, id: u64, for_good: bool) -> Result<usize, Vec<Item>> {
        let Some(trial) = self.on_trial.remove(&id) else {
            return Ok(0);
        };
        if for_good {
            return Err(trial.items);
        }
        Ok(self.put_back(trial.items, trial.dedicated))
    }

    /// The collector accepted an empty call right after rejecting epoch `id`: something
    /// in it may be at fault. A normal epoch's payloads are split in two groups, each
    /// re-sent alone. A group's rejection counts only if epochs with payloads were
    /// committed since its trouble began ([`Verdict::Unproven`] otherwise); then it is
    /// split in halves, or, a payload alone, rejected for good when `permanent`, or given
    /// a strike (its next try waits until [`STRIKE_WAIT`] after `now`, doubled per
    /// earlier strike) and rejected at [`MAX_STRIKES`].
    pub(crate) fn convict(&mut self, id: u64, permanent: bool, now: Instant) -> Verdict {
        let Some(Trial {
            mut items,
            dedicated,
            opened_at,
        }) = self.on_trial.remove(&id)
        else {
            return Verdict::Split;
        };
        let root = match dedicated {
            // A normal epoch: isolating its payloads costs nothing but calls.
            None => opened_at,
            Some(root) if self.data_commits > root => root,
            Some(root) => {
                self.suspects.push_back(Group {
                    items: mark_written(items),
                    root,
                    not_before: None,
                });
                return Verdict::Unproven;
            }
        };
        if items.len() > 1 || dedicated.is_none() {
            let second = items.split_off(items.len() / 2);
            for half in [second, items] {
                if !half.is_empty() {
                    self.suspects.push_front(Group {
                        items: mark_written(half),
                        root,
                        not_before: None,
                    });
                }
            }
            return Verdict::Split;
        }
        let mut items = mark_written(items);
        for item in &mut items {
            item.strikes = item.strikes.saturating_add(1);
        }
        let strikes = items.iter().map(|i| i.strikes).max().unwrap_or(1);
        if permanent || strikes >= MAX_STRIKES {
            return Verdict::Reject(items);
        }
        let wait = STRIKE_WAIT.saturating_mul(1 << u32::from(strikes.saturating_sub(1)).min(6));
        self.suspects.push_front(Group {
            items,
            root,
            not_before: now.checked_add(wait),
        });
        Verdict::Strike
    }

    /// Whether a group is on trial.
    #[cfg(test)]
    pub(crate) fn any_on_trial(&self) -> bool {
        !self.on_trial.is_empty()
    }

    /// Queues a held payload that was not written yet at the back of the outbox.
    pub(crate) fn requeue_new(&mut self, item: Item) {
        self.outbox.push_back(item);
    }

    /// Puts payloads back at the front of the outbox, in their order.
    pub(crate) fn requeue(&mut self, items: Vec<Item>) {
        for item in mark_written(items).into_iter().rev() {
            self.outbox.push_front(item);
        }
    }

    /// Outstanding payloads (taken in, not yet settled) whose origin is before
    /// `targets[source]` in their source.
    pub(crate) fn outstanding_before(&self, targets: &[(u32, u64)]) -> usize {
        targets
            .iter()
            .map(|&(source, ord)| {
                self.outstanding
                    .range(Origin { source, ord: 0 }..Origin { source, ord })
                    .count()
            })
            .sum()
    }

    /// Whether a payload of `source` is outstanding.
    pub(crate) fn any_outstanding_from(&self, source: u32) -> bool {
        self.outstanding
            .range(
                Origin { source, ord: 0 }..=Origin {
                    source,
                    ord: u64::MAX,
                },
            )
            .next()
            .is_some()
    }

    /// Records payloads `close` took back from queue `source` without their being
    /// taken in (they get the next `count` ordinals of that source, as if taken): each
    /// with its entry count.
    pub(crate) fn hand_back_queued(&mut self, source: u32, first: u64, entries: &[u32]) {
        for (ord, n) in (first..).zip(entries) {
            self.handed_back.insert(Origin { source, ord }, *n);
        }
    }

    /// Of the payloads whose origin is before `targets[source]` in their source, how many
    /// `close` handed back, and their entries.
    pub(crate) fn handed_back_before(&self, targets: &[(u32, u64)]) -> (u64, u64) {
        count_before(&self.handed_back, targets, |n| Some(*n))
    }

    /// Takes every payload still held, oldest first (for `close`), and lists what waits
    /// in the spool only (origin, entries). Remembers, for a `flush` racing the close,
    /// what it hands back (held in memory only; with `take_spool`, everything) and what
    /// stays in the spool.
    pub(crate) fn drain_all(&mut self, take_spool: bool) -> (Vec<Item>, Vec<(Origin, u32)>) {
        let mut all: Vec<Item> = std::mem::take(&mut self.epochs)
            .into_values()
            .flat_map(|e| e.written.into_iter().chain(e.unwritten))
            .collect();
        all.extend(self.outbox.drain(..));
        all.extend(self.suspects.drain(..).flat_map(|g| g.items));
        all.extend(
            std::mem::take(&mut self.on_trial)
                .into_values()
                .flat_map(|t| t.items),
        );
        all.sort_by_key(|i| i.seq);
        let on_disk: Vec<(Origin, u32)> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.disk == Disk::OnDiskOnly)
            .map(|(origin, o)| (*origin, o.entries))
            .collect();
        let spooled = all
            .iter()
            .map(|i| (i.spooled.is_some(), i.origin, i.entries))
            .chain(on_disk.iter().map(|&(o, e)| (true, o, e)));
        for (in_spool, origin, entries) in spooled {
            if in_spool && !take_spool {
                self.left_behind.insert(origin, entries);
            } else {
                self.handed_back.insert(origin, entries);
            }
        }
        self.held = 0;
        self.held_bytes = 0;
        self.outstanding.clear();
        (all, on_disk)
    }

    /// Payloads `close` was to hand back from the spool that could not be read back:
    /// lost, not handed back (for a racing `flush`).
    pub(crate) fn not_handed_back(&mut self, lost: &[Origin]) {
        for origin in lost {
            self.handed_back.remove(origin);
        }
    }

    /// Of the payloads whose origin is before `targets[source]` in their source, how
    /// many `close` left in the spool, and their entries.
    pub(crate) fn left_behind_before(&self, targets: &[(u32, u64)]) -> (u64, u64) {
        count_before(&self.left_behind, targets, |n| Some(*n))
    }

    /// Records what `close` did with an earlier run's payloads never read back (then
    /// the caller lowers the count of those on disk).
    pub(crate) fn settle_old(&mut self, old: OldSettled) {
        self.old_settled = old;
    }

    /// What `close` did with an earlier run's payloads never read back.
    pub(crate) fn old_settled(&self) -> OldSettled {
        self.old_settled
    }
}

/// Of the payloads in `map` whose origin is before `targets[source]` in their source
/// and that `entries` counts (it gives their entries), how many, and their entries.
fn count_before<V>(
    map: &BTreeMap<Origin, V>,
    targets: &[(u32, u64)],
    entries: impl Fn(&V) -> Option<u32>,
) -> (u64, u64) {
    let (mut payloads, mut total) = (0u64, 0u64);
    for &(source, ord) in targets {
        for n in map
            .range(Origin { source, ord: 0 }..Origin { source, ord })
            .filter_map(|(_, v)| entries(v))
        {
            payloads += 1;
            total = total.saturating_add(u64::from(n));
        }
    }
    (payloads, total)
}

/// Takes up to `max` items (and about `max_bytes`: at least one) from the front of `from`.
fn take_front(from: &mut VecDeque<Item>, max: usize, max_bytes: usize) -> Vec<Item> {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    while batch.len() < max {
        match from.front() {
            Some(item) if batch.is_empty() || bytes.saturating_add(item.len()) <= max_bytes => {
                bytes = bytes.saturating_add(item.len());
            }
            _ => break,
        }
        batch.extend(from.pop_front());
    }
    batch
}

/// How many entries `items` carry.
pub(crate) fn entries_of(items: &[Item]) -> u64 {
    items.iter().map(|i| u64::from(i.entries)).sum()
}

fn mark_written(mut items: Vec<Item>) -> Vec<Item> {
    for item in &mut items {
        item.written_before = true;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, len: usize) -> Item {
        Item {
            seq,
            origin: Origin {
                source: 1,
                ord: seq,
            },
            bytes: GrpcSlice::from(vec![7u8; len]),
            entries: 1,
            written_before: false,
            strikes: 0,
            spooled: None,
        }
    }

    /// Admits, or says why not; returns what was evicted.
    fn admit(l: &mut Ledger, it: Item, policy: OverflowPolicy) -> Result<Vec<Item>, Refused> {
        let mut evicted = Vec::new();
        l.admit(it, policy, &mut evicted).map(|()| evicted)
    }

    /// A ledger (room for 100) holding payloads 0..n of 5 bytes in its outbox.
    fn holding(n: u64) -> Ledger {
        let mut l = Ledger::new(100, 1 << 20);
        for s in 0..n {
            assert!(admit(&mut l, item(s, 5), OverflowPolicy::DropNewest).is_ok());
        }
        l
    }

    #[test]
    fn drop_newest_and_oldest_keep_the_bound() {
        let mut l = Ledger::new(2, 1 << 20);
        for s in 0..2 {
            assert!(admit(&mut l, item(s, 10), OverflowPolicy::DropNewest).is_ok());
        }
        assert!(matches!(
            admit(&mut l, item(2, 10), OverflowPolicy::DropNewest),
            Err(Refused::Dropped(_, DropReason::Newest))
        ));
        match admit(&mut l, item(3, 10), OverflowPolicy::DropOldest) {
            Ok(evicted) => {
                assert_eq!(evicted.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![0])
            }
            _ => panic!("expected an eviction"),
        }
        assert_eq!(l.held(), (2, 20));
        assert_eq!(l.outstanding_before(&[(1, 10)]), 2);
    }

    #[test]
    fn block_answers_no_room_until_closing() {
        let mut l = Ledger::new(1, 1 << 20);
        assert!(admit(&mut l, item(0, 1), OverflowPolicy::DropNewest).is_ok());
        let policy = OverflowPolicy::Block {
            timeout: Some(std::time::Duration::MAX),
        };
        match admit(&mut l, item(1, 1), policy) {
            Err(Refused::NoRoom(back)) => assert_eq!(back.seq, 1),
            _ => panic!("expected no room"),
        }
        // DropOldest with nothing to evict (the held payload is being written) waits too.
        let Batch::Items(_in_hands) = l.take_batch(None, 1, usize::MAX) else {
            panic!("expected items")
        };
        assert!(matches!(
            admit(&mut l, item(2, 1), OverflowPolicy::DropOldest),
            Err(Refused::NoRoom(_))
        ));
        // Closing admits at once.
        l.start_closing();
        assert!(l.room_for(1));
        assert!(admit(&mut l, item(3, 1), policy).is_ok());
    }

    #[test]
    fn a_batch_never_passes_its_byte_bound_but_for_a_lone_payload() {
        let mut l = Ledger::new(100, 1 << 20);
        for (s, len) in [(0, 40), (1, 40), (2, 30), (3, 100), (4, 10)] {
            assert!(admit(&mut l, item(s, len), OverflowPolicy::DropNewest).is_ok());
        }
        let mut sizes = Vec::new();
        while let Batch::Items(b) = l.take_batch(None, 10, 100) {
            sizes.push(b.iter().map(Item::len).collect::<Vec<_>>());
        }
        // 40+40 fit, +30 would pass 100; 30 alone then; 100 alone is exactly the bound.
        assert_eq!(sizes, vec![vec![40, 40], vec![30], vec![100], vec![10]]);
        assert!(admit(&mut l, item(5, 250), OverflowPolicy::DropNewest).is_ok());
        let Batch::Items(b) = l.take_batch(None, 10, 100) else {
            panic!("a payload over the bound goes alone")
        };
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn epochs_commit_fail_and_late_writes() {
        let mut l = holding(4);
        assert!(!l.open_epoch(1, Instant::now()));
        let Batch::Items(b) = l.take_batch(Some(1), 2, usize::MAX) else {
            panic!("expected items")
        };
        assert!(l.written(1, b));
        assert_eq!(l.fail(1), 2);
        // Re-sends come first, in order.
        let Batch::Items(b) = l.take_batch(Some(1), 10, usize::MAX) else {
            panic!("expected items")
        };
        assert_eq!(
            b.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(b[0].written_before && !b[2].written_before);
        // A write that finishes after its epoch ended goes back to the outbox.
        assert!(!l.written(1, b));
        l.open_epoch(2, Instant::now());
        let Batch::Items(b) = l.take_batch(Some(2), 10, usize::MAX) else {
            panic!("expected items")
        };
        assert!(l.written(2, b));
        assert_eq!(l.commit(2).len(), 4);
        assert_eq!(l.held(), (0, 0));
        assert_eq!(l.outstanding_before(&[(1, u64::MAX)]), 0);
    }

    #[test]
    fn a_rejected_epoch_is_bisected_down_to_the_poison_payload() {
        let poison = 5;
        let mut rejected = Vec::new();
        let mut committed = 0;
        let mut l = holding(8);
        let mut id = 0;
        let mut epochs = 0;
        while l.held().0 > 0 {
            id += 1;
            epochs += 1;
            assert!(epochs < 40, "bisection does not converge");
            // Each epoch a minute after the last: struck payloads are always due.
            let now = Instant::now() + Duration::from_secs(60 * id);
            l.open_epoch(id, now);
            let Batch::Items(batch) = l.take_batch(Some(id), 100, usize::MAX) else {
                panic!("nothing to write")
            };
            let carries_poison = batch.iter().any(|i| i.seq == poison);
            assert!(l.written(id, batch));
            if carries_poison {
                l.try_epoch(id);
                // The probe (an empty call) is accepted: the payloads are at fault.
                if let Verdict::Reject(items) = l.convict(id, false, now) {
                    rejected.extend(items.iter().map(|i| i.seq));
                    l.forget_rejected(&items);
                }
            } else {
                committed += l.commit(id).len();
            }
        }
        assert_eq!(rejected, vec![poison]);
        assert_eq!(committed, 7);
        assert_eq!(l.held(), (0, 0));
    }

    #[test]
    fn acquitted_groups_are_resent_whole() {
        let mut l = holding(4);
        l.open_epoch(1, Instant::now());
        let Batch::Items(b) = l.take_batch(Some(1), 100, usize::MAX) else {
            panic!()
        };
        l.written(1, b);
        assert_eq!(l.try_epoch(1), 4);
        assert!(l.any_on_trial());
        assert_eq!(l.acquit(1, false).ok(), Some(4));
        assert_eq!(l.outbox_len(), 4);
        assert!(!l.has_suspects(Instant::now()));
        l.open_epoch(2, Instant::now());
        let Batch::Items(b) = l.take_batch(Some(2), 100, usize::MAX) else {
            panic!()
        };
        l.written(2, b);
        l.try_epoch(2);
        let gone = l.acquit(2, true).err().unwrap_or_default();
        assert_eq!(gone.len(), 4);
        l.forget_rejected(&gone);
        assert_eq!(l.held(), (0, 0));
    }
}
