//! Token sampling with llama.cpp's chain: penalties → top-k → top-p → min-p →
//! temperature → draw. `temperature <= 0` is greedy (argmax, lowest id on ties).
//!
//! The sampler reads either every token's logit or, from a screened head, the exact logits
//! of a set of tokens that holds its top k and every token its penalties touch
//! ([`Sampler::sample_candidates`]); both give the same distribution and the same draw.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables; applied to the last `repeat_last_n` tokens.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// A fixed seed reproduces the output; None draws one from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks ranges; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("repeat_penalty", self.repeat_penalty),
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("{name} must be a finite number, got {v}"));
        }
        if self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// Index of the largest value; the lowest index wins ties; NaN never wins.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// [`argmax`] over `(id, logit)` pairs sorted by id: the lowest id wins ties; NaN never wins.
pub fn argmax_candidates(c: &[(u32, f32)]) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for &(id, v) in c {
        if best.is_none_or(|(_, b)| v > b || b.is_nan()) {
            best = Some((id, v));
        }
    }
    best.map_or(0, |b| b.0)
}

/// `log_softmax(logits)` values of the `n` most likely tokens, most likely first.
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(n - 1, |a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    idx.truncate(n);
    idx.sort_by(|a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    idx.into_iter()
        .map(|i| (i, logits[i as usize] - lse))
        .collect()
}

/// `log_softmax(logits)[id]`.
pub fn logprob(logits: &[f32], id: u32) -> f32 {
    logits[id as usize] - log_sum_exp(logits)
}

pub fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let s: f64 = x.iter().map(|v| f64::from(v - max).exp()).sum();
    max + s.ln() as f32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token given the logits and the tokens so far (for penalties).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let choice = self.choose(logits, history);
        self.finish(choice)
    }

    /// [`sample`](Self::sample) from `(id, logit)` pairs sorted by id that hold, with their
    /// full-head values, every token that can rank among the top k after penalties and every
    /// token the penalties touch (what [`crate::backend::Need::TopK`] asks for). For a greedy
    /// sampler k is 1; otherwise it needs a top-k. It picks what `sample` picks from the full
    /// logits, drawing the same random number.
    pub fn sample_candidates(&mut self, scored: &[(u32, f32)], history: &[u32]) -> u32 {
        let choice = self.choose_candidates(scored, history);
        self.finish(choice)
    }

    /// The tokens [`sample`](Self::sample) may draw with their probabilities, most likely
    /// first (greedy: the argmax alone).
    pub fn distribution(&self, logits: &[f32], history: &[u32]) -> Vec<(u32, f64)> {
        self.probabilities(self.choose(logits, history))
    }

    /// [`distribution`](Self::distribution) from candidates, as
    /// [`sample_candidates`](Self::sample_candidates) reads them.
    pub fn distribution_candidates(
        &self,
        scored: &[(u32, f32)],
        history: &[u32],
    ) -> Vec<(u32, f64)> {
        self.probabilities(self.choose_candidates(scored, history))
    }

    /// A uniform draw in [0, 1) from this sampler's generator (speculative acceptance tests
    /// draft tokens with it, so a fixed seed reproduces those runs too).
    pub fn uniform(&mut self) -> f64 {
        self.rng.gen()
    }

    /// Draws from `dist` (`(id, probability)` summing to 1) with this sampler's generator.
    pub fn draw_from(&mut self, dist: &[(u32, f64)]) -> u32 {
        let r: f64 = self.rng.gen();
        let mut acc = 0.0;
        for (id, q) in dist {
            acc += q;
            if r < acc {
                return *id;
            }
        }
        dist.iter().rev().find(|c| c.1 > 0.0).map_or(0, |c| c.0)
    }

    /// Whether the sampler always takes the (penalised) argmax.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0
    }

    /// Penalties, then greedy's argmax or the top-k ranked.
    fn choose(&self, logits: &[f32], history: &[u32]) -> Choice {
        let mut logits = logits.to_vec();
        self.apply_penalties(history, |id, f| {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f(*l);
            }
        });
        if self.params.temperature <= 0.0 {
            return Choice::Greedy(argmax(&logits));
        }
        Choice::Ranked(candidates(&logits, self.params.top_k))
    }

    fn choose_candidates(&self, scored: &[(u32, f32)], history: &[u32]) -> Choice {
        debug_assert!(self.params.temperature <= 0.0 || self.params.top_k > 0);
        let mut cand = scored.to_vec();
        self.apply_penalties(history, |id, f| {
            if let Ok(i) = cand.binary_search_by_key(&id, |c| c.0) {
                cand[i].1 = f(cand[i].1);
            }
        });
        if self.params.temperature <= 0.0 {
            return Choice::Greedy(argmax_candidates(&cand));
        }
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, by_rank);
            cand.truncate(top_k);
        }
        cand.sort_unstable_by(by_rank);
        Choice::Ranked(cand)
    }

    fn finish(&mut self, choice: Choice) -> u32 {
        match choice {
            Choice::Greedy(id) => id,
            Choice::Ranked(cand) => self.draw(cand),
        }
    }

    fn probabilities(&self, choice: Choice) -> Vec<(u32, f64)> {
        match choice {
            Choice::Greedy(id) => vec![(id, 1.0)],
            Choice::Ranked(cand) => self.truncate(cand),
        }
    }

    /// The tokens a draw can pick and their probabilities, most likely first: `cand` (ranked
    /// by [`by_rank`], cut to the top k) after top-p, min-p and temperature.
    fn truncate(&self, mut cand: Vec<(u32, f32)>) -> Vec<(u32, f64)> {
        let p = &self.params;
        let probs = softmax(&cand);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|q| {
                    acc += q;
                    acc >= f64::from(p.top_p)
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let probs = softmax(&cand);
            let floor = probs[0] * f64::from(p.min_p);
            let keep = probs.iter().take_while(|q| **q >= floor).count();
            cand.truncate(keep.max(1));
        }
        for c in &mut cand {
            c.1 /= p.temperature;
        }
        let probs = softmax(&cand);
        cand.iter().map(|c| c.0).zip(probs).collect()
    }

    fn draw(&mut self, cand: Vec<(u32, f32)>) -> u32 {
        let dist = self.truncate(cand);
        let r: f64 = self.rng.gen();
        let mut acc = 0.0;
        for (id, q) in &dist {
            acc += q;
            if r < acc {
                return *id;
            }
        }
        dist.last().map_or(0, |c| c.0)
    }

    /// Calls `update(id, f)` for each penalized token, `f` mapping its logit to the
    /// penalized one: the repeat penalty on the last `repeat_last_n` tokens, then presence
    /// and frequency on the whole history.
    fn apply_penalties(&self, history: &[u32], mut update: impl FnMut(u32, &dyn Fn(f32) -> f32)) {
        let p = &self.params;
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            let penalize = |l: f32| {
                if l > 0.0 {
                    l / p.repeat_penalty
                } else {
                    l * p.repeat_penalty
                }
            };
            for &id in recent {
                if seen.insert(id) {
                    update(id, &penalize);
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &id in history {
                *counts.entry(id).or_default() += 1;
            }
            for (id, n) in counts {
                update(id, &|l| {
                    l - (p.frequency_penalty * n as f32 + p.presence_penalty)
                });
            }
        }
    }

    /// What a surface must score for this sampler when it can screen its head instead of
    /// producing every logit: `Some((k, recent))` — the top `k` and the last `recent`
    /// history tokens (`usize::MAX`: all) — or None when the sampler needs every logit (no
    /// top-k, so top-p, min-p or the draw normalise over the whole vocabulary).
    pub fn screened_top_k(&self) -> Option<(usize, usize)> {
        let p = &self.params;
        let k = if p.temperature <= 0.0 {
            1
        } else if p.top_k > 0 {
            p.top_k
        } else {
            return None;
        };
        let recent = if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            usize::MAX
        } else if p.repeat_penalty != 1.0 {
            p.repeat_last_n
        } else {
            0
        };
        Some((k, recent))
    }
}

/// What the sampler settled on before any draw.
enum Choice {
    Greedy(u32),
    /// Penalized, cut to the top k, best first.
    Ranked(Vec<(u32, f32)>),
}

/// The order candidates are ranked in: higher logit first, then lower id. A total order,
/// so the ranking of any subset is unique.
fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `top_k` best `(id, logit)` (every one for 0), best first. With a top-k the others
/// are set aside by a linear selection and only the k are sorted, not the whole vocabulary
/// (128k entries for 2B-4T); the ranking being total, the result is the first k of a full
/// sort.
fn candidates(logits: &[f32], top_k: usize) -> Vec<(u32, f32)> {
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, *v))
        .collect();
    if top_k > 0 && top_k < cand.len() {
        cand.select_nth_unstable_by(top_k - 1, by_rank);
        cand.truncate(top_k);
    }
    cand.sort_unstable_by(by_rank);
    cand
}

fn softmax(cand: &[(u32, f32)]) -> Vec<f64> {
    let max = cand.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
    let e: Vec<f64> = cand.iter().map(|c| f64::from(c.1 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_lowest_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn fixed_seed_reproduces() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            seed: Some(42),
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|t| *t != a[0]),
            "temperature 1 should not always pick one token"
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.5f32, 2.0, 1.0];
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            temperature: 5.0,
            seed: Some(1),
            ..Default::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits, &[]), 1);
        }
    }

    proptest::proptest! {
        #[test]
        fn top_k_candidates_are_the_first_k_of_a_full_sort(
            logits in proptest::collection::vec(-4i8..4, 1..300),
            top_k in 0usize..320,
        ) {
            // Few distinct values, so ties (broken by id) are everywhere.
            let logits: Vec<f32> = logits.iter().map(|v| f32::from(*v) * 0.5).collect();
            let mut want: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, v)| (i as u32, *v)).collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if top_k > 0 {
                want.truncate(top_k);
            }
            proptest::prop_assert_eq!(candidates(&logits, top_k), want);
        }
    }

    #[test]
    fn repeat_penalty_discourages_history() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 10.0,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&[1.0, 2.0, 1.5], &[1]), 2);
    }

    #[test]
    fn logprobs_are_normalized() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f32 = (0..3).map(|i| logprob(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(top_logprobs(&l, 2)[0].0, 2);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        assert!(SamplingParams {
            top_p: 1.5,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
