//! The worker queues intake reads, and how far it has read each one: taking a payload
//! off a queue and numbering it happen under one lock (the caller's), so that `flush`
//! can tell exactly which payloads were submitted before it began.

use crossbeam_channel::{Receiver, TryRecvError};

use crate::codec::Encoded;
use crate::ledger::{Ledger, Origin};
use crate::model::LogPayload;

/// A queue's receiving end: payloads a program sends (`start_worker_pool`), or the
/// payloads an entry handle's batcher assembled, encoded already.
#[derive(Clone)]
pub(crate) enum Intake {
    Payloads(Receiver<LogPayload>),
    Encoded(Receiver<Encoded>),
}

/// One payload taken off a queue.
// A program's payload travels as it was sent (boxing it would cost an allocation each).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Queued {
    Payload(LogPayload),
    Encoded(Encoded),
}

impl Queued {
    /// How many entries it carries.
    pub(crate) fn entries(&self) -> u32 {
        match self {
            Queued::Payload(p) => u32::try_from(p.logs.len()).unwrap_or(u32::MAX),
            Queued::Encoded(e) => e.entries,
        }
    }

    /// The payload as a tree (decoded, if it was encoded; `None` only on a bug, logged).
    pub(crate) fn into_payload(self) -> Option<LogPayload> {
        match self {
            Queued::Payload(p) => Some(p),
            Queued::Encoded(e) => e.decode(),
        }
    }
}

impl Intake {
    fn same_channel(&self, other: &Intake) -> bool {
        match (self, other) {
            (Intake::Payloads(a), Intake::Payloads(b)) => a.same_channel(b),
            (Intake::Encoded(a), Intake::Encoded(b)) => a.same_channel(b),
            _ => false,
        }
    }

    fn len(&self) -> usize {
        match self {
            Intake::Payloads(rx) => rx.len(),
            Intake::Encoded(rx) => rx.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn try_recv(&self) -> Result<Queued, TryRecvError> {
        match self {
            Intake::Payloads(rx) => rx.try_recv().map(Queued::Payload),
            Intake::Encoded(rx) => rx.try_recv().map(Queued::Encoded),
        }
    }

    /// Adds the receiver to `select`; returns its index.
    pub(crate) fn add_to<'a>(&'a self, select: &mut crossbeam_channel::Select<'a>) -> usize {
        match self {
            Intake::Payloads(rx) => select.recv(rx),
            Intake::Encoded(rx) => select.recv(rx),
        }
    }
}

/// One registered queue.
struct Queue {
    /// The queue's `Origin::source` (1, 2, ...; 0 is `send_logs`).
    source: u32,
    /// `None` once its pool is done with it or `close` let it go; its counts stay, for
    /// `flush`.
    rx: Option<Intake>,
    /// Payloads taken from it so far (the next one's `Origin::ord`).
    taken: u64,
}

/// What `flush` waits for: per source, the `ord` below which a payload was submitted
/// before the flush began.
pub(crate) struct FlushTarget {
    /// `(source, ord)` bounds, `send_logs` (source 0) first.
    pub(crate) bounds: Vec<(u32, u64)>,
}

/// Every queue a worker pool reads, by source (ascending: sources only grow).
#[derive(Default)]
pub(crate) struct Queues {
    queues: Vec<Queue>,
    /// Sources given out so far.
    sources: u32,
}

/// The queue is empty and every producer is gone (or it is not registered).
pub(crate) struct Gone;

impl Queues {
    /// Registers a queue (or finds it, if the same channel is registered already);
    /// returns its source.
    pub(crate) fn register(&mut self, rx: &Intake, ledger: &Ledger) -> u32 {
        self.prune_retired(ledger);
        if let Some(q) = self
            .queues
            .iter()
            .find(|q| q.rx.as_ref().is_some_and(|r| r.same_channel(rx)))
        {
            return q.source;
        }
        // 4 billion queues in one sender's life before sources would repeat.
        self.sources = self.sources.saturating_add(1);
        self.queues.push(Queue {
            source: self.sources,
            rx: Some(rx.clone()),
            taken: 0,
        });
        self.sources
    }

    fn get_mut(&mut self, source: u32) -> Option<&mut Queue> {
        let i = self
            .queues
            .binary_search_by_key(&source, |q| q.source)
            .ok()?;
        self.queues.get_mut(i)
    }

    fn get(&self, source: u32) -> Option<&Queue> {
        let i = self
            .queues
            .binary_search_by_key(&source, |q| q.source)
            .ok()?;
        self.queues.get(i)
    }

    /// Takes one payload off queue `source`, without blocking, and numbers it; `None`
    /// when the queue is empty for now.
    pub(crate) fn take(&mut self, source: u32) -> Result<Option<(Origin, Queued)>, Gone> {
        let Some(queue) = self.get_mut(source) else {
            return Err(Gone);
        };
        let Some(rx) = &queue.rx else {
            return Err(Gone);
        };
        match rx.try_recv() {
            Ok(payload) => {
                let origin = Origin {
                    source: queue.source,
                    ord: queue.taken,
                };
                queue.taken += 1;
                Ok(Some((origin, payload)))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Gone),
        }
    }

    /// What was submitted before now: `direct` payloads from `send_logs`, and for each
    /// queue what was taken plus what is waiting in it.
    pub(crate) fn flush_target(&self, direct: u64) -> FlushTarget {
        let mut bounds = vec![(0, direct)];
        for q in &self.queues {
            let waiting = q.rx.as_ref().map_or(0, Intake::len) as u64;
            bounds.push((q.source, q.taken.saturating_add(waiting)));
        }
        FlushTarget { bounds }
    }

    /// How many payloads of `target` still wait in a queue (not taken yet). A queue no
    /// longer registered was taken to its end.
    pub(crate) fn not_taken(&self, target: &FlushTarget) -> usize {
        let mut n = 0u64;
        for &(source, bound) in target.bounds.iter().skip(1) {
            if let Some(q) = self.get(source) {
                n = n.saturating_add(bound.saturating_sub(q.taken));
            }
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Payloads waiting in every queue.
    pub(crate) fn depth(&self) -> u64 {
        self.queues
            .iter()
            .filter_map(|q| q.rx.as_ref())
            .map(|rx| rx.len() as u64)
            .sum()
    }

    /// Forgets retired queues none of whose payloads is outstanding any more: nothing
    /// of theirs is left for a `flush` to wait for (so that a program that drops and
    /// makes entry handles all the time keeps a bounded list).
    fn prune_retired(&mut self, ledger: &Ledger) {
        self.queues
            .retain(|q| q.rx.is_some() || ledger.any_outstanding_from(q.source));
    }

    /// Lets go of queue `source`, empty and without producers: its pool is done with it
    /// (an entry handle's queue, once its batcher is gone). Its counts stay.
    pub(crate) fn retire(&mut self, source: u32) {
        // Kept (without its receiver) while its payloads are outstanding, so that
        // `flush` still bounds what was taken from it and not yet delivered.
        if let Some(q) = self.get_mut(source) {
            q.rx = None;
        }
    }

    /// Takes every queue's receiver (for `close`), each with its source, to be drained
    /// with [`drain`]; the counts stay until [`Queues::handed_back`] moves the drained
    /// payloads to the ledger's handed-back record (in the same hold of this lock).
    pub(crate) fn take_all(&mut self) -> Vec<(u32, Intake)> {
        self.queues
            .iter_mut()
            .filter_map(|q| q.rx.take().map(|rx| (q.source, rx)))
            .collect()
    }

    /// Counts `n` payloads of `source` as taken (`close` took them back); returns the
    /// ordinal of the first.
    pub(crate) fn handed_back(&mut self, source: u32, n: usize) -> u64 {
        match self.get_mut(source) {
            Some(q) => {
                let first = q.taken;
                q.taken = q.taken.saturating_add(n as u64);
                first
            }
            None => 0,
        }
    }
}

/// Takes back what still waits in the queues (for `close`), then lets them go, which
/// makes every producer's `send` fail from then on (handing it its payload back). A
/// producer waiting for room is woken by the taking and completes its send, so the
/// queues are taken from until they stay empty for 2 ms (at most 50 rounds: producers
/// that were not told to stop cannot keep it going); the last round takes what is there
/// right before the receivers go. A payload sent in that very instant is lost with the
/// channel: producers should be told to stop before `close`.
///
/// Returns, per queue source, what was taken back, in queue order.
pub(crate) fn drain(queues: Vec<(u32, Intake)>) -> Vec<(u32, Vec<Queued>)> {
    let mut back: Vec<(u32, Vec<Queued>)> = queues
        .iter()
        .map(|(source, _)| (*source, Vec::new()))
        .collect();
    let take_queued = |back: &mut Vec<(u32, Vec<Queued>)>| {
        for ((_, rx), (_, to)) in queues.iter().zip(back.iter_mut()) {
            for _ in 0..rx.len() {
                match rx.try_recv() {
                    Ok(queued) => to.push(queued),
                    Err(_) => break,
                }
            }
        }
    };
    for _ in 0..50 {
        take_queued(&mut back);
        std::thread::sleep(std::time::Duration::from_millis(2));
        if queues.iter().all(|(_, rx)| rx.is_empty()) {
            break;
        }
    }
    take_queued(&mut back);
    back
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_queue_is_forgotten_once_nothing_of_it_is_outstanding() {
        let mut ledger = Ledger::new(100, 1 << 20);
        let mut queues = Queues::default();
        let (tx, rx) = crossbeam_channel::bounded::<LogPayload>(4);
        let first = queues.register(&Intake::Payloads(rx), &ledger);
        tx.send(LogPayload::default()).ok();
        drop(tx);
        let (origin, _) = match queues.take(first) {
            Ok(Some(taken)) => taken,
            _ => panic!("the payload is there"),
        };
        ledger.reserve(origin, 1);
        assert!(
            queues.take(first).is_err(),
            "empty, and its producer is gone"
        );
        queues.retire(first);
        let target = queues.flush_target(0);
        assert_eq!(target.bounds, vec![(0, 0), (first, 1)]);

        // Its payload is outstanding: registering another queue keeps it.
        let (_tx2, rx2) = crossbeam_channel::bounded::<LogPayload>(4);
        let second = queues.register(&Intake::Payloads(rx2.clone()), &ledger);
        assert_eq!(queues.flush_target(0).bounds.len(), 3);
        // Settled: the next registration forgets it, and only it.
        ledger.unreserve(origin);
        let (_tx3, rx3) = crossbeam_channel::bounded::<LogPayload>(4);
        let third = queues.register(&Intake::Payloads(rx3), &ledger);
        assert_eq!(
            queues.flush_target(0).bounds,
            vec![(0, 0), (second, 0), (third, 0)]
        );
        // Sources are never given out twice.
        assert!(third > second && second > first);
        assert_eq!(queues.register(&Intake::Payloads(rx2), &ledger), second);
    }
}
