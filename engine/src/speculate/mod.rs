//! Speculative decoding: guess several tokens ahead, verify every guess in one forward
//! pass, keep what the model agrees with. Decoding reads all weights per pass, so a pass
//! that keeps m + 1 tokens costs little more than one that keeps one.
//!
//! * Drafting ([`Speculator::plan`]): prompt lookup ([`lookup`], n-gram matches in the
//!   text so far) or Medusa heads ([`medusa`], small heads on the model's hidden state
//!   guessing 2, 3, … tokens ahead) give a [`tree::DraftTree`] under the token the stream
//!   feeds anyway.
//! * Verification: the generation loop feeds the tree through
//!   [`crate::backend::Backend::step_drafts`] (the batched prefill path, one tree attention
//!   mask), [`accept`] walks it with the model's logits (greedy: exactly plain decoding's
//!   tokens; sampling: speculative rejection sampling, exactly the model's distribution) and
//!   [`crate::backend::Backend::keep_path`] keeps the accepted positions' keys and values.
//! * [`Mode::Auto`] speculates only while it pays: it times speculative and plain steps as
//!   they run (tokens per second of each) and takes the faster, probing the other now and
//!   then, less often each time the probe confirms the choice.

pub mod accept;
pub mod lookup;
pub mod medusa;
pub mod tree;

use crate::backend::DraftSupport;
use accept::Accepted;
use lookup::PromptLookup;
use tree::DraftTree;

/// Which drafter a stream uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Plain decoding.
    Off,
    /// Prompt lookup only.
    Lookup,
    /// Medusa heads only (the model must carry them).
    Medusa,
    /// Prompt lookup where the text repeats, only while verifying its drafts is faster
    /// than plain decoding (timed as it runs).
    #[default]
    Auto,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Off, Mode::Lookup, Mode::Medusa, Mode::Auto];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Lookup => "lookup",
            Mode::Medusa => "medusa",
            Mode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown speculation mode {s:?}: use lookup, medusa, auto or off")
            })
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stream speculates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecOptions {
    pub mode: Mode,
    /// Most draft tokens in a chain (prompt lookup) or deepest tree level (Medusa: at most
    /// the head count).
    pub max_draft: usize,
    /// Most nodes of a Medusa tree, the root included.
    pub tree_nodes: usize,
    /// Guesses per Medusa head the tree may branch into.
    pub head_top_k: usize,
    /// With [`Mode::Auto`]: never time steps, always speculate where a draft exists
    /// (benchmarks that want to see speculation's own cost).
    pub always: bool,
}

impl SpecOptions {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            max_draft: 6,
            tree_nodes: 6,
            head_top_k: 2,
            always: false,
        }
    }
}

/// Counts of what speculation did (for usage, `/metrics` and benchmarks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Decode steps (passes over the weights) and tokens they produced.
    pub steps: u64,
    pub tokens: u64,
    /// Steps that verified drafts, draft tokens offered and accepted.
    pub draft_steps: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// Per depth d (from 1): steps whose draft reached depth d, and those that kept a
    /// token at depth d.
    pub offered_at: Vec<u64>,
    pub accepted_at: Vec<u64>,
}

impl SpecStats {
    /// Accepted draft tokens per drafted token.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Tokens produced per pass over the weights.
    pub fn tokens_per_pass(&self) -> f64 {
        self.tokens as f64 / self.steps.max(1) as f64
    }

    pub fn add(&mut self, o: &SpecStats) {
        self.steps += o.steps;
        self.tokens += o.tokens;
        self.draft_steps += o.draft_steps;
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        for (mine, theirs) in [
            (&mut self.offered_at, &o.offered_at),
            (&mut self.accepted_at, &o.accepted_at),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
    }
}

/// Tokens per second of one kind of step, smoothed.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    tokens: f64,
    seconds: f64,
}

impl Rate {
    fn add(&mut self, tokens: usize, seconds: f64) {
        // Exponential forgetting over about 16 steps: follows a changing text.
        const KEEP: f64 = 15.0 / 16.0;
        self.tokens = self.tokens * KEEP + tokens as f64;
        self.seconds = self.seconds * KEEP + seconds;
    }
    fn per_second(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.tokens / self.seconds)
    }
}

/// [`Mode::Auto`]'s choice between speculating and plain steps.
#[derive(Clone, Debug)]
struct Auto {
    spec: Rate,
    plain: Rate,
    /// Steps since the losing kind last ran, and how many to wait before the next probe.
    since_probe: u32,
    probe_every: u32,
    speculating: bool,
}

impl Default for Auto {
    fn default() -> Self {
        Self {
            spec: Rate::default(),
            plain: Rate::default(),
            since_probe: 0,
            probe_every: 16,
            speculating: false,
        }
    }
}

impl Auto {
    /// How many draft tokens the next speculating step may verify: all of them while
    /// speculation wins, two in a probe while plain decoding does (a probe that costs
    /// little more than the plain step it replaces).
    fn draft_limit(&self, max: usize) -> usize {
        if self.speculating {
            max
        } else {
            max.min(2)
        }
    }

    /// Whether the next step should speculate. Plain decoding runs until a probe (every
    /// 16th step at first) has timed a short draft; the faster kind then runs, and the
    /// other is probed ever more rarely.
    fn wants_spec(&mut self) -> bool {
        if let (Some(s), Some(p)) = (self.spec.per_second(), self.plain.per_second()) {
            let better = s > p;
            if better != self.speculating {
                self.speculating = better;
                self.probe_every = 16;
                self.since_probe = 0;
            }
        }
        self.since_probe += 1;
        if self.since_probe >= self.probe_every {
            self.since_probe = 0;
            // Each probe makes the next one rarer (1 step in 16, then 32, … 256).
            self.probe_every = (self.probe_every * 2).min(256);
            return !self.speculating;
        }
        self.speculating
    }

    /// A probe found nothing to draft: the next step probes instead.
    fn probe_missed(&mut self) {
        self.probe_every = (self.probe_every / 2).max(16);
        self.since_probe = self.probe_every;
    }
}

/// One stream's speculation: its drafters, what the last step left them, and counts.
#[derive(Clone, Debug)]
pub struct Speculator {
    opts: SpecOptions,
    lookup: PromptLookup,
    /// Medusa guesses for the tokens after the next root, from the last kept node.
    heads: Option<Vec<Vec<(u32, f32)>>>,
    /// Whether the current step is one Auto chose to run plain.
    auto: Auto,
    stats: SpecStats,
    warned: bool,
}

impl Speculator {
    pub fn new(opts: SpecOptions) -> Self {
        Self {
            opts,
            lookup: PromptLookup::default(),
            heads: None,
            auto: Auto::default(),
            stats: SpecStats::default(),
            warned: false,
        }
    }

    pub fn options(&self) -> &SpecOptions {
        &self.opts
    }

    pub fn stats(&self) -> &SpecStats {
        &self.stats
    }

    /// Whether drafting wants the Medusa heads' guesses after a draft step, on a surface
    /// offering `support` with `heads` heads.
    pub fn wants_heads(&self, support: DraftSupport, heads: usize) -> bool {
        self.opts.mode == Mode::Medusa && support.hidden && heads > 0
    }

    /// Hands over the Medusa guesses for the next step.
    pub fn set_heads(&mut self, heads: Option<Vec<Vec<(u32, f32)>>>) {
        self.heads = heads;
    }

    /// The draft tree to verify under `root` (the token fed next, after `history`), or
    /// None for a plain step; at most `room` nodes. `heads` is how many Medusa heads the
    /// surface has.
    pub fn plan(
        &mut self,
        history: &[u32],
        root: u32,
        support: DraftSupport,
        heads: usize,
        room: usize,
    ) -> Option<DraftTree> {
        let medusa = self.wants_heads(support, heads);
        if self.opts.mode == Mode::Medusa && !medusa && !self.warned {
            self.warned = true;
            tracing::warn!(
                heads,
                hidden_states = support.hidden,
                "--speculate medusa needs a model with Medusa heads on a surface that hands over hidden states (the CPU); drafting with prompt lookup instead"
            );
        }
        if room < 2 || self.opts.mode == Mode::Off {
            self.heads = None;
            return None;
        }
        let max = self.opts.max_draft.min(room - 1);
        let lookup = || {
            let mut seen = history.to_vec();
            seen.push(root);
            self.lookup.draft(&seen, max)
        };
        let tree = match self.opts.mode {
            Mode::Off => None,
            Mode::Lookup => Some(DraftTree::chain(root, &lookup())).filter(|t| t.drafted() > 0),
            Mode::Medusa if !medusa => {
                Some(DraftTree::chain(root, &lookup())).filter(|t| t.drafted() > 0)
            }
            Mode::Medusa => Some(self.medusa_tree(root, support, room)),
            // Prompt lookup only: the Medusa heads' own work (their block and head per
            // step) did not pay on the embedded model, so Auto leaves them to --speculate
            // medusa; the clock decides whether lookup drafts are worth verifying.
            Mode::Auto if self.opts.always || self.auto.wants_spec() => {
                let mut chain = lookup();
                if chain.is_empty() && !self.auto.speculating {
                    self.auto.probe_missed();
                }
                chain.truncate(self.auto.draft_limit(chain.len()));
                Some(DraftTree::chain(root, &chain)).filter(|t| t.drafted() > 0)
            }
            Mode::Auto => None,
        };
        self.heads = None;
        tree
    }

    /// A Medusa tree from the last kept node's guesses, or the root alone (a step that
    /// fetches the hidden state the heads read next time).
    fn medusa_tree(&self, root: u32, support: DraftSupport, room: usize) -> DraftTree {
        let Some(cands) = &self.heads else {
            return DraftTree::root(root);
        };
        let depth = self.opts.max_draft.min(cands.len());
        let cands: Vec<Vec<(u32, f32)>> = cands[..depth]
            .iter()
            .map(|c| c.iter().take(self.opts.head_top_k).copied().collect())
            .collect();
        let nodes = self
            .opts
            .tree_nodes
            .min(room)
            .min(onebit_kernels::attention::TREE_ROWS);
        medusa::build_tree(root, &cands, nodes, !support.tree)
    }

    /// Counts a decode step: `tree` (None: plain) and what it kept.
    pub fn record(&mut self, tree: Option<&DraftTree>, kept: Option<&Accepted>, tokens: usize) {
        let s = &mut self.stats;
        s.steps += 1;
        s.tokens += tokens as u64;
        let (Some(tree), Some(kept)) = (tree, kept) else {
            return;
        };
        if tree.drafted() == 0 {
            return;
        }
        s.draft_steps += 1;
        s.drafted += tree.drafted() as u64;
        s.accepted += kept.path.len() as u64 - 1;
        let deepest = tree.depths().into_iter().max().unwrap_or(0);
        if s.offered_at.len() < deepest {
            s.offered_at.resize(deepest, 0);
            s.accepted_at.resize(deepest, 0);
        }
        s.offered_at[..deepest].iter_mut().for_each(|c| *c += 1);
        s.accepted_at[..kept.path.len() - 1]
            .iter_mut()
            .for_each(|c| *c += 1);
    }

    /// Feeds Auto's clock: a step that drafted (or not) took `seconds` for `tokens`.
    pub fn timing(&mut self, drafted: bool, seconds: f64, tokens: usize) {
        if drafted {
            self.auto.spec.add(tokens, seconds);
        } else {
            self.auto.plain.add(tokens, seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        assert!("fast".parse::<Mode>().unwrap_err().contains("lookup"));
    }

    #[test]
    fn auto_picks_the_faster_kind_and_probes_less_often() {
        let mut a = Auto::default();
        // Plain until the first probe.
        let first: Vec<bool> = (0..16).map(|_| a.wants_spec()).collect();
        assert_eq!(first.iter().filter(|&&s| s).count(), 1);
        assert!(first[15]);
        a.spec.add(1, 2.0); // speculating: 0.5 tok/s
        a.plain.add(1, 1.0); // plain: 1 tok/s
        let picks: Vec<bool> = (0..100).map(|_| a.wants_spec()).collect();
        let probes = picks.iter().filter(|&&s| s).count();
        assert!((1..=4).contains(&probes), "{probes} probes in 100 steps");
        // A probe while plain decoding wins verifies a short draft only.
        assert_eq!(a.draft_limit(6), 2);
    }

    #[test]
    fn lookup_plans_a_chain_and_counts_what_was_kept() {
        let mut s = Speculator::new(SpecOptions::new(Mode::Lookup));
        let support = DraftSupport::default();
        let t = s.plan(&[1, 2, 3, 4, 1, 2], 3, support, 0, 100).unwrap();
        assert_eq!(t.tokens, vec![3, 4, 1, 2, 3]);
        assert!(s.plan(&[1, 2, 3], 9, support, 0, 100).is_none());
        let kept = Accepted {
            path: vec![0, 1],
            tokens: vec![4, 7],
        };
        s.record(Some(&t), Some(&kept), 2);
        let st = s.stats();
        assert_eq!((st.drafted, st.accepted, st.tokens, st.steps), (4, 1, 2, 1));
        assert_eq!(st.offered_at, vec![1, 1, 1, 1]);
        assert_eq!(st.accepted_at, vec![1, 0, 0, 0]);
    }
}
