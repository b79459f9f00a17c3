//! Verification: which draft tokens the model keeps, given its logits at every tree node.
//!
//! From the root, each node's logits give the model's next token (greedy) or distribution
//! (sampling). Greedy follows the child holding the model's argmax. Sampling runs
//! speculative rejection sampling with the draft tokens as point guesses (a draft
//! distribution that is all on the guess): child x is accepted with probability p(x); on
//! rejection p loses x and is renormalised (the residual max(p − q, 0)), and the next
//! child is tried against it; when every child is rejected the token is drawn from what is
//! left. The tokens that come out are distributed exactly as the model's, one draw after
//! another, whatever the drafts were.

use super::tree::DraftTree;
use crate::sampler::Sampler;

/// What verification kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The nodes on the kept path, from the root (`path[0] = 0`).
    pub path: Vec<usize>,
    /// The new tokens: the tokens of `path[1..]`, then one the model chose itself.
    pub tokens: Vec<u32>,
}

/// What the model said at every node of a tree.
#[derive(Clone, Copy, Debug)]
pub enum Verdicts<'a> {
    /// Every node's logits, `[nodes, vocab]`.
    Logits { logits: &'a [f32], vocab: usize },
    /// Every node's argmax (plain greedy decoding: no penalties).
    Tokens(&'a [u32]),
}

/// Walks `tree` with the model's verdicts, `history` being the tokens before the root (the
/// root is appended for the sampler's penalties, as are the kept tokens along the way).
pub fn accept(
    tree: &DraftTree,
    verdicts: Verdicts<'_>,
    history: &[u32],
    sampler: &mut Sampler,
) -> Accepted {
    let mut seen = history.to_vec();
    seen.push(tree.tokens[0]);
    let mut node = 0;
    let mut out = Accepted {
        path: vec![0],
        tokens: Vec::new(),
    };
    loop {
        let (next, child) = match verdicts {
            Verdicts::Tokens(t) => (t[node], tree.child_with(node, t[node])),
            Verdicts::Logits { logits, vocab } => {
                let row = &logits[node * vocab..(node + 1) * vocab];
                if sampler.is_greedy() {
                    let t = sampler.sample(row, &seen);
                    (t, tree.child_with(node, t))
                } else {
                    let dist = sampler.distribution(row, &seen);
                    sample_against_children(tree, node, dist, sampler)
                }
            }
        };
        out.tokens.push(next);
        match child {
            Some(c) => {
                out.path.push(c);
                seen.push(next);
                node = c;
            }
            None => return out,
        }
    }
}

/// One rejection-sampling step at `node`: tries its children in order against `dist`;
/// returns the token chosen and the child holding it, if one was accepted.
fn sample_against_children(
    tree: &DraftTree,
    node: usize,
    mut dist: Vec<(u32, f64)>,
    sampler: &mut Sampler,
) -> (u32, Option<usize>) {
    let mut tried: Vec<u32> = Vec::new();
    for c in tree.children(node) {
        let x = tree.tokens[c];
        if tried.contains(&x) {
            continue;
        }
        tried.push(x);
        let p = dist.iter().find(|d| d.0 == x).map_or(0.0, |d| d.1);
        if p > 0.0 && sampler.uniform() < p {
            return (x, Some(c));
        }
        // Rejected: the residual distribution without x.
        dist.retain(|d| d.0 != x);
        let total: f64 = dist.iter().map(|d| d.1).sum();
        if total <= 0.0 {
            break;
        }
        dist.iter_mut().for_each(|d| d.1 /= total);
    }
    if dist.is_empty() {
        // Every token the sampler could pick was guessed and rejected with probability 1
        // (p = 0 for all of them cannot happen for a distribution): take the first guess.
        return (tree.tokens[tree.children(node).next().unwrap_or(0)], None);
    }
    (sampler.draw_from(&dist), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;

    fn onehot(vocab: usize, ids: &[u32]) -> Vec<f32> {
        ids.iter()
            .flat_map(|&id| (0..vocab).map(move |v| if v as u32 == id { 5.0 } else { 0.0 }))
            .collect()
    }

    #[test]
    fn greedy_follows_the_argmax_child() {
        // root 1 → {2 (node 1), 3 (node 2)}; node 2 → 4 (node 3).
        let mut t = DraftTree::root(1);
        t.push(0, 2);
        let n2 = t.push(0, 3);
        t.push(n2, 4);
        // After the root the model says 3 (node 2), after it 4 (node 3), after that 7.
        let logits = onehot(8, &[3, 0, 4, 7]);
        let mut s = Sampler::new(SamplingParams::greedy());
        let a = accept(
            &t,
            Verdicts::Logits {
                logits: &logits,
                vocab: 8,
            },
            &[],
            &mut s,
        );
        assert_eq!(a.path, vec![0, 2, 3]);
        assert_eq!(a.tokens, vec![3, 4, 7]);
        let b = accept(&t, Verdicts::Tokens(&[3, 0, 4, 7]), &[], &mut s);
        assert_eq!(a, b);
    }

    #[test]
    fn a_rejected_guess_is_never_redrawn() {
        // p = (0.5, 0.5) over tokens 0 and 1; the guess 0 rejected leaves only 1.
        let t = DraftTree::chain(2, &[0]);
        let logits = vec![0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY];
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            seed: Some(3),
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..50 {
            let a = accept(
                &t,
                Verdicts::Logits {
                    logits: &logits,
                    vocab: 3,
                },
                &[],
                &mut s,
            );
            match a.path.len() {
                1 => assert_eq!(a.tokens, vec![1]),
                _ => assert_eq!(a.tokens[0], 0),
            }
        }
    }
}
