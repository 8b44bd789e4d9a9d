//! The epoch ticker: advances the engine's epoch every [`limits::EPOCH_TICK`] while a
//! policy call is in flight, and sleeps while none is.
//!
//! Ticking forever cost a thread waking 4,000 times a second even on an idle gateway
//! (about 5% of a loaded gateway's CPU, measured). Only a call in flight reads the
//! epoch, so the ticker parks when the last call ends and the first call to begin wakes
//! it. On waking, its first tick falls on the next point of a fixed grid (every tick
//! since start), so where that tick lands in a call is as random as with a ticker that
//! never stopped, and the tick sampling of a call's run time stays unbiased (short of the
//! wake-up latency, tens of microseconds).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::limits::EPOCH_TICK;

struct Shared {
    /// Calls in flight: the ticker runs while this is above zero.
    active: AtomicUsize,
    stop: AtomicBool,
    /// Ticks since start (readable without the engine; see `run_time::StretchClock`).
    ticks: Arc<AtomicU64>,
}

/// Handle to the ticker thread; dropping it stops the thread.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

impl EpochTicker {
    /// Starts the (parked) ticker thread for `engine`.
    pub(super) fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { active: AtomicUsize::new(0), stop: AtomicBool::new(false), ticks: Arc::new(AtomicU64::new(0)) });
        let state = shared.clone();
        let handle = std::thread::Builder::new().name("tollgate-epoch".into()).spawn(move || run(&engine, &state))?;
        Ok(Self { shared, thread: handle.thread().clone() })
    }

    /// The tick count.
    pub(super) fn ticks(&self) -> &Arc<AtomicU64> {
        &self.shared.ticks
    }

    /// A call begins: the ticker runs until every call begun has ended.
    pub(super) fn call_started(&self) {
        if self.shared.active.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
    }

    /// A call ended (once per [`EpochTicker::call_started`]).
    pub(super) fn call_ended(&self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// The time from `elapsed` to the next multiple of `tick`.
fn until_next_tick(elapsed: Duration, tick: Duration) -> Duration {
    let tick_nanos = tick.as_nanos().max(1);
    let into = elapsed.as_nanos() % tick_nanos;
    Duration::from_nanos(u64::try_from(tick_nanos - into).unwrap_or(u64::MAX))
}

fn run(engine: &Engine, shared: &Shared) {
    let origin = Instant::now();
    let mut was_idle = true;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.active.load(Ordering::SeqCst) == 0 {
            was_idle = true;
            // `unpark` before `park` makes `park` return at once: no wake-up is lost.
            std::thread::park();
            continue;
        }
        let wait = if std::mem::take(&mut was_idle) { until_next_tick(origin.elapsed(), EPOCH_TICK) } else { EPOCH_TICK };
        std::thread::sleep(wait);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        engine.increment_epoch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tick_after_waking_falls_on_the_grid() {
        let tick = Duration::from_micros(250);
        assert_eq!(until_next_tick(Duration::from_micros(1_000), tick), tick);
        assert_eq!(until_next_tick(Duration::from_micros(1_100), tick), Duration::from_micros(150));
        assert_eq!(until_next_tick(Duration::from_micros(1_249), tick), Duration::from_micros(1));
    }

    #[test]
    fn ticks_only_while_a_call_is_in_flight() -> Result<(), Box<dyn std::error::Error>> {
        let engine = Engine::default();
        let ticker = EpochTicker::start(engine)?;
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(ticker.ticks().load(Ordering::Relaxed), 0, "an idle ticker ticked");
        ticker.call_started();
        std::thread::sleep(Duration::from_millis(20));
        ticker.call_ended();
        let ran = ticker.ticks().load(Ordering::Relaxed);
        assert!(ran >= 2, "only {ran} ticks in 20 ms of a call");
        // One more tick may land as the ticker notices the call ended (late on a loaded
        // machine); then none.
        std::thread::sleep(Duration::from_millis(20));
        let settled = ticker.ticks().load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(ticker.ticks().load(Ordering::Relaxed), settled, "the ticker kept ticking with no call in flight");
        Ok(())
    }
}
