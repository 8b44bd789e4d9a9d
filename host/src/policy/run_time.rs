//! A policy call's run time: what its CPU deadline and its tenant's CPU share count.
//!
//! Three parts, none of them time the call spent yielded to other requests:
//! - **wasm up to the call's first yield**, sampled by the epoch ticks. A call starts at a
//!   random point between ticks, so a tick lands in that stretch with a chance
//!   proportional to its length, and a tick's worth for each tick caught estimates it
//!   without bias, at no cost to the nine calls in ten that catch none.
//! - **wasm after a yield**, measured from when the call resumed to the next tick (or to
//!   the call's end). Where a yielded call resumes is wherever its worker got back to it,
//!   not a random point: on a worker busy with other requests, mostly mid-tick. A tick's
//!   worth for the stretch to the next tick billed such a call up to twice what it ran, and
//!   a well-behaved call sharing its worker hit its deadline
//!   (`policy_sandbox::a_call_sharing_its_worker_is_billed_for_what_it_ran`).
//! - **imports**, measured by the store's call hook (lifting the arguments and lowering
//!   the results included).
//!
//! Measured on the thread's CPU clock, not the wall clock: time the OS gave other threads
//! is not the guest's (on a loaded machine that failed a policy well within its deadline).
//! Capped by the wall time, in case an async import moved the call to another thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::limits::EPOCH_TICK;

/// One call's run time so far; see the module docs.
pub(crate) struct RunTime {
    /// The runtime's tick count (see `ticker.rs`).
    ticks: Arc<AtomicU64>,
    /// Ticks caught in wasm before the first yield.
    ticks_sampled: u64,
    /// Wasm time measured after yields.
    wasm_measured: Duration,
    /// Time inside imports.
    host_time: Duration,
    /// When the guest entered the import it is in, if any.
    host_entered: Option<StretchClock>,
    /// A tick fell inside an import: the next sampled tick is for time already measured.
    tick_in_host: bool,
    /// Set by the yield as the call resumes: the clocks then. Made at the first yield
    /// (most calls never yield, and pay for no allocation).
    resumed: Option<Arc<Mutex<Option<StretchClock>>>>,
    /// `host_time` when the call last yielded: imports since are measured already.
    host_time_at_yield: Duration,
}

impl RunTime {
    /// Nothing run yet; `ticks` is the runtime's tick count.
    pub(crate) fn new(ticks: Arc<AtomicU64>) -> Self {
        Self {
            ticks,
            ticks_sampled: 0,
            wasm_measured: Duration::ZERO,
            host_time: Duration::ZERO,
            host_entered: None,
            tick_in_host: false,
            resumed: None,
            host_time_at_yield: Duration::ZERO,
        }
    }

    /// The run time so far.
    pub(crate) fn total(&self) -> Duration {
        EPOCH_TICK * u32::try_from(self.ticks_sampled).unwrap_or(u32::MAX) + self.wasm_measured + self.host_time
    }

    /// An epoch tick reached the guest in wasm (the epoch deadline callback).
    pub(crate) fn tick(&mut self) {
        // The callback runs inside the epoch libcall, which the call hook sees as a host
        // call; its time (a yield: waiting for a worker, not running) is not the guest's.
        self.host_entered = None;
        match self.take_resumed() {
            Some(resumed) => {
                self.wasm_measured += self.wasm_between(&resumed, &StretchClock::start(&self.ticks));
                self.tick_in_host = false;
            }
            None => {
                if !std::mem::take(&mut self.tick_in_host) {
                    self.ticks_sampled += 1;
                }
            }
        }
    }

    /// The future the call yields with at a tick: it wakes itself once, as wasmtime's own
    /// yield does, and reads the clocks as the call resumes.
    pub(crate) fn yield_now(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.host_time_at_yield = self.host_time;
        let resumed = self.resumed.get_or_insert_with(Default::default).clone();
        let ticks = self.ticks.clone();
        let mut yielded = false;
        Box::pin(std::future::poll_fn(move |cx| {
            if yielded {
                *resumed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(StretchClock::start(&ticks));
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }))
    }

    /// The guest called an import.
    pub(crate) fn entering_host(&mut self) {
        self.host_entered = Some(StretchClock::start(&self.ticks));
    }

    /// The import the guest called returned.
    pub(crate) fn returned_from_host(&mut self) {
        if let Some(entered) = self.host_entered.take() {
            let (spent, tick_inside) = entered.stop(&self.ticks);
            self.host_time += spent;
            self.tick_in_host |= tick_inside;
        }
    }

    /// The call ended: the stretch since it last resumed is measured too. Returns the
    /// total.
    pub(crate) fn finish(&mut self) -> Duration {
        if let Some(resumed) = self.take_resumed() {
            // Dropped inside an import (its caller gave up while it waited): the stretch
            // ended as the import began; the wait is not run time.
            let end = self.host_entered.take().unwrap_or_else(|| StretchClock::start(&self.ticks));
            self.wasm_measured += self.wasm_between(&resumed, &end);
        }
        self.total()
    }

    fn take_resumed(&self) -> Option<StretchClock> {
        self.resumed.as_ref()?.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// Wasm time from `resumed` to `end`: the thread's time less the imports' in that
    /// stretch (measured already).
    fn wasm_between(&self, resumed: &StretchClock, end: &StretchClock) -> Duration {
        end.since(resumed).saturating_sub(self.host_time.saturating_sub(self.host_time_at_yield))
    }
}

/// The start of a stretch of a call on one thread (an import, or wasm since a yield):
/// the wall clock, the thread's CPU clock and the runtime's tick count.
struct StretchClock {
    wall: Instant,
    cpu: Duration,
    tick: u64,
}

impl StretchClock {
    /// Reads the clocks, then the tick count: a tick while the clocks are read falls
    /// outside the measured time, so the epoch callback samples it as usual.
    fn start(ticks: &AtomicU64) -> Self {
        let (wall, cpu) = (Instant::now(), thread_cpu_time());
        Self { wall, cpu, tick: ticks.load(Ordering::Relaxed) }
    }

    /// The CPU time between `earlier` and this, both read on the thread that ran the
    /// stretch between them (at most the wall time between them).
    fn since(&self, earlier: &StretchClock) -> Duration {
        self.cpu.saturating_sub(earlier.cpu).min(self.wall.saturating_duration_since(earlier.wall))
    }

    /// The CPU time this thread spent since `start` (at most the wall time: an async
    /// import may resume on another thread, whose clock says nothing about this one), and
    /// whether a tick fell inside that time.
    fn stop(self, ticks: &AtomicU64) -> (Duration, bool) {
        let tick_inside = ticks.load(Ordering::Relaxed) != self.tick;
        (StretchClock::start(ticks).since(&self), tick_inside)
    }
}

fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs for `cpu` of this thread's CPU time (however loaded the machine).
    fn spin(cpu: Duration) {
        let started = thread_cpu_time();
        while thread_cpu_time() - started < cpu {
            std::hint::black_box(0u64);
        }
    }

    /// Polls `future` to completion by hand, running `between` while it is pending.
    fn resume_after(mut future: Pin<Box<dyn Future<Output = ()> + Send>>, between: impl FnOnce()) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending(), "the yield returns pending once");
        between();
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn after_a_yield_the_wasm_run_is_measured_and_the_wait_and_imports_are_not() {
        let ticks = Arc::new(AtomicU64::new(0));
        let mut run = RunTime::new(ticks.clone());
        // The first stretch: one tick caught, a tick's worth.
        run.tick();
        assert_eq!(run.total(), EPOCH_TICK);
        // Yielded for 20 ms (not billed), then 2 ms of wasm, an import of 3 ms and 1 ms
        // more wasm before the next tick.
        resume_after(run.yield_now(), || std::thread::sleep(Duration::from_millis(20)));
        spin(Duration::from_millis(2));
        run.entering_host();
        spin(Duration::from_millis(3));
        ticks.fetch_add(1, Ordering::Relaxed);
        run.returned_from_host();
        spin(Duration::from_millis(1));
        run.tick();
        let after_tick = run.total();
        assert!(after_tick >= EPOCH_TICK + Duration::from_millis(6) && after_tick < EPOCH_TICK + Duration::from_millis(12), "{after_tick:?}");
        assert!(run.host_time >= Duration::from_millis(3) && run.wasm_measured >= Duration::from_millis(3), "{:?} {:?}", run.host_time, run.wasm_measured);
        // The stretch after the last resumption to the call's end counts as well.
        resume_after(run.yield_now(), || std::thread::sleep(Duration::from_millis(20)));
        spin(Duration::from_millis(2));
        let total = run.finish();
        assert!(total >= after_tick + Duration::from_millis(2) && total < after_tick + Duration::from_millis(8), "{total:?}");

        // A call dropped while an import waits is billed up to the import, not the wait.
        let mut run = RunTime::new(ticks);
        run.tick();
        resume_after(run.yield_now(), || {});
        spin(Duration::from_millis(2));
        run.entering_host();
        std::thread::sleep(Duration::from_millis(20));
        spin(Duration::from_millis(5));
        let total = run.finish();
        assert!(total >= EPOCH_TICK + Duration::from_millis(2) && total < EPOCH_TICK + Duration::from_millis(5), "{total:?}");
    }
}
