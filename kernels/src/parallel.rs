//! Splitting row-parallel work across the process's compute threads.
//!
//! A small fork-join pool instead of rayon: a decode step runs ~250 parallel regions of
//! 20–500 µs each, so the hand-off must cost well under a microsecond while a region is
//! running, and idle cores must not spin between tokens. Workers spin on a generation counter
//! for a short while after each job (the next region usually starts within microseconds),
//! then park on a futex (`std::thread::park`) until the dispatcher unparks them.
//!
//! A job is a set of task indices that every participant claims from a shared counter, and
//! workers enter a job through a gate. When the caller has run out of tasks it closes the
//! gate and waits only for workers that actually entered: a worker that the OS has not
//! scheduled yet (a loaded machine) costs nothing, its share is simply done by others.
//!
//! The calling thread takes part; nested or concurrent calls run serially on the caller
//! instead of deadlocking.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks (between regions of one token the gap is
/// a few µs; between tokens it can be long, and then the core should sleep).
const SPIN: Duration = Duration::from_micros(100);

/// Gate bit: set once the caller has stopped admitting workers to the current job.
const CLOSED: usize = 1 << (usize::BITS - 1);

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Bumped once per job; workers look at the gate when they see a new value.
    generation: AtomicU64,
    /// The current job, as a raw fat pointer (valid while the gate admits or holds workers).
    job: Mutex<Option<JobPtr>>,
    /// Task indices of the current job and the next one to claim.
    tasks: AtomicUsize,
    next: AtomicUsize,
    /// `CLOSED` bit | number of workers inside the current job.
    gate: AtomicUsize,
    /// Threads taking part in jobs (caller included); the rest stay parked.
    active: AtomicUsize,
    /// Per worker: true while parked (so the dispatcher knows to unpark it).
    sleeping: Vec<AtomicBool>,
    panicked: AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointer is only dereferenced by workers inside the gate, and the dispatcher
// does not return (so the job stays alive) until the gate is closed and empty.
unsafe impl Send for JobPtr {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    dispatch: Mutex<()>,
}

thread_local! {
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

static POOL: OnceLock<Pool> = OnceLock::new();

impl Shared {
    /// Claims and runs task indices until none are left.
    fn run_tasks(&self, f: &(dyn Fn(usize) + Sync + '_)) {
        let n = self.tasks.load(Ordering::Acquire);
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= n {
                break;
            }
            f(i);
        }
    }
}

impl Pool {
    fn new(n: usize) -> Self {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            gate: AtomicUsize::new(CLOSED),
            active: AtomicUsize::new(n),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            panicked: AtomicBool::new(false),
        });
        let workers = (1..n)
            .map(|i| {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("onebit-compute-{i}"))
                    .spawn(move || worker(&shared, i))
                    .unwrap_or_else(|e| panic!("cannot start compute thread {i}: {e}"))
                    .thread()
                    .clone()
            })
            .collect();
        Self {
            shared,
            workers,
            dispatch: Mutex::new(()),
        }
    }

    fn threads(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Runs `f(i)` for every `i in 0..tasks`, spread over the caller and the workers.
    fn run<'a>(&self, tasks: usize, f: &'a (dyn Fn(usize) + Sync + 'a)) {
        let helpers = self.threads() - 1;
        let serial = helpers == 0 || tasks <= 1 || IN_JOB.with(Cell::get);
        let guard = if serial {
            None
        } else {
            self.dispatch.try_lock().ok()
        };
        let Some(_guard) = guard else {
            // Nested or concurrent: the caller runs every task itself.
            (0..tasks).for_each(f);
            return;
        };
        let s = &*self.shared;
        // SAFETY: erasing the lifetime is sound because this function does not return before
        // the gate is closed and no worker is inside it, i.e. no one can still call `f`.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        s.tasks.store(tasks, Ordering::Release);
        s.next.store(0, Ordering::Release);
        s.gate.fetch_and(!CLOSED, Ordering::AcqRel);
        s.generation.fetch_add(1, Ordering::Release);
        for (i, w) in self.workers.iter().enumerate().take(helpers) {
            if s.sleeping[i + 1].load(Ordering::Acquire) {
                w.unpark();
            }
        }
        IN_JOB.with(|c| c.set(true));
        let mine = catch_unwind(AssertUnwindSafe(|| s.run_tasks(f)));
        IN_JOB.with(|c| c.set(false));
        s.gate.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while s.gate.load(Ordering::Acquire) & !CLOSED != 0 {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a compute thread panicked (see its message above)");
        }
    }
}

fn worker(s: &Shared, index: usize) {
    IN_JOB.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            s.sleeping[index].store(true, Ordering::SeqCst);
            // Re-check after announcing sleep: a dispatch between the check and the store
            // would otherwise not unpark us.
            if s.generation.load(Ordering::SeqCst) == seen {
                thread::park_timeout(Duration::from_millis(100));
            }
            s.sleeping[index].store(false, Ordering::SeqCst);
        };
        seen = generation;
        if index >= s.active.load(Ordering::Acquire) {
            continue;
        }
        if s.gate.fetch_add(1, Ordering::AcqRel) & CLOSED != 0 {
            // Too late for that job: its tasks are done.
            s.gate.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let job = s.job.lock().unwrap_or_else(|e| e.into_inner()).map(|j| j.0);
        if let Some(job) = job {
            // SAFETY: we are inside the open gate, so the dispatcher keeps the job alive
            // until we leave it below.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| s.run_tasks(f))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.gate.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets the number of compute threads; only the first call (before any kernel runs) counts.
/// Returns false when the pool already exists with another size.
pub fn init_threads(n: usize) -> bool {
    let n = n.max(1);
    POOL.get_or_init(|| Pool::new(n)).threads() == n
}

/// Lets only the first `n` threads of the pool take part (benchmarks sweeping thread
/// counts); `n` is capped at the pool's size. Call between jobs, never inside one.
pub fn set_active_threads(n: usize) -> usize {
    let p = pool();
    let n = n.clamp(1, p.workers.len() + 1);
    p.shared.active.store(n, Ordering::Release);
    n
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::new(thread::available_parallelism().map_or(1, |n| n.get())))
}

pub fn threads() -> usize {
    pool().threads()
}

/// Runs `f(i)` for `i in 0..threads()`, one share per compute thread when all are
/// available (a descheduled thread's share is run by another).
pub fn broadcast(f: impl Fn(usize) + Sync) {
    let p = pool();
    p.run(p.threads(), &f);
}

/// Hands out `0..n` in chunks of `chunk` to all threads; `f(start, end)` per chunk.
/// Dynamic, so a thread slowed by another process does not hold the others back.
pub fn for_range(n: usize, chunk: usize, f: impl Fn(usize, usize) + Sync) {
    let chunk = chunk.max(1);
    if threads() <= 1 || n <= chunk {
        if n > 0 {
            f(0, n);
        }
        return;
    }
    pool().run(n.div_ceil(chunk), &|i| {
        f(i * chunk, (i * chunk + chunk).min(n))
    });
}

/// A raw pointer to an output slice that threads write disjoint parts of.
struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// Through a method, so closures capture the whole (Sync) wrapper, not its field.
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: used only to hand disjoint sub-slices to different threads (see `for_rows_strided`).
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; each thread derives a different, non-overlapping sub-slice.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Runs `f(first_index, chunk)` over chunks of `out` of at least `min_chunk` elements.
pub fn for_rows<T: Send>(out: &mut [T], min_chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_rows_strided(out, 1, min_chunk, f)
}

/// Like [`for_rows`], where each logical row is `stride` elements of `out`; `first` counts rows.
/// A last row shorter than `stride` goes, shortened, to the chunk that holds it.
pub fn for_rows_strided<T: Send>(
    out: &mut [T],
    stride: usize,
    min_rows: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let stride = stride.max(1);
    let len = out.len();
    let rows = len.div_ceil(stride);
    let t = threads();
    if t <= 1 || rows <= min_rows {
        f(0, out);
        return;
    }
    // Several chunks per thread so that a slow thread is balanced dynamically.
    let per = rows.div_ceil(t * 4).max(min_rows);
    let base = SendPtr(out.as_mut_ptr());
    for_range(rows, per, |start, end| {
        // SAFETY: chunks [start, end) handed out by `for_range` never overlap, and their
        // elements [start·stride, min(end·stride, len)) lie inside `out` (start < rows), which
        // stays borrowed mutably for the whole call.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(
                base.get().add(start * stride),
                (end * stride).min(len) - start * stride,
            )
        };
        f(start, chunk);
    });
}

/// Like [`for_rows_strided`] over two outputs with the same number of rows (`a` rows of
/// `stride_a`, `b` rows of `stride_b`): `f(first, a_chunk, b_chunk)`.
pub fn for_rows2<A: Send, B: Send>(
    a: &mut [A],
    stride_a: usize,
    b: &mut [B],
    stride_b: usize,
    min_rows: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (sa, sb) = (stride_a.max(1), stride_b.max(1));
    let rows = (a.len() / sa).min(b.len() / sb);
    let t = threads();
    if t <= 1 || rows <= min_rows {
        f(0, &mut a[..rows * sa], &mut b[..rows * sb]);
        return;
    }
    let per = rows.div_ceil(t * 4).max(min_rows);
    let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
    for_range(rows, per, |start, end| {
        // SAFETY: row ranges from `for_range` are disjoint and inside both slices (end ≤
        // rows), which stay mutably borrowed for the whole call.
        let (ca, cb) = unsafe {
            (
                std::slice::from_raw_parts_mut(pa.get().add(start * sa), (end - start) * sa),
                std::slice::from_raw_parts_mut(pb.get().add(start * sb), (end - start) * sb),
            )
        };
        f(start, ca, cb);
    });
}

/// Splits the columns of a row-major `[rows, row_len]` output across threads: `f(first,
/// parts)` gets, for chunks of at least `min_cols` columns starting at column `first`, one
/// mutable part per row (`parts[r]` is row `r`'s columns `first .. first + len`). A GEMM over
/// a long dimension (the LM head's vocabulary) uses it to give every thread its own slice of
/// the weights for all rows at once.
pub fn for_columns<T: Send>(
    out: &mut [T],
    row_len: usize,
    min_cols: usize,
    f: impl Fn(usize, &mut [&mut [T]]) + Sync,
) {
    if row_len == 0 || out.is_empty() {
        return;
    }
    assert!(
        out.len().is_multiple_of(row_len),
        "for_columns: {} elements are not rows of {row_len}",
        out.len()
    );
    let rows = out.len() / row_len;
    let per = row_len.div_ceil(threads() * 4).max(min_cols.max(1));
    let base = SendPtr(out.as_mut_ptr());
    for_range(row_len, per, |start, end| {
        let mut parts: Vec<&mut [T]> = (0..rows)
            .map(|r| {
                // SAFETY: column ranges from `for_range` are disjoint, so the parts of
                // different chunks never overlap; within a chunk, part `r` lies in row `r`
                // (start < end ≤ row_len) and rows do not overlap; `out` stays mutably
                // borrowed for the whole call.
                unsafe {
                    std::slice::from_raw_parts_mut(base.get().add(r * row_len + start), end - start)
                }
            })
            .collect();
        f(start, &mut parts);
    });
}

/// Runs `f(i)` for `i in 0..n` on the pool.
pub fn for_each_index(n: usize, f: impl Fn(usize) + Sync + Send) {
    for_range(n, 1, |s, e| (s..e).for_each(&f));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once() {
        let mut v = vec![0u32; 10_007];
        for_rows(&mut v, 3, |first, chunk| {
            for (i, x) in chunk.iter_mut().enumerate() {
                *x += (first + i) as u32 + 1;
            }
        });
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32 + 1));
    }

    #[test]
    fn a_short_last_strided_row_is_handed_out_too() {
        let mut v = vec![0u32; 7 * 300 + 5];
        for_rows_strided(&mut v, 7, 2, |first, chunk| {
            for (i, row) in chunk.chunks_mut(7).enumerate() {
                row.fill((first + i) as u32 + 1);
            }
        });
        assert!(v.iter().enumerate().all(|(i, x)| *x == (i / 7) as u32 + 1));
    }

    #[test]
    fn two_outputs_split_alike() {
        let (mut a, mut b) = (vec![0u32; 3 * 1001], vec![0u64; 1001]);
        for_rows2(&mut a, 3, &mut b, 1, 2, |first, ca, cb| {
            for (i, (ra, rb)) in ca.chunks_exact_mut(3).zip(cb.iter_mut()).enumerate() {
                ra.fill((first + i) as u32);
                *rb = (first + i) as u64;
            }
        });
        assert!(b.iter().enumerate().all(|(i, v)| *v == i as u64));
        assert!(a
            .chunks_exact(3)
            .enumerate()
            .all(|(i, r)| r.iter().all(|v| *v == i as u32)));
    }

    #[test]
    fn columns_are_visited_once_in_every_row() {
        let (rows, row_len) = (3, 10_007);
        let mut v = vec![0u32; rows * row_len];
        for_columns(&mut v, row_len, 5, |first, parts| {
            assert_eq!(parts.len(), rows);
            for (r, part) in parts.iter_mut().enumerate() {
                for (i, x) in part.iter_mut().enumerate() {
                    *x += (r * row_len + first + i) as u32 + 1;
                }
            }
        });
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32 + 1));
    }

    #[test]
    fn nested_calls_do_not_deadlock() {
        let total = AtomicUsize::new(0);
        for_each_index(8, |_| {
            for_each_index(8, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn many_small_jobs_complete() {
        let total = AtomicUsize::new(0);
        for _ in 0..2000 {
            for_range(100, 7, |s, e| {
                total.fetch_add(e - s, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 200_000);
    }
}

/// An output buffer that the threads of one parallel region write at disjoint indices
/// (each row or tile is handed to one thread only).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper, not its field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }

    /// The elements `range` as a slice.
    ///
    /// # Safety
    /// `range` lies inside the output, and no other thread touches those elements while the
    /// slice lives.
    pub(crate) unsafe fn rows<'a>(self, range: std::ops::Range<usize>) -> &'a mut [f32] {
        // SAFETY: forwarded from the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}
// SAFETY: threads write disjoint elements (each index is handed out once), so sending the
// pointer to another thread cannot make two writers of one element.
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared references only hand out the pointer, never read through it.
unsafe impl Sync for OutPtr {}

/// Several outputs' rows in one parallel region: job `j` has `lens[j]` rows, the rows of all
/// jobs are split into chunks of `chunk` across the threads, and `f(j, rows)` runs for each
/// piece (a chunk straddling two jobs is cut at their border), so the threads meet once
/// instead of once per job.
pub(crate) fn for_job_rows(
    lens: &[usize],
    chunk: usize,
    f: impl Fn(usize, std::ops::Range<usize>) + Sync,
) {
    let mut starts = Vec::with_capacity(lens.len() + 1);
    let mut total = 0;
    for &n in lens {
        starts.push(total);
        total += n;
    }
    starts.push(total);
    for_range(total, chunk, |start, end| {
        let mut s = start;
        while s < end {
            let j = starts.partition_point(|&x| x <= s) - 1;
            let e = end.min(starts[j + 1]);
            f(j, s - starts[j]..e - starts[j]);
            s = e;
        }
    });
}
