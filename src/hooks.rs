//! Test-only pause points, compiled in with the `test-hooks` feature (off by default).
//!
//! A race test makes a logsender thread stop at a named point for a while, so that the
//! interleaving it tests really happens, and reads how often the point was reached to
//! prove it. Without the feature, `pause` is an empty inline function.

/// A place in logsender's code where a test can make a thread pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Point {
    /// A worker found no room in the buffer, checked that the sender is not closing,
    /// and is about to wait for room (the window of a lost wake-up at close).
    BeforeRoomWait,
    /// The supervisor is about to rotate an epoch that reached `commit_every` (the
    /// window in which the collector's status and logsender's half-close cross).
    BeforeRotate,
    /// `start_worker_pool` (or `entry_sender`) found the sender open and is about to
    /// register its queue and spawn its workers (the window a `shutdown` may start in).
    BeforePoolSpawn,
    /// The supervisor has just given a payload rejected alone a strike: it is held back
    /// before its next try.
    AfterStrike,
    /// A spool sync has taken the files written since the last sync and is about to
    /// sync them (the window in which another sync finds nothing left to take).
    WhileSpoolSyncs,
}

#[cfg(feature = "test-hooks")]
mod imp {
    use super::Point;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    const POINTS: usize = 5;
    #[allow(clippy::declare_interior_mutable_const)] // only to initialise the arrays
    const ZERO: AtomicU64 = AtomicU64::new(0);
    static PAUSE_MICROS: [AtomicU64; POINTS] = [ZERO; POINTS];
    static HITS: [AtomicU64; POINTS] = [ZERO; POINTS];

    fn index(point: Point) -> usize {
        match point {
            Point::BeforeRoomWait => 0,
            Point::BeforeRotate => 1,
            Point::BeforePoolSpawn => 2,
            Point::AfterStrike => 3,
            Point::WhileSpoolSyncs => 4,
        }
    }

    /// Makes every thread that reaches `point` pause for `d` (zero: no pause).
    pub fn set_pause(point: Point, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        PAUSE_MICROS[index(point)].store(micros, Ordering::SeqCst);
    }

    /// How often a thread paused at `point` (reached it while a pause was set).
    pub fn hits(point: Point) -> u64 {
        HITS[index(point)].load(Ordering::SeqCst)
    }

    pub(crate) fn pause(point: Point) {
        let micros = PAUSE_MICROS[index(point)].load(Ordering::Relaxed);
        if micros > 0 {
            HITS[index(point)].fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

#[cfg(feature = "test-hooks")]
pub use imp::{hits, set_pause};

#[cfg(feature = "test-hooks")]
pub(crate) use imp::pause;

/// Without the `test-hooks` feature: nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn pause(_point: Point) {}
