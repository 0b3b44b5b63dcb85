//! The worker queues intake reads, and how far it has read each one: taking a payload
//! off a queue and numbering it happen under one lock (the caller's), so that `flush`
//! can tell exactly which payloads were submitted before it began.

use crossbeam_channel::{Receiver, TryRecvError};

use crate::ledger::Origin;
use crate::model::LogPayload;

/// One registered queue.
struct Queue {
    /// The queue's `Origin::source` (1, 2, ...; 0 is `send_logs`).
    source: u32,
    rx: Receiver<LogPayload>,
    /// Payloads taken from it so far (the next one's `Origin::ord`).
    taken: u64,
}

/// What `flush` waits for: per source, the `ord` below which a payload was submitted
/// before the flush began.
pub(crate) struct FlushTarget {
    /// `(source, ord)` bounds, `send_logs` (source 0) first.
    pub(crate) bounds: Vec<(u32, u64)>,
}

/// Every queue a worker pool reads.
#[derive(Default)]
pub(crate) struct Queues {
    queues: Vec<Queue>,
}

/// The queue is empty and every producer is gone (or it was never registered).
pub(crate) struct Gone;

impl Queues {
    /// Registers a queue (or finds it, if the same channel was registered before);
    /// returns its index.
    pub(crate) fn register(&mut self, rx: &Receiver<LogPayload>) -> usize {
        if let Some(i) = self.queues.iter().position(|q| q.rx.same_channel(rx)) {
            return i;
        }
        let source = u32::try_from(self.queues.len() + 1).unwrap_or(u32::MAX);
        self.queues.push(Queue {
            source,
            rx: rx.clone(),
            taken: 0,
        });
        self.queues.len() - 1
    }

    /// Takes one payload off queue `index`, without blocking, and numbers it; `None`
    /// when the queue is empty for now.
    pub(crate) fn take(&mut self, index: usize) -> Result<Option<(Origin, LogPayload)>, Gone> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Err(Gone);
        };
        match queue.rx.try_recv() {
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
            bounds.push((q.source, q.taken.saturating_add(q.rx.len() as u64)));
        }
        FlushTarget { bounds }
    }

    /// How many payloads of `target` still wait in a queue (not taken yet).
    pub(crate) fn not_taken(&self, target: &FlushTarget) -> usize {
        let mut n = 0u64;
        for &(source, bound) in target.bounds.iter().skip(1) {
            if let Some(q) = self.queues.iter().find(|q| q.source == source) {
                n = n.saturating_add(bound.saturating_sub(q.taken));
            }
        }
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Payloads waiting in every queue.
    pub(crate) fn depth(&self) -> u64 {
        self.queues.iter().map(|q| q.rx.len() as u64).sum()
    }

    /// Unregisters every queue (for `close`), to be drained with [`drain`] outside the
    /// lock.
    pub(crate) fn take_all(&mut self) -> Vec<Receiver<LogPayload>> {
        self.queues.drain(..).map(|q| q.rx).collect()
    }
}

/// Takes back what still waits in the queues (for `close`), then lets them go, which
/// makes every producer's `send` fail from then on (handing it its payload back). A
/// producer waiting for room is woken by the taking and completes its send, so the
/// queues are taken from until they stay empty for 2 ms (at most 50 rounds: producers
/// that were not told to stop cannot keep it going); the last round takes what is there
/// right before the receivers go. A payload sent in that very instant is lost with the
/// channel: producers should be told to stop before `close`.
pub(crate) fn drain(queues: Vec<Receiver<LogPayload>>) -> Vec<LogPayload> {
    let mut back = Vec::new();
    let take_queued = |back: &mut Vec<LogPayload>| {
        for rx in &queues {
            back.extend(rx.try_iter().take(rx.len()));
        }
    };
    for _ in 0..50 {
        take_queued(&mut back);
        std::thread::sleep(std::time::Duration::from_millis(2));
        if queues.iter().all(Receiver::is_empty) {
            break;
        }
    }
    take_queued(&mut back);
    back
}
