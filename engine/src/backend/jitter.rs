//! Dispatch-to-completion latency statistics for `onebit jitter`: percentiles, a
//! log-scale histogram as text and as a hand-written SVG, and the GPU clock policy.

use std::fmt::Write as _;
use std::path::Path;

use onebit_drv::io::KernelIo;

/// One measured series (latencies in nanoseconds).
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub samples_ns: Vec<u64>,
}

/// Summary of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
fn rank(sorted: &[u64], p: f64) -> u64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// Statistics of `samples` (empty → None).
pub fn stats(samples: &[u64]) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    Some(Stats {
        n: s.len(),
        min: s[0],
        p50: rank(&s, 0.5),
        p99: rank(&s, 0.99),
        p999: rank(&s, 0.999),
        max: s[s.len() - 1],
        mean: s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64,
    })
}

/// The raw samples as CSV (`series,run,ns`, one line per dispatch), for analysis elsewhere.
pub fn csv(series: &[Series]) -> String {
    let mut o = String::from("series,run,ns\n");
    for s in series {
        // Names are ours (no commas or quotes), but quote them so a reader never guesses.
        let name = s.name.replace('"', "'");
        for (i, ns) in s.samples_ns.iter().enumerate() {
            let _ = writeln!(o, "\"{name}\",{i},{ns}");
        }
    }
    o
}

/// The raw samples, their statistics and the conditions they were taken under (pinning,
/// scheduling, locking, clock policy) as one JSON document.
pub fn json(series: &[Series], conditions: &[(String, String)]) -> serde_json::Value {
    let series: Vec<serde_json::Value> = series
        .iter()
        .map(|s| {
            let st = stats(&s.samples_ns);
            serde_json::json!({
                "name": s.name,
                "samples_ns": s.samples_ns,
                "stats": st.map(|t| serde_json::json!({
                    "n": t.n, "min": t.min, "p50": t.p50, "p99": t.p99,
                    "p999": t.p999, "max": t.max, "mean": t.mean,
                })),
            })
        })
        .collect();
    let conditions: serde_json::Map<String, serde_json::Value> = conditions
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({ "conditions": conditions, "series": series })
}

/// A histogram over logarithmic bins shared by all series.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `bins + 1` bin edges in ns.
    pub edges: Vec<f64>,
    /// Per series, counts per bin.
    pub counts: Vec<Vec<u64>>,
}

/// Bins every series on one log scale from the smallest to the largest sample.
pub fn histogram(series: &[Series], bins: usize) -> Histogram {
    let all = series.iter().flat_map(|s| s.samples_ns.iter().copied());
    let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (1.0, 2.0)
    } else {
        ((lo.max(1)) as f64, (hi.max(lo + 1)) as f64 * 1.0001)
    };
    let bins = bins.max(1);
    let edges: Vec<f64> = (0..=bins)
        .map(|i| lo * (hi / lo).powf(i as f64 / bins as f64))
        .collect();
    let counts = series
        .iter()
        .map(|s| {
            let mut c = vec![0u64; bins];
            for &v in &s.samples_ns {
                let b = (((v.max(1) as f64 / lo).ln() / (hi / lo).ln()) * bins as f64).floor();
                c[(b.max(0.0) as usize).min(bins - 1)] += 1;
            }
            c
        })
        .collect();
    Histogram { edges, counts }
}

/// `1.23 µs`-style formatting.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The report as text: a stats line per series, then the histogram as bars.
pub fn text(series: &[Series], policy: &[(String, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "clock policy (power_dpm_force_performance_level):");
    if policy.is_empty() {
        let _ = writeln!(
            out,
            "  no amdgpu card in /sys/class/drm (not an AMD GPU machine)"
        );
    }
    for (card, level) in policy {
        let _ = writeln!(out, "  {card}: {level}");
    }
    for s in series {
        if let Some(st) = stats(&s.samples_ns) {
            let _ = writeln!(
                out,
                "{:<24} n={} min={} p50={} p99={} p99.9={} max={} mean={}",
                s.name,
                st.n,
                fmt_ns(st.min as f64),
                fmt_ns(st.p50 as f64),
                fmt_ns(st.p99 as f64),
                fmt_ns(st.p999 as f64),
                fmt_ns(st.max as f64),
                fmt_ns(st.mean)
            );
        }
    }
    let h = histogram(series, 24);
    for (s, counts) in series.iter().zip(&h.counts) {
        let _ = writeln!(out, "\n{}:", s.name);
        let top = counts.iter().copied().max().unwrap_or(1).max(1);
        for (i, c) in counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let bar = "#".repeat(((*c as f64 / top as f64) * 50.0).ceil() as usize);
            let _ = writeln!(
                out,
                "  {:>10} – {:>10} {:>7} {bar}",
                fmt_ns(h.edges[i]),
                fmt_ns(h.edges[i + 1]),
                c
            );
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The histogram as an SVG: one colour per series, dashed lines at each p50/p99/p99.9.
pub fn svg(series: &[Series], title: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 420.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 60.0;
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let bins = 40;
    let h = histogram(series, bins);
    let (lo, hi) = (h.edges[0], h.edges[bins]);
    let x_of = |ns: f64| L + (ns.max(lo) / lo).ln() / (hi / lo).ln() * (W - L - R);
    let top = h.counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let y_of = |c: f64| H - B - c / top * (H - T - B);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let _ = writeln!(
        o,
        r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        H - B,
        W - R,
        H - B
    );
    let _ = writeln!(
        o,
        r#"<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>"#,
        H - B
    );
    for i in 0..=4 {
        let ns = lo * (hi / lo).powf(i as f64 / 4.0);
        let x = x_of(ns);
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - B + 16.0,
            fmt_ns(ns)
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">dispatch → completion latency (log scale)</text>"#,
        (L + W - R) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        o,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">runs</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    for (si, (s, counts)) in series.iter().zip(&h.counts).enumerate() {
        let c = colours[si % colours.len()];
        for (i, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (x0, x1) = (x_of(h.edges[i]), x_of(h.edges[i + 1]));
            let y = y_of(*n as f64);
            let _ = writeln!(
                o,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{c}" fill-opacity="0.55"/>"#,
                (x1 - x0).max(1.0),
                H - B - y
            );
        }
        if let Some(st) = stats(&s.samples_ns) {
            for (label, v) in [("p50", st.p50), ("p99", st.p99), ("p99.9", st.p999)] {
                let x = x_of(v as f64);
                let _ = writeln!(
                    o,
                    r#"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="{c}" stroke-dasharray="4 3"/>"#,
                    H - B
                );
                let _ = writeln!(
                    o,
                    r#"<text x="{:.1}" y="{}" fill="{c}" font-size="10">{label}</text>"#,
                    x + 2.0,
                    T + 10.0 + 12.0 * si as f64
                );
            }
            let _ = writeln!(
                o,
                r#"<text x="{}" y="{}" fill="{c}">{}: p50 {} · p99 {} · p99.9 {} (n={})</text>"#,
                L + 10.0,
                T + 40.0 + 16.0 * si as f64,
                esc(&s.name),
                fmt_ns(st.p50 as f64),
                fmt_ns(st.p99 as f64),
                fmt_ns(st.p999 as f64),
                st.n
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

/// `power_dpm_force_performance_level` of every DRM card that has one.
pub fn clock_policy(io: &dyn KernelIo) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(cards) = io.read_dir(Path::new("/sys/class/drm")) else {
        return out;
    };
    for card in cards
        .iter()
        .filter(|c| c.starts_with("card") && !c.contains('-'))
    {
        let p = format!("/sys/class/drm/{card}/device/power_dpm_force_performance_level");
        if let Ok(level) = io.read_to_string(Path::new(&p)) {
            out.push((card.clone(), level.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_samples_survive_csv_and_json() {
        let s = vec![
            Series {
                name: "igpu empty kernel, poll".into(),
                samples_ns: vec![1200, 900, 4000],
            },
            Series {
                name: "b".into(),
                samples_ns: vec![7],
            },
        ];
        let c = csv(&s);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], "series,run,ns");
        assert_eq!(lines.len(), 1 + 4);
        assert_eq!(lines[3], "\"igpu empty kernel, poll\",2,4000");
        assert_eq!(lines[4], "\"b\",0,7");
        let j = json(&s, &[("pin_cpu".into(), "1".into())]);
        assert_eq!(j["conditions"]["pin_cpu"], "1");
        assert_eq!(
            j["series"][0]["samples_ns"],
            serde_json::json!([1200, 900, 4000])
        );
        assert_eq!(j["series"][0]["stats"]["p50"], 1200);
        assert_eq!(j["series"][1]["stats"]["max"], 7);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        let s = stats(&v).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p99, s.p999, s.max),
            (1, 500, 990, 999, 1000)
        );
        assert_eq!(s.mean, 500.5);
        assert!(stats(&[]).is_none());
        assert_eq!(stats(&[7]).unwrap().p999, 7);
    }

    #[test]
    fn histogram_counts_every_sample_once() {
        let s = vec![
            Series {
                name: "a".into(),
                samples_ns: vec![1000, 1000, 2000, 50_000],
            },
            Series {
                name: "b".into(),
                samples_ns: vec![3000, 1_000_000],
            },
        ];
        let h = histogram(&s, 10);
        assert_eq!(h.edges.len(), 11);
        assert_eq!(h.counts[0].iter().sum::<u64>(), 4);
        assert_eq!(h.counts[1].iter().sum::<u64>(), 2);
        assert_eq!(
            h.counts[0][0], 2,
            "the smallest samples land in the first bin"
        );
        assert_eq!(h.counts[1][9], 1, "the largest lands in the last");
    }

    #[test]
    fn svg_and_text_mention_every_series_and_percentile() {
        let s = vec![Series {
            name: "empty <kernel>".into(),
            samples_ns: (1..500).map(|i| 1000 + i * 7).collect(),
        }];
        let svg = svg(&s, "igpu jitter");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("empty &lt;kernel&gt;") && svg.contains("p99.9"));
        let t = text(&s, &[("card1".into(), "auto".into())]);
        assert!(t.contains("card1: auto") && t.contains("p99.9="), "{t}");
    }

    #[test]
    fn clock_policy_reads_sysfs_through_kernel_io() {
        let emu = onebit_drv::emu::Emulator::builder()
            .with_file(
                "/sys/class/drm/card1/device/power_dpm_force_performance_level",
                "high\n",
            )
            .with_file("/sys/class/drm/card1-eDP-1/status", "connected\n")
            .with_file("/sys/class/drm/renderD128/dev", "226:128\n")
            .build();
        assert_eq!(
            clock_policy(emu.io().as_ref()),
            vec![("card1".to_string(), "high".to_string())]
        );
    }
}
