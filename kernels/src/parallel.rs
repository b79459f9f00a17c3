//! Splitting row-parallel work across the process's compute threads.

use rayon::prelude::*;
use std::sync::OnceLock;

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Sets the number of compute threads; only the first call (before any kernel runs) counts.
/// Returns false when the pool already exists with another size.
pub fn init_threads(n: usize) -> bool {
    let n = n.max(1);
    let pool = POOL.get_or_init(|| build(n));
    pool.current_num_threads() == n
}

fn build(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("onebit-compute-{i}"))
        .build()
        .unwrap_or_else(|e| panic!("cannot start {n} compute threads: {e}"))
}

fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| build(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

pub fn threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f(first_index, chunk)` over chunks of `out` of at least `min_chunk` elements.
pub fn for_rows<T: Send>(out: &mut [T], min_chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_rows_strided(out, 1, min_chunk, f)
}

/// Like [`for_rows`], where each logical row is `stride` elements of `out`; `first` counts rows.
pub fn for_rows_strided<T: Send>(
    out: &mut [T],
    stride: usize,
    min_rows: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let rows = out.len() / stride.max(1);
    let t = threads();
    if t <= 1 || rows <= min_rows {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(t * 4).max(min_rows);
    pool().install(|| {
        out.par_chunks_mut(per * stride)
            .enumerate()
            .for_each(|(i, chunk)| f(i * per, chunk));
    });
}

/// Runs `f(i)` for `i in 0..n` on the pool.
pub fn for_each_index(n: usize, f: impl Fn(usize) + Sync + Send) {
    if threads() <= 1 || n <= 1 {
        (0..n).for_each(f);
        return;
    }
    pool().install(|| (0..n).into_par_iter().for_each(f));
}
