//! Prometheus metrics. Names mirror llama-server's `llamacpp:*` with an `onebit:` prefix
//! so existing dashboards work after a rename; the latency histograms are onebit's own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::backend::{Health, Surface};

/// Upper bounds (seconds) of the latency histograms' buckets.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the batch-size histograms' buckets (rows per engine step).
const ROWS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A Prometheus histogram over fixed bucket bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistInner>,
}

/// A latency histogram (seconds).
impl Default for Histogram {
    fn default() -> Self {
        Self::new(SECONDS)
    }
}

struct HistInner {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            inner: Mutex::new(HistInner {
                counts: vec![0; bounds.len()],
                count: 0,
                sum: 0.0,
            }),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    pub fn observe_value(&self, v: f64) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&h.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            h.count, h.sum, h.count
        );
    }
}

/// A histogram of row counts (batch sizes).
pub struct RowsHistogram(Histogram);

impl Default for RowsHistogram {
    fn default() -> Self {
        Self(Histogram::new(ROWS))
    }
}

impl std::ops::Deref for RowsHistogram {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0
    }
}

/// Seconds kept as whole microseconds so they fit an atomic.
#[derive(Default)]
pub struct Seconds(AtomicU64);

impl Seconds {
    pub fn add(&self, d: Duration) {
        self.0.fetch_add(d.as_micros() as u64, Relaxed);
    }
    pub fn get(&self) -> f64 {
        self.0.load(Relaxed) as f64 / 1e6
    }
}

#[derive(Default)]
pub struct Metrics {
    pub prompt_tokens: AtomicU64,
    pub prompt_seconds: Seconds,
    pub prompt_cached_tokens: AtomicU64,
    pub predicted_tokens: AtomicU64,
    pub predicted_seconds: Seconds,
    pub requests_processing: AtomicU64,
    pub requests_deferred: AtomicU64,
    pub requests_total: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub n_decode: AtomicU64,
    /// Sum over decode calls of the sessions in each, for the busy-slots average.
    pub busy_slot_steps: AtomicU64,
    pub n_tokens_max: AtomicU64,
    /// Speculative decoding: draft tokens verified, and those the model kept.
    pub drafted_tokens: AtomicU64,
    pub accepted_tokens: AtomicU64,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    /// Wall time of one engine step: how long every running stream waits for its next
    /// token, prompt chunks fed in the same step included.
    pub step_seconds: Histogram,
    /// Rows (prompt tokens plus decoded tokens) one engine step feeds: the batch size.
    pub step_rows: RowsHistogram,
    /// Streams that decoded a token in one engine step.
    pub step_decoding: RowsHistogram,
    /// Which surface serves and how it is doing, as the engine thread last saw it.
    surface: Mutex<Option<SurfaceState>>,
}

/// The serving surface as `/health`, `/v1/models` and `/metrics` report it.
#[derive(Clone, Debug, PartialEq)]
pub struct SurfaceState {
    pub serving: Surface,
    pub health: Health,
    /// Sessions moved to another surface after a device fault.
    pub fallbacks: u64,
}

impl Metrics {
    /// Records the engine's surface after a step.
    pub fn set_surface(&self, state: SurfaceState) {
        let mut s = self.surface.lock().unwrap_or_else(|p| p.into_inner());
        if s.as_ref() != Some(&state) {
            *s = Some(state);
        }
    }

    /// The engine's surface, once it has one.
    pub fn surface(&self) -> Option<SurfaceState> {
        self.surface
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::new();
        let ld = |a: &AtomicU64| a.load(Relaxed);
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let mut put = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                o,
                "# HELP onebit:{name} {help}\n# TYPE onebit:{name} {kind}\nonebit:{name} {v}"
            );
        };
        let (pt, ps) = (ld(&self.prompt_tokens), self.prompt_seconds.get());
        let (gt, gs) = (ld(&self.predicted_tokens), self.predicted_seconds.get());
        let decodes = ld(&self.n_decode);
        put(
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            pt as f64,
        );
        put(
            "prompt_seconds_total",
            "counter",
            "Prompt process time.",
            ps,
        );
        put(
            "prompt_tokens_seconds",
            "gauge",
            "Average prompt throughput in tokens/s.",
            rate(pt, ps),
        );
        put(
            "prompt_cached_tokens_total",
            "counter",
            "Prompt tokens reused from the KV cache.",
            ld(&self.prompt_cached_tokens) as f64,
        );
        put(
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            gt as f64,
        );
        put(
            "tokens_predicted_seconds_total",
            "counter",
            "Predict process time.",
            gs,
        );
        put(
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s.",
            rate(gt, gs),
        );
        put(
            "requests_processing",
            "gauge",
            "Number of requests processing.",
            ld(&self.requests_processing) as f64,
        );
        put(
            "requests_deferred",
            "gauge",
            "Number of requests deferred.",
            ld(&self.requests_deferred) as f64,
        );
        put(
            "requests_total",
            "counter",
            "Generation requests accepted.",
            ld(&self.requests_total) as f64,
        );
        put(
            "requests_rejected_total",
            "counter",
            "Generation requests refused with 503 because the queue was full.",
            ld(&self.requests_rejected) as f64,
        );
        let (drafted, accepted) = (ld(&self.drafted_tokens), ld(&self.accepted_tokens));
        put(
            "draft_tokens_total",
            "counter",
            "Speculative draft tokens verified.",
            drafted as f64,
        );
        put(
            "draft_tokens_accepted_total",
            "counter",
            "Speculative draft tokens the model accepted.",
            accepted as f64,
        );
        put(
            "draft_acceptance_rate",
            "gauge",
            "Accepted per verified speculative draft token.",
            rate(accepted, drafted as f64),
        );
        put(
            "n_decode_total",
            "counter",
            "Total number of engine steps.",
            decodes as f64,
        );
        put(
            "n_busy_slots_per_decode",
            "gauge",
            "Average number of busy slots per engine step.",
            rate(ld(&self.busy_slot_steps), decodes as f64),
        );
        put(
            "n_tokens_max",
            "counter",
            "Largest observed n_tokens.",
            ld(&self.n_tokens_max) as f64,
        );
        self.ttft.render(
            &mut o,
            "onebit:time_to_first_token_seconds",
            "Time from request arrival to its first generated token.",
        );
        self.inter_token.render(
            &mut o,
            "onebit:inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.",
        );
        self.step_seconds.render(
            &mut o,
            "onebit:step_seconds",
            "Wall time of one engine step (the wait of every running stream, prompt chunks included).",
        );
        self.step_rows.render(
            &mut o,
            "onebit:step_batch_rows",
            "Rows (prompt plus decoded tokens) fed per engine step.",
        );
        self.step_decoding.render(
            &mut o,
            "onebit:step_decoding_streams",
            "Streams that decoded a token per engine step.",
        );
        if let Some(st) = self.surface() {
            let (state, failed) = match &st.health {
                Health::Ok => ("ok", String::new()),
                Health::Degraded { failed, .. } => ("degraded", failed.to_string()),
            };
            let _ = writeln!(
                o,
                "# HELP onebit:surface_info The compute surface serving requests (1), and the one that failed when degraded.\n# TYPE onebit:surface_info gauge\nonebit:surface_info{{surface=\"{}\",state=\"{state}\",failed=\"{failed}\"}} 1",
                st.serving
            );
            let _ = writeln!(
                o,
                "# HELP onebit:surface_fallbacks_total Sessions moved to the CPU after a device fault.\n# TYPE onebit:surface_fallbacks_total counter\nonebit:surface_fallbacks_total {}",
                st.fallbacks
            );
        }
        let _ = writeln!(
            o,
            "# HELP onebit:process_resident_memory_bytes Resident set size.\n# TYPE onebit:process_resident_memory_bytes gauge\nonebit:process_resident_memory_bytes {}",
            rss_bytes().unwrap_or(0)
        );
        o
    }
}

/// This process's resident set size, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.prompt_tokens.store(10, Relaxed);
        m.prompt_seconds.add(Duration::from_millis(500));
        m.ttft.observe(Duration::from_millis(3));
        m.ttft.observe(Duration::from_secs(100));
        m.step_rows.observe_value(3.0);
        m.step_rows.observe_value(8.0);
        m.step_rows.observe_value(2000.0);
        let t = m.render();
        assert!(t.contains("onebit:step_batch_rows_bucket{le=\"2\"} 0\n"));
        assert!(t.contains("onebit:step_batch_rows_bucket{le=\"4\"} 1\n"));
        assert!(t.contains("onebit:step_batch_rows_bucket{le=\"8\"} 2\n"));
        assert!(t.contains("onebit:step_batch_rows_bucket{le=\"1024\"} 2\n"));
        assert!(t.contains("onebit:step_batch_rows_bucket{le=\"+Inf\"} 3\n"));
        assert!(t.contains("onebit:step_batch_rows_sum 2011\n"));
        assert!(t.contains("onebit:prompt_tokens_total 10\n"));
        assert!(t.contains("onebit:prompt_tokens_seconds 20\n"));
        assert!(t.contains("onebit:time_to_first_token_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(t.contains("onebit:time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(t.contains("onebit:time_to_first_token_seconds_bucket{le=\"30\"} 1\n"));
        assert!(t.contains("onebit:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(t.contains("onebit:time_to_first_token_seconds_count 2\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "not a number in {line:?}");
        }
    }
}
