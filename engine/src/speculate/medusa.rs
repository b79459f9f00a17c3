//! Medusa heads: K small extra heads on the model's final normed hidden state `h` of a
//! position; head k (from 0) guesses the token k + 2 positions ahead (the model's own head
//! gives the next one). Each head is one residual block feeding the model's tied LM head,
//! so it adds only `hidden² + hidden` parameters:
//!
//! ```text
//! logits_k = (h + SiLU(W_k · h + b_k)) · embed_tokensᵀ
//! ```
//!
//! Stored beside the model as `medusa.{k}.weight` (`[hidden, hidden]`, row-major
//! `[out, in]`; F16, BF16 or F32) and `medusa.{k}.bias` (`[hidden]`), with
//! `medusa.head_count` (and `medusa.kind = residual_silu`) in the metadata: GGUF tensors
//! and keys, or `medusa.safetensors` in a Hugging Face directory
//! (`tools/train/train_medusa.py` writes it).
//!
//! Drafting takes each head's best few tokens and grows a tree from them, best
//! (product of the heads' probabilities) first.

use super::tree::DraftTree;
use onebit_kernels::embd::EmbdView;
use onebit_kernels::screen::{Int8Head, TopK};

/// What `medusa.kind` names (the only kind there is).
pub const KIND: &str = "residual_silu";

/// The GGUF / safetensors names of head `k`'s weight and bias.
pub fn tensor_names(k: usize) -> (String, String) {
    (format!("medusa.{k}.weight"), format!("medusa.{k}.bias"))
}

/// K trained Medusa heads.
#[derive(Clone, Debug, PartialEq)]
pub struct MedusaHeads {
    pub hidden: usize,
    /// `[hidden, hidden]` row-major (`[out, in]`) per head.
    pub weights: Vec<Vec<f32>>,
    /// `[hidden]` per head.
    pub biases: Vec<Vec<f32>>,
}

/// Why heads read from a file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MedusaError {
    #[error("medusa.head_count is {0}; it must be between 1 and 16")]
    HeadCount(usize),
    #[error("medusa.kind is {0:?}; onebit knows only \"residual_silu\" heads")]
    Kind(String),
    #[error("tensor {name} is missing; a model with medusa.head_count = {count} needs medusa.0 .. medusa.{last} weight and bias", last = count - 1)]
    Missing { name: String, count: usize },
    #[error("tensor {name} has {got} elements; heads on a hidden size of {hidden} need {want}")]
    Shape {
        name: String,
        got: usize,
        want: usize,
        hidden: usize,
    },
    #[error("tensor {name} element {index} is not finite")]
    NotFinite { name: String, index: usize },
}

impl MedusaHeads {
    /// Heads from their tensors: `get(name)` gives a tensor's values as f32.
    pub fn from_tensors(
        count: usize,
        kind: Option<&str>,
        hidden: usize,
        get: impl Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<Self, MedusaError> {
        if !(1..=16).contains(&count) {
            return Err(MedusaError::HeadCount(count));
        }
        if let Some(k) = kind.filter(|k| *k != KIND) {
            return Err(MedusaError::Kind(k.to_string()));
        }
        let mut heads = Self {
            hidden,
            weights: Vec::with_capacity(count),
            biases: Vec::with_capacity(count),
        };
        for k in 0..count {
            let (wn, bn) = tensor_names(k);
            for (name, want) in [(wn, hidden * hidden), (bn, hidden)] {
                let v = get(&name).ok_or_else(|| MedusaError::Missing {
                    name: name.clone(),
                    count,
                })?;
                if v.len() != want {
                    return Err(MedusaError::Shape {
                        name,
                        got: v.len(),
                        want,
                        hidden,
                    });
                }
                if let Some(index) = v.iter().position(|x| !x.is_finite()) {
                    return Err(MedusaError::NotFinite { name, index });
                }
                if want == hidden {
                    heads.biases.push(v);
                } else {
                    heads.weights.push(v);
                }
            }
        }
        Ok(heads)
    }

    pub fn count(&self) -> usize {
        self.weights.len()
    }

    /// Parameters of all heads.
    pub fn n_params(&self) -> usize {
        self.count() * (self.hidden * self.hidden + self.hidden)
    }

    /// Each head's input to the LM head, `h + SiLU(W_k h + b_k)`, `[K, hidden]`.
    pub fn states(&self, h: &[f32]) -> Vec<f32> {
        let n = self.hidden;
        let mut out = Vec::with_capacity(self.count() * n);
        for (w, b) in self.weights.iter().zip(&self.biases) {
            for (i, (row, bias)) in w.chunks_exact(n).zip(b).enumerate() {
                let z: f32 = row.iter().zip(h).map(|(a, x)| a * x).sum::<f32>() + bias;
                out.push(h[i] + z / (1.0 + (-z).exp()));
            }
        }
        out
    }

    /// Each head's `top` most likely tokens, best first, with their probabilities among
    /// those `top` (what ranking a tree needs), through an int8-screened head: it finds the
    /// same top tokens as the full head reading half its bytes.
    pub fn candidates_screened(
        &self,
        screen: &Int8Head,
        head: &EmbdView<'_>,
        h: &[f32],
        top: usize,
    ) -> Vec<Vec<(u32, f32)>> {
        let states = self.states(h);
        let wishes = vec![
            TopK {
                k: top.max(1),
                include: &[]
            };
            self.count()
        ];
        screen
            .top_k_batch(head, &states, &wishes)
            .into_iter()
            .map(|mut c| {
                c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                c.truncate(top.max(1));
                let max = c.first().map_or(0.0, |x| x.1);
                let sum: f32 = c.iter().map(|x| (x.1 - max).exp()).sum();
                c.into_iter()
                    .map(|(id, l)| (id, (l - max).exp() / sum))
                    .collect()
            })
            .collect()
    }

    /// Each head's `top` most likely tokens with their probabilities, best first.
    pub fn candidates(&self, head: &EmbdView<'_>, h: &[f32], top: usize) -> Vec<Vec<(u32, f32)>> {
        let states = self.states(h);
        let mut logits = vec![0f32; self.count() * head.rows];
        head.matmul(&states, &mut logits);
        logits
            .chunks_exact(head.rows)
            .map(|l| {
                let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let sum: f32 = l.iter().map(|x| (x - max).exp()).sum();
                let mut idx: Vec<u32> = (0..l.len() as u32).collect();
                let k = top.clamp(1, l.len());
                idx.select_nth_unstable_by(k - 1, |&a, &b| {
                    l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b))
                });
                idx.truncate(k);
                idx.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
                idx.into_iter()
                    .map(|i| (i, (l[i as usize] - max).exp() / sum))
                    .collect()
            })
            .collect()
    }
}

/// Grows a tree of at most `nodes` nodes (the root included) under `root` from per-depth
/// candidates (`cands[d]`: the guesses for depth d + 1, with probabilities), best path
/// probability first; with `chain_only`, only the best guess per depth.
pub fn build_tree(
    root: u32,
    cands: &[Vec<(u32, f32)>],
    nodes: usize,
    chain_only: bool,
) -> DraftTree {
    let mut tree = DraftTree::root(root);
    if chain_only {
        let chain: Vec<u32> = cands
            .iter()
            .map_while(|c| c.first().map(|x| x.0))
            .take(nodes.saturating_sub(1))
            .collect();
        return DraftTree::chain(root, &chain);
    }
    // Frontier: (path probability, parent node, the parent's path probability, depth, rank
    // of the candidate at that depth).
    type Offer = (f32, usize, f32, usize, usize);
    let offer =
        |frontier: &mut Vec<Offer>, parent: usize, parent_p: f32, depth: usize, rank: usize| {
            if let Some(c) = cands.get(depth).and_then(|c| c.get(rank)) {
                frontier.push((parent_p * c.1, parent, parent_p, depth, rank));
            }
        };
    let mut frontier = Vec::new();
    offer(&mut frontier, 0, 1.0, 0, 0);
    while tree.len() < nodes {
        let Some(best) =
            (0..frontier.len()).max_by(|&a, &b| frontier[a].0.total_cmp(&frontier[b].0))
        else {
            break;
        };
        let (p, parent, parent_p, depth, rank) = frontier.swap_remove(best);
        let node = tree.push(parent, cands[depth][rank].0);
        // Its next sibling (the next guess at this depth) and its first child.
        offer(&mut frontier, parent, parent_p, depth, rank + 1);
        offer(&mut frontier, node, p, depth + 1, 0);
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_takes_the_likeliest_paths_first() {
        let cands = vec![vec![(10, 0.6), (11, 0.3)], vec![(20, 0.9), (21, 0.05)]];
        let t = build_tree(1, &cands, 4, false);
        // 10 (0.6), 10→20 (0.54), 11 (0.3).
        assert_eq!(t.tokens, vec![1, 10, 20, 11]);
        assert_eq!(t.parents, vec![0, 0, 1, 0]);
        let c = build_tree(1, &cands, 8, true);
        assert_eq!(c.tokens, vec![1, 10, 20]);
    }

    #[test]
    fn zero_heads_are_the_identity_block() {
        let heads = MedusaHeads::from_tensors(1, Some(KIND), 2, |n| {
            Some(if n.ends_with("weight") {
                vec![0.0; 4]
            } else {
                vec![0.0; 2]
            })
        })
        .unwrap();
        // SiLU(0) = 0: the head's input is h itself.
        assert_eq!(heads.states(&[1.5, -2.0]), vec![1.5, -2.0]);
        assert_eq!(
            MedusaHeads::from_tensors(1, None, 2, |_| Some(vec![0.0; 3])).unwrap_err(),
            MedusaError::Shape {
                name: "medusa.0.weight".into(),
                got: 3,
                want: 4,
                hidden: 2
            }
        );
    }
}
