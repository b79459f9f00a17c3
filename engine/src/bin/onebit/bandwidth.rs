//! Read-bandwidth probe: every compute thread streams its share of a buffer much larger than
//! the last-level cache, as the decode GEMVs stream the weights, with several read patterns;
//! the probe reports the best. A roofline built on a probe that reads slower than memory can
//! deliver would put engines above 100 % of it, so no single pattern (which one a machine's
//! prefetchers favour differs between CPUs) is trusted alone.

use onebit_kernels::parallel;
use serde::Serialize;
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

/// One way of reading a slice: returns a value that depends on every word (the wrapping
/// sum for `sum`, the XOR for the others), so the reads cannot be optimized away.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub name: &'static str,
    read: fn(&[u64]) -> u64,
}

/// The patterns this CPU can run: the plain loops everywhere, the wide-load ones where the
/// ISA has them.
pub fn patterns() -> Vec<Pattern> {
    let mut p = vec![
        Pattern {
            name: "sum",
            read: sum_stream,
        },
        Pattern {
            name: "xor",
            read: xor_stream,
        },
        Pattern {
            name: "xor4",
            read: xor_four_streams,
        },
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            p.push(Pattern {
                name: "avx2-prefetch",
                read: wide::xor_avx2,
            });
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            p.push(Pattern {
                name: "avx512-prefetch",
                read: wide::xor_avx512_prefetch,
            });
            p.push(Pattern {
                name: "avx512-nt",
                read: wide::xor_avx512_nt,
            });
        }
    }
    p
}

/// A plain streaming sum, one sequential stream per thread: what any program reading its
/// data front to back gets (the compiler vectorizes it).
fn sum_stream(buf: &[u64]) -> u64 {
    buf.iter().fold(0u64, |a, &w| a.wrapping_add(w))
}

/// A streaming XOR with eight independent accumulators, like the OpenMP `reduction(^)`
/// stream loop.
fn xor_stream(buf: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = buf.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, w) in acc.iter_mut().zip(c) {
            *a ^= w;
        }
    }
    rest.iter()
        .fold(acc.iter().fold(0, |a, b| a ^ b), |a, b| a ^ b)
}

/// XOR read as four interleaved sequential streams a quarter apart: the access pattern the
/// decode GEMV and the LM head use (on some CPUs one stream per core under-reads).
fn xor_four_streams(buf: &[u64]) -> u64 {
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

/// Wide-register XOR reads with software prefetch (and non-temporal loads), the patterns
/// hand-tuned STREAM variants use.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    /// Cache lines ahead that the prefetch runs.
    const AHEAD: usize = 16;

    pub fn xor_avx2(buf: &[u64]) -> u64 {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 is present (checked just above).
        unsafe { avx2(buf) }
    }

    pub fn xor_avx512_prefetch(buf: &[u64]) -> u64 {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (checked just above).
        unsafe { avx512::<false>(buf) }
    }

    pub fn xor_avx512_nt(buf: &[u64]) -> u64 {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (checked just above).
        unsafe { avx512::<true>(buf) }
    }

    fn fold_words(words: &[u64]) -> u64 {
        words.iter().fold(0, |a, b| a ^ b)
    }

    #[target_feature(enable = "avx2")]
    fn avx2(buf: &[u64]) -> u64 {
        // SAFETY: every bit pattern of u64s is a valid __m256i; align_to only reinterprets
        // the aligned middle of the slice.
        let (head, body, tail) = unsafe { buf.align_to::<__m256i>() };
        let mut acc = [_mm256_setzero_si256(); 4];
        let chunks = body.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            let ahead = c.as_ptr().wrapping_add(2 * AHEAD) as *const i8;
            // A hint that never faults, even past the end of `buf`.
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            for (a, v) in acc.iter_mut().zip(c) {
                // SAFETY: `v` is an aligned __m256i inside `buf`.
                *a = _mm256_xor_si256(*a, unsafe { _mm256_load_si256(v) });
            }
        }
        for v in rest {
            // SAFETY: as above.
            acc[0] = _mm256_xor_si256(acc[0], unsafe { _mm256_load_si256(v) });
        }
        let x = _mm256_xor_si256(
            _mm256_xor_si256(acc[0], acc[1]),
            _mm256_xor_si256(acc[2], acc[3]),
        );
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` holds exactly one __m256i; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), x) };
        fold_words(&lanes) ^ fold_words(head) ^ fold_words(tail)
    }

    #[target_feature(enable = "avx512f")]
    fn avx512<const NT: bool>(buf: &[u64]) -> u64 {
        // SAFETY: every bit pattern of u64s is a valid __m512i; align_to only reinterprets
        // the 64-byte-aligned middle of the slice.
        let (head, body, tail) = unsafe { buf.align_to::<__m512i>() };
        let mut acc = [_mm512_setzero_si512(); 4];
        let chunks = body.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            let ahead = c.as_ptr().wrapping_add(AHEAD) as *const i8;
            // A hint that never faults, even past the end of `buf`.
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            for (a, v) in acc.iter_mut().zip(c) {
                // SAFETY: `v` is a 64-byte-aligned __m512i inside `buf`, as both loads need.
                let w = unsafe {
                    if NT {
                        _mm512_stream_load_si512(v)
                    } else {
                        _mm512_load_si512(v)
                    }
                };
                *a = _mm512_xor_si512(*a, w);
            }
        }
        for v in rest {
            // SAFETY: as above.
            acc[0] = _mm512_xor_si512(acc[0], unsafe { _mm512_load_si512(v) });
        }
        let x = _mm512_xor_si512(
            _mm512_xor_si512(acc[0], acc[1]),
            _mm512_xor_si512(acc[2], acc[3]),
        );
        let mut lanes = [0u64; 8];
        // SAFETY: `lanes` holds exactly one __m512i; storeu needs no alignment.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), x) };
        fold_words(&lanes) ^ fold_words(head) ^ fold_words(tail)
    }
}

/// What the probe measured: GB/s per pattern (each the best of its passes) and the best.
#[derive(Serialize, Clone, Debug)]
pub struct Probe {
    pub best_gbs: f64,
    pub best_pattern: &'static str,
    pub patterns: Vec<(&'static str, f64)>,
}

impl Probe {
    /// `sum 31.2, xor 33.0, ...` for a report line.
    pub fn describe(&self) -> String {
        self.patterns
            .iter()
            .map(|(n, g)| format!("{n} {g:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Measured read bandwidth with the pool's current thread count: `passes` rounds over a
/// fresh buffer (the first touch is excluded), every pattern once per round so that a noisy
/// moment hits them alike; each pattern keeps its best pass, the probe the best pattern.
pub fn measure(passes: usize) -> Probe {
    measure_over(buffer_bytes(), passes)
}

/// [`measure`] over a buffer of `bytes`.
fn measure_over(bytes: usize, passes: usize) -> Probe {
    let words = bytes / 8;
    let mut buf = vec![0u64; words];
    let threads = parallel::threads();
    // Whole cache lines per thread, so no line is read by two threads.
    let per = words.div_ceil(threads).div_ceil(8) * 8;
    // Touch in parallel so that pages are spread like the weights' pages.
    parallel::for_rows(&mut buf, 1 << 16, |first, chunk| {
        for (i, w) in chunk.iter_mut().enumerate() {
            *w = (first + i) as u64;
        }
    });
    let sink = AtomicU64::new(0);
    let pats = patterns();
    let mut best = vec![0f64; pats.len()];
    for _ in 0..passes.max(1) {
        for (p, b) in pats.iter().zip(best.iter_mut()) {
            let t0 = Instant::now();
            parallel::broadcast(|t| {
                let start = (t * per).min(words);
                let end = ((t + 1) * per).min(words);
                sink.fetch_xor((p.read)(&buf[start..end]), Ordering::Relaxed);
            });
            let dt = t0.elapsed().as_secs_f64();
            *b = b.max((words * 8) as f64 / dt / 1e9);
        }
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    let patterns: Vec<(&'static str, f64)> = pats.iter().map(|p| p.name).zip(best).collect();
    let (best_pattern, best_gbs) =
        patterns
            .iter()
            .copied()
            .fold(("none", 0f64), |a, b| if b.1 > a.1 { b } else { a });
    Probe {
        best_gbs,
        best_pattern,
        patterns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(pattern: &str, words: &[u64]) -> u64 {
        if pattern == "sum" {
            words.iter().fold(0u64, |a, &w| a.wrapping_add(w))
        } else {
            words.iter().fold(0, |a, b| a ^ b)
        }
    }

    proptest! {
        /// Every pattern this CPU runs reads every word exactly once, whatever the length
        /// and the slice's alignment (the wide ones split off an unaligned head and tail).
        #[test]
        fn every_pattern_reads_every_word_once(
            words in proptest::collection::vec(any::<u64>(), 0..700),
            skip in 0usize..9,
        ) {
            let s = &words[skip.min(words.len())..];
            for p in patterns() {
                prop_assert_eq!((p.read)(s), reference(p.name, s), "pattern {}", p.name);
            }
        }
    }

    #[test]
    fn the_probe_reports_its_best_pattern() {
        let p = measure_over(8 << 20, 1);
        assert_eq!(p.patterns.len(), patterns().len());
        let max = p.patterns.iter().map(|x| x.1).fold(0f64, f64::max);
        assert_eq!(p.best_gbs, max);
        assert!(p.patterns.iter().any(|x| x.0 == p.best_pattern));
    }
}
