//! Submitting work and waiting for it: one completion signal per submission, waited on by
//! polling (bounded) then KFD interrupts, with a watchdog that destroys a hung queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aql::{barrier_and_packet, dispatch_packet, DispatchArgs, FenceScope, Packet};
use super::events::WaitOutcome;
use super::queue::{AqlQueue, QueueInner};
use super::signal::Signal;
use super::{KfdError, Result};

/// How long to spin on the signal before sleeping in WAIT_EVENTS.
const SPIN: Duration = Duration::from_micros(50);
/// Longest single WAIT_EVENTS sleep (one shared auto-reset event wakes only one waiter;
/// others re-check within this).
const SLICE: Duration = Duration::from_millis(10);

/// Work in flight; wait on it with [`Completion::wait`].
pub struct Completion {
    queue: Arc<QueueInner>,
    signal: Signal,
    index: u64,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Completion(queue {}, packet {})",
            self.queue.queue_id, self.index
        )
    }
}

impl Completion {
    /// Whether the work finished.
    pub fn is_done(&self) -> bool {
        self.signal.value() <= 0
    }

    /// Index of the packet that carries the signal.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Waits up to `budget`. On timeout the queue is destroyed (the watchdog) and
    /// [`KfdError::Hang`] reports its pointers; the device stays usable.
    pub fn wait(&self, budget: Duration) -> Result<()> {
        self.wait_spinning(SPIN, budget)
    }

    /// [`wait`](Self::wait) that polls the signal for `spin` before it sleeps on the
    /// queue's interrupts: `Duration::ZERO` waits on interrupts only, `spin >= budget`
    /// polls only (driver-jitter experiments compare the two).
    pub fn wait_spinning(&self, spin: Duration, budget: Duration) -> Result<()> {
        let start = Instant::now();
        let deadline = start + budget;
        while start.elapsed() < spin.min(budget) {
            if self.is_done() {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        let ints = &self.queue.interrupts;
        let mut interrupts = true;
        loop {
            if self.is_done() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.hang(budget, String::new()));
            }
            let slice = (deadline - now).min(SLICE);
            if !interrupts {
                std::thread::sleep(slice.min(Duration::from_millis(1)));
                continue;
            }
            match ints.wait_any(&[ints.signal, ints.memory, ints.hw], slice) {
                Ok(WaitOutcome::Fired) if !self.is_done() => {
                    // Either another signal's interrupt, or a GPU fault: a fault will not
                    // let this work finish, so report it now instead of at the deadline.
                    let fault = ints.fault_detail();
                    if !fault.is_empty() {
                        return Err(self.hang(start.elapsed(), fault));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "WAIT_EVENTS failed; polling the signal instead");
                    interrupts = false;
                }
            }
        }
    }

    /// CP timestamps (start, end) of the signalled packet, in GPU clock ticks (see
    /// `Device::clock_counters` to relate them to host time).
    pub fn timestamps(&self) -> (u64, u64) {
        self.signal.timestamps()
    }

    fn hang(&self, waited: Duration, fault: String) -> KfdError {
        let q = &self.queue;
        let (rptr, wptr) = (q.rptr(), q.wptr());
        let mut detail = if fault.is_empty() {
            q.interrupts.fault_detail()
        } else {
            fault
        };
        tracing::error!(queue_id = q.queue_id, rptr, wptr, ?waited, %detail, "GPU hang: destroying queue");
        if let Err(e) = q.destroy() {
            let sep = if detail.is_empty() { "" } else { "; " };
            detail = format!("{detail}{sep}destroying the queue also failed: {e}");
        }
        KfdError::Hang {
            queue_id: q.queue_id,
            index: self.index,
            rptr,
            wptr,
            budget: waited,
            detail,
        }
    }
}

/// Several packets submitted together, ordered by barrier bits, sharing one completion
/// signal on the last packet.
#[derive(Debug, Default)]
pub struct Batch {
    packets: Vec<Packet>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds a dispatch (it waits for everything before it: barrier bit forced on). Acquire
    /// scope `None` is refused: a batch's dispatches read what the host or the previous
    /// dispatch wrote, and without an acquire the GPU's scalar cache may still hold the old
    /// values of what its scalar loads read.
    pub fn dispatch(mut self, args: &DispatchArgs) -> Result<Batch> {
        if args.acquire == FenceScope::None {
            return Err(KfdError::Invalid(format!(
                "dispatch {} of the batch (kernel object {:#x}) has acquire scope None: its \
                 scalar loads could read stale cache lines of earlier writes; acquire at Agent \
                 scope (System for the batch's first dispatch)",
                self.packets.len(),
                args.kernel_object
            )));
        }
        let a = DispatchArgs {
            barrier: true,
            ..*args
        };
        self.packets.push(dispatch_packet(&a, 0)?);
        Ok(self)
    }

    /// Adds a barrier-AND on other queues' completions (≤ 5 signal handles).
    pub fn barrier(mut self, deps: &[u64]) -> Result<Batch> {
        self.packets.push(barrier_and_packet(
            deps,
            0,
            FenceScope::System,
            FenceScope::System,
        )?);
        Ok(self)
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

impl AqlQueue {
    /// Launches one kernel; the returned completion fires when it is done and its writes
    /// are visible at its release scope.
    pub fn dispatch(&self, args: &DispatchArgs) -> Result<Completion> {
        self.submit(Batch {
            packets: vec![dispatch_packet(args, 0)?],
        })
    }

    /// Submits a batch; one completion for all of it.
    pub fn submit(&self, batch: Batch) -> Result<Completion> {
        let mut packets = batch.packets;
        if packets.is_empty() {
            return Err(KfdError::Invalid("empty batch".into()));
        }
        for p in &packets {
            if let Packet::Dispatch(d) = p {
                if d.private_segment_size > 0 {
                    // The queue's amd_queue_t describes no scratch backing, so a kernel that
                    // spills would fault on the GPU; refuse it here with the reason.
                    return Err(KfdError::Invalid(format!(
                        "kernel object {:#x} needs {} bytes of scratch per work-item; these queues \
                         provide no scratch memory (compile without spills/stack)",
                        d.kernel_object, d.private_segment_size
                    )));
                }
            }
        }
        let signal = self.inner.signals.take(1)?;
        let last = packets.len() - 1;
        packets[last] = packets[last].with_completion_signal(signal.handle());
        let index = match self.inner.submit(&packets) {
            Ok(i) => i,
            Err(e) => {
                // Nothing references the signal: hand its slot back.
                signal.cancel();
                return Err(e);
            }
        };
        Ok(Completion {
            queue: self.inner.clone(),
            signal,
            index,
        })
    }

    /// Destroys the queue now (what the watchdog does); later submissions fail.
    pub fn destroy(&self) -> Result<()> {
        self.inner.destroy()
    }
}
