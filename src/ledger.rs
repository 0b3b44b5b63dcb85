//! The ledger: every payload logsender holds, from intake until it is acknowledged,
//! dropped or dead-lettered, with the memory bounds and the overflow policy.
//!
//! A payload lives in exactly one place: the *outbox* (waiting to be written; re-sends
//! at the front), a writer's hands (being written), or an *epoch* (written on a stream
//! whose final status has not arrived). The held count and bytes cover all three.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use grpcio::GrpcSlice;
use parking_lot::{Condvar, MutexGuard};

use crate::config::OverflowPolicy;
use crate::events::DropReason;

/// One encoded payload in logsender's care.
pub(crate) struct Item {
    /// Intake order; used by `flush` to know what was submitted before it.
    pub(crate) seq: u64,
    /// The encoded `LogPayload`, exactly as it goes on the wire.
    pub(crate) bytes: GrpcSlice,
    /// Written at least once before (so a re-send may be a duplicate).
    pub(crate) written_before: bool,
}

impl Item {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// What `admit` did with a payload.
pub(crate) enum Admitted {
    /// It is in the outbox. `evicted` were dropped to make room (`DropOldest`).
    Queued { evicted: Vec<Item> },
    /// It was not taken (and is not held); the caller reports it with this reason.
    Dropped(DropReason),
}

/// Payloads held, by where they are.
pub(crate) struct Ledger {
    outbox: VecDeque<Item>,
    epochs: BTreeMap<u64, Vec<Item>>,
    outstanding: BTreeSet<u64>,
    held: usize,
    held_bytes: usize,
    max_held: usize,
    max_bytes: usize,
    /// Bumped whenever a stream is installed.
    generation: u64,
}

impl Ledger {
    pub(crate) fn new(max_held: usize, max_bytes: usize) -> Self {
        Ledger {
            outbox: VecDeque::new(),
            epochs: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            held: 0,
            held_bytes: 0,
            max_held,
            max_bytes,
            generation: 0,
        }
    }

    /// Payloads and bytes held right now.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.held, self.held_bytes)
    }

    fn has_room(&self, bytes: usize) -> bool {
        self.held == 0 || (self.held < self.max_held && self.held_bytes + bytes <= self.max_bytes)
    }

    fn hold(&mut self, item: &Item) {
        self.held += 1;
        self.held_bytes += item.len();
        self.outstanding.insert(item.seq);
    }

    /// Forgets items that reached a final state; returns how many.
    fn release<'a>(&mut self, items: impl IntoIterator<Item = &'a Item>) -> usize {
        let mut n = 0;
        for item in items {
            self.held -= 1;
            self.held_bytes -= item.len();
            self.outstanding.remove(&item.seq);
            n += 1;
        }
        n
    }

    /// Takes a new payload into the outbox, applying `policy` when the bounds are reached.
    ///
    /// Before waiting for room (`Block`, or `DropOldest` with nothing to evict), it runs
    /// `write` with the lock released, so that a full buffer is written out whenever a
    /// stream is up, and it does not wait if the stream changed meanwhile (see
    /// [`Ledger::stream_changed`]). `closing` admits unconditionally, so that nothing in a
    /// worker's hands is lost.
    pub(crate) fn admit(
        guard: &mut MutexGuard<'_, Ledger>,
        cv: &Condvar,
        item: Item,
        policy: OverflowPolicy,
        closing: &dyn Fn() -> bool,
        write: &dyn Fn(),
    ) -> Admitted {
        let mut evicted = Vec::new();
        let block_deadline = match policy {
            OverflowPolicy::Block {
                timeout: Some(timeout),
            } => Some(Instant::now() + timeout),
            _ => None,
        };
        while !guard.has_room(item.len()) && !closing() {
            match policy {
                OverflowPolicy::DropNewest => return Admitted::Dropped(DropReason::Newest),
                OverflowPolicy::DropOldest if !guard.outbox.is_empty() => {
                    if let Some(old) = guard.outbox.pop_front() {
                        guard.release([&old]);
                        evicted.push(old);
                    }
                }
                _ => {
                    let generation = guard.generation;
                    MutexGuard::unlocked(guard, write);
                    if guard.generation != generation || guard.has_room(item.len()) || closing() {
                        continue;
                    }
                    match block_deadline {
                        Some(deadline) => {
                            if cv.wait_until(guard, deadline).timed_out()
                                && !guard.has_room(item.len())
                            {
                                return Admitted::Dropped(DropReason::BlockTimeout);
                            }
                        }
                        None => cv.wait(guard),
                    }
                }
            }
        }
        guard.hold(&item);
        guard.outbox.push_back(item);
        Admitted::Queued { evicted }
    }

    /// A new stream was installed: waiters in `admit` write before waiting again.
    pub(crate) fn stream_changed(&mut self) {
        self.generation += 1;
    }

    /// Whether the held payloads or bytes reached half their bound (time to commit
    /// early, so acknowledgements free room before the bound is hit).
    pub(crate) fn half_full(&self) -> bool {
        self.held * 2 >= self.max_held || self.held_bytes * 2 >= self.max_bytes
    }

    /// Whether a payload of `bytes` fits without applying any policy (for `send_logs`).
    pub(crate) fn try_hold(&mut self, item: &Item) -> bool {
        if self.has_room(item.len()) {
            self.hold(item);
            true
        } else {
            false
        }
    }

    /// Marks `seq` outstanding from the moment a worker takes it off the queue, so that
    /// `flush` waits for it while it is still being encoded.
    pub(crate) fn reserve(&mut self, seq: u64) {
        self.outstanding.insert(seq);
    }

    /// Undoes [`Ledger::reserve`] for a payload that was not admitted (dropped, or
    /// dead-lettered before it was held).
    pub(crate) fn unreserve(&mut self, seq: u64) {
        self.outstanding.remove(&seq);
    }

    /// Stops holding a payload that was never queued (a failed `send_logs`).
    pub(crate) fn forget(&mut self, item: &Item) {
        self.release([item]);
    }

    /// Takes up to `max` payloads (and roughly `max_bytes`) from the front of the outbox.
    pub(crate) fn take_batch(&mut self, max: usize, max_bytes: usize) -> Vec<Item> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < max && bytes < max_bytes {
            match self.outbox.pop_front() {
                Some(item) => {
                    bytes += item.len();
                    batch.push(item);
                }
                None => break,
            }
        }
        batch
    }

    /// Whether anything waits to be written.
    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Starts tracking epoch `id` (at-least-once).
    pub(crate) fn open_epoch(&mut self, id: u64) {
        self.epochs.entry(id).or_default();
    }

    /// Payloads written in epoch `id` and not yet settled.
    pub(crate) fn epoch_len(&self, id: u64) -> usize {
        self.epochs.get(&id).map_or(0, Vec::len)
    }

    /// Records payloads written on epoch `id`. If that epoch already ended (its status
    /// arrived while the write was finishing), they go back to the outbox instead; returns
    /// `false` then.
    pub(crate) fn written(&mut self, id: u64, items: Vec<Item>) -> bool {
        match self.epochs.get_mut(&id) {
            Some(epoch) => {
                epoch.extend(items);
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

    /// Epoch `id` ended `OK`: its payloads are delivered. Returns how many.
    pub(crate) fn commit(&mut self, id: u64) -> usize {
        let items = self.epochs.remove(&id).unwrap_or_default();
        self.release(&items)
    }

    /// Epoch `id` failed: its payloads go back to the front of the outbox. Returns how many.
    pub(crate) fn fail(&mut self, id: u64) -> usize {
        let items = self.epochs.remove(&id).unwrap_or_default();
        let n = items.len();
        self.requeue(items);
        n
    }

    /// Epoch `id` was rejected for good: its payloads leave the ledger and are returned.
    pub(crate) fn reject(&mut self, id: u64) -> Vec<Item> {
        let items = self.epochs.remove(&id).unwrap_or_default();
        self.release(&items);
        items
    }

    /// Puts payloads back at the front of the outbox, in their order.
    pub(crate) fn requeue(&mut self, items: Vec<Item>) {
        for mut item in items.into_iter().rev() {
            item.written_before = true;
            self.outbox.push_front(item);
        }
    }

    /// Payloads with `seq < before` not settled yet.
    pub(crate) fn outstanding_before(&self, before: u64) -> usize {
        self.outstanding.range(..before).count()
    }

    /// Takes every payload still held, oldest first (for `close`).
    pub(crate) fn drain_all(&mut self) -> Vec<Item> {
        let mut all: Vec<Item> = std::mem::take(&mut self.epochs)
            .into_values()
            .flatten()
            .collect();
        all.extend(self.outbox.drain(..));
        all.sort_by_key(|i| i.seq);
        self.held = 0;
        self.held_bytes = 0;
        self.outstanding.clear();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn item(seq: u64, len: usize) -> Item {
        Item {
            seq,
            bytes: GrpcSlice::from(vec![7u8; len]),
            written_before: false,
        }
    }

    fn admit(l: &Mutex<Ledger>, it: Item, policy: OverflowPolicy) -> Admitted {
        let cv = Condvar::new();
        Ledger::admit(&mut l.lock(), &cv, it, policy, &|| false, &|| {})
    }

    #[test]
    fn drop_newest_and_oldest_keep_the_bound() {
        let l = Mutex::new(Ledger::new(2, 1 << 20));
        for s in 0..2 {
            assert!(matches!(
                admit(&l, item(s, 10), OverflowPolicy::DropNewest),
                Admitted::Queued { .. }
            ));
        }
        match admit(&l, item(2, 10), OverflowPolicy::DropNewest) {
            Admitted::Dropped(DropReason::Newest) => {}
            _ => panic!("expected a drop"),
        }
        match admit(&l, item(3, 10), OverflowPolicy::DropOldest) {
            Admitted::Queued { evicted } => {
                assert_eq!(evicted.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![0])
            }
            _ => panic!("expected an eviction"),
        }
        assert_eq!(l.lock().held(), (2, 20));
        assert_eq!(l.lock().outstanding_before(10), 2);
    }

    #[test]
    fn block_with_timeout_drops_after_waiting() {
        let l = Mutex::new(Ledger::new(1, 1 << 20));
        admit(&l, item(0, 1), OverflowPolicy::DropNewest);
        let policy = OverflowPolicy::Block {
            timeout: Some(std::time::Duration::from_millis(20)),
        };
        let t = Instant::now();
        assert!(matches!(
            admit(&l, item(1, 1), policy),
            Admitted::Dropped(DropReason::BlockTimeout)
        ));
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
    }

    #[test]
    fn epochs_commit_fail_and_late_writes() {
        let mut l = Ledger::new(100, 1 << 20);
        let cv = Condvar::new();
        let m = Mutex::new(l);
        for s in 0..4 {
            Ledger::admit(
                &mut m.lock(),
                &cv,
                item(s, 5),
                OverflowPolicy::DropNewest,
                &|| false,
                &|| {},
            );
        }
        l = m.into_inner();
        l.open_epoch(1);
        let b = l.take_batch(2, usize::MAX);
        assert!(l.written(1, b));
        assert_eq!(l.fail(1), 2);
        // Re-sends come first, in order.
        let b = l.take_batch(10, usize::MAX);
        assert_eq!(
            b.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(b[0].written_before && !b[2].written_before);
        // A write that finishes after its epoch ended goes back to the outbox.
        assert!(!l.written(1, b));
        l.open_epoch(2);
        let b = l.take_batch(10, usize::MAX);
        assert!(l.written(2, b));
        assert_eq!(l.commit(2), 4);
        assert_eq!(l.held(), (0, 0));
        assert_eq!(l.outstanding_before(u64::MAX), 0);
    }
}
