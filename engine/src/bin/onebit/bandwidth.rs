//! Read-bandwidth microbenchmark: every compute thread streams its share of a buffer much
//! larger than the last-level cache, as the decode GEMVs stream the weights.

use onebit_kernels::parallel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Buffer size: four times the last-level cache (so at most a quarter can hit), at least
/// 1 GiB, at most 4 GiB; `ONEBIT_BW_MIB` overrides it.
pub fn buffer_bytes() -> usize {
    if let Some(b) = std::env::var("ONEBIT_BW_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return b.max(1) << 20;
    }
    let llc = llc_bytes().unwrap_or(64 << 20);
    (4 * llc).clamp(1 << 30, 4 << 30)
}

/// The largest cache the kernel reports for cpu0.
fn llc_bytes() -> Option<usize> {
    let mut best = None;
    for i in 0..8 {
        let p = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(s) = std::fs::read_to_string(p) else {
            break;
        };
        let s = s.trim();
        let (num, mul) = match s.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match s.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (s, 1),
            },
        };
        if let Ok(n) = num.parse::<usize>() {
            best = best.max(Some(n * mul));
        }
    }
    best
}

/// XOR of every 64-bit word: cheap enough that memory, not the core, is the limit, and
/// its result is used so the reads cannot be optimized away. The slice is read as four
/// interleaved sequential streams a quarter apart — the access pattern the decode GEMV and
/// LM head use, and the one this machine's prefetchers stream fastest (a single stream per
/// core under-reads by ~20 %).
fn xor_all(buf: &[u64]) -> u64 {
    let quarter = buf.len() / 4 / 8 * 8;
    let parts: Vec<&[u64]> = (0..4)
        .map(|i| &buf[i * quarter..(i + 1) * quarter])
        .collect();
    let mut acc = [0u64; 8];
    for c in 0..quarter / 8 {
        for p in &parts {
            for (a, w) in acc.iter_mut().zip(&p[c * 8..c * 8 + 8]) {
                *a ^= w;
            }
        }
    }
    for w in &buf[4 * quarter..] {
        acc[0] ^= w;
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// Measured read bandwidth in GB/s with the pool's current thread count: the best of
/// `passes` full passes over a fresh buffer (the first touch is excluded).
pub fn measure(passes: usize) -> f64 {
    let words = buffer_bytes() / 8;
    let mut buf = vec![0u64; words];
    let threads = parallel::threads();
    let per = words.div_ceil(threads);
    // Touch in parallel so that pages are spread like the weights' pages.
    parallel::for_rows(&mut buf, 1 << 16, |first, chunk| {
        for (i, w) in chunk.iter_mut().enumerate() {
            *w = (first + i) as u64;
        }
    });
    let sink = AtomicU64::new(0);
    let mut best = 0f64;
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        parallel::broadcast(|t| {
            let start = (t * per).min(words);
            let end = ((t + 1) * per).min(words);
            sink.fetch_xor(xor_all(&buf[start..end]), Ordering::Relaxed);
        });
        let dt = t0.elapsed().as_secs_f64();
        best = best.max((words * 8) as f64 / dt / 1e9);
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    best
}
