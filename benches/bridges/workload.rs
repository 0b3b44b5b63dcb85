//! The workload every row runs: `THREADS` threads make `n` logging calls in all, each the
//! same line with 2 key-values, as fast as they can (`Pace::Burst`) or at a fixed rate
//! (`Pace::Paced`); every `SAMPLE_EVERY`-th call is timed into a buffer allocated before
//! the window.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Threads that log at once.
pub const THREADS: usize = 4;

/// Every this many calls (per thread), one is timed.
pub const SAMPLE_EVERY: usize = 16;

/// The numbers of line `i`: a user id, a duration in µs, an item count.
fn numbers(i: usize) -> (u64, usize, usize) {
    (1000 + (i % 997) as u64, 200 + (i * 7919) % 9000, i % 50)
}

/// Line `i` through `log`: `info`, target this module's path, 2 key-values, an 80–82
/// byte message formatted from two numbers.
#[inline(never)]
pub fn log_line(i: usize) {
    let (user_id, micros, items) = numbers(i);
    log::info!(
        user_id = user_id,
        path = "/api/v1/items";
        "request handled: GET /api/v1/items returned 200 OK in {micros} us, {items} items from cache"
    );
}

/// The same line through `tracing`: an `info` event with the same 2 fields and message.
#[inline(never)]
pub fn tracing_line(i: usize) {
    let (user_id, micros, items) = numbers(i);
    tracing::info!(
        user_id = user_id,
        path = "/api/v1/items",
        "request handled: GET /api/v1/items returned 200 OK in {micros} us, {items} items from cache"
    );
}

/// Which front end a row's lines go through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    Log,
    Tracing,
}

impl Api {
    pub fn line(self) -> fn(usize) {
        match self {
            Api::Log => log_line,
            Api::Tracing => tracing_line,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::Log => "log",
            Api::Tracing => "tracing",
        }
    }
}

/// What the calling threads measured.
pub struct Calls {
    /// Durations of the sampled calls, nanoseconds, every thread's.
    pub sampled_ns: Vec<u64>,
    /// When the last call returned.
    pub done: Instant,
}

/// How the calling threads pace their calls.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Pace {
    /// As fast as they can: the logger's intake and shipping against 4 busy threads.
    Burst,
    /// This many lines per second in all (each thread a quarter), released every
    /// millisecond: the same load on every logger.
    Paced(f64),
}

/// Starts `THREADS` threads that make `n` calls of `line` in all (line numbers `0..n`,
/// one slice each), runs `open` once they are all ready, then releases them and waits
/// for them.
pub fn run(n: usize, line: fn(usize), pace: Pace, open: impl FnOnce()) -> Calls {
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            let (from, to) = (t * n / THREADS, (t + 1) * n / THREADS);
            std::thread::Builder::new()
                .name(format!("bench-caller-{t}"))
                .spawn(move || {
                    let mut sampled = Vec::with_capacity((to - from) / SAMPLE_EVERY + 1);
                    barrier.wait();
                    let mut ticks = Ticks::new(pace);
                    for i in from..to {
                        ticks.wait_for(i - from);
                        if (i - from) % SAMPLE_EVERY == 0 {
                            let t0 = Instant::now();
                            line(i);
                            sampled.push(t0.elapsed().as_nanos() as u64);
                        } else {
                            line(i);
                        }
                    }
                    (sampled, Instant::now())
                })
                .expect("spawn caller")
        })
        .collect();
    open();
    barrier.wait();
    let mut sampled_ns = Vec::new();
    let mut done = None::<Instant>;
    for thread in threads {
        let (sampled, end) = thread.join().expect("caller panicked");
        sampled_ns.extend(sampled);
        done = Some(done.map_or(end, |d| d.max(end)));
    }
    Calls {
        sampled_ns,
        done: done.expect("a caller"),
    }
}

/// One caller's schedule under `Pace::Paced`: by the end of millisecond `k` it may have
/// made `k × rate / 1000` calls; it sleeps when it is ahead (never when behind).
struct Ticks {
    start: Instant,
    /// Calls per millisecond, this thread's share (0: burst).
    per_ms: f64,
    /// The millisecond whose allowance is in use, and that allowance.
    tick: u32,
    allowed: usize,
}

impl Ticks {
    fn new(pace: Pace) -> Ticks {
        let per_ms = match pace {
            Pace::Burst => 0.0,
            Pace::Paced(rate) => rate / THREADS as f64 / 1000.0,
        };
        let mut ticks = Ticks {
            start: Instant::now(),
            per_ms,
            tick: 0,
            allowed: 0,
        };
        ticks.advance();
        ticks
    }

    fn advance(&mut self) {
        self.tick += 1;
        self.allowed = (f64::from(self.tick) * self.per_ms) as usize;
    }

    /// Waits until call `k` (of this thread) is due.
    #[inline]
    fn wait_for(&mut self, k: usize) {
        if self.per_ms == 0.0 {
            return;
        }
        while k >= self.allowed {
            let due = self.start + Duration::from_millis(u64::from(self.tick));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.advance();
        }
    }
}
