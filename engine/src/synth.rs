//! Deterministic random BitNet b1.58 models of a real shape, for benchmarks: the same seed
//! gives the same bytes on every machine (own SplitMix64 stream per tensor and row, no
//! dependence on thread count), so onebit, bitnet.cpp and llama.cpp can be timed on one file.
//!
//! Values are chosen to look like a trained model to the kernels: ternary weights with
//! about 40 % zeros, per-tensor scales in 0.5–2, norm weights around 1, small embeddings.

use crate::model::{
    Activation, Block, Bytes, Config, Embedding, Family, Layer, Model, Provenance, TernaryTensor,
};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use half::f16;
use onebit_kernels::embd::{quantize_q6k, quantize_q8_0, EmbdType};
use onebit_kernels::parallel;
use onebit_kernels::ternary::{row_bytes, BLOCK_BYTES};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// A named model shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// microsoft/bitnet-b1.58-2B-4T: hidden 2560, 30 layers, ffn 6912, 20/5 heads, vocab 128256.
    B2b4t,
    /// A quick one: hidden 1024, 8 layers, ffn 2816, 8/2 heads, vocab 32000.
    Small,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "2b4t" | "2B-4T" | "2b-4t" => Some(Self::B2b4t),
            "small" => Some(Self::Small),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::B2b4t => "2b4t",
            Self::Small => "small",
        }
    }

    pub fn config(self) -> Config {
        let (hidden, ffn, layers, heads, kv, vocab) = match self {
            Self::B2b4t => (2560, 6912, 30, 20, 5, 128_256),
            Self::Small => (1024, 2816, 8, 8, 2, 32_000),
        };
        let specials = vocab - N_SPECIAL;
        Config {
            hidden_size: hidden,
            intermediate_size: ffn,
            n_layers: layers,
            n_heads: heads,
            n_kv_heads: kv,
            head_dim: hidden / heads,
            vocab_size: vocab,
            max_context: 4096,
            rope_theta: 500_000.0,
            rms_norm_eps: 1e-5,
            bos_token_id: Some(specials as u32),
            eos_token_ids: vec![specials as u32 + 1, specials as u32 + 9],
            block: Block::BitNet(Activation::Relu2),
            family: Family::BitNetB158,
            rope_scaling: None,
        }
    }
}

/// LLaMA-3 reserves its last 256 ids for special tokens.
const N_SPECIAL: usize = 256;

/// SplitMix64: tiny, fast, and identical everywhere.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Packs one row of random codes (P(−1) = P(+1) = 0.3, P(0) = 0.4) straight into the
/// kernels' block layout.
fn ternary_row(rng: &mut Rng, cols: usize, out: &mut [u8]) {
    let code = |b: u8| -> u8 {
        match b {
            0..77 => 0,
            77..179 => 1,
            _ => 2,
        }
    };
    let mut codes = [1u8; 128];
    for (b, block) in out.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        for (i, chunk) in codes.chunks_exact_mut(8).enumerate() {
            let r = rng.next_u64().to_le_bytes();
            for (j, (c, rb)) in chunk.iter_mut().zip(r).enumerate() {
                *c = if b * 128 + i * 8 + j < cols {
                    code(rb)
                } else {
                    1
                };
            }
        }
        for (j, byte) in block.iter_mut().enumerate() {
            *byte = codes[j] << 6 | codes[j + 32] << 4 | codes[j + 64] << 2 | codes[j + 96];
        }
    }
}

fn ternary(seed: u64, stream: u64, rows: usize, cols: usize) -> TernaryTensor {
    let rb = row_bytes(cols);
    let mut data = vec![0u8; rows * rb];
    parallel::for_rows_strided(&mut data, rb, 64, |first, chunk| {
        for (i, row) in chunk.chunks_exact_mut(rb).enumerate() {
            let mut rng = Rng::new(seed, stream << 24 | (first + i) as u64);
            ternary_row(&mut rng, cols, row);
        }
    });
    // bf16-exact (so also f16-exact): every file format stores the same scale.
    let scale =
        half::bf16::from_f32(0.5 + 1.5 * Rng::new(seed, stream << 24 | 0xFF_FFFF).unit()).to_f32();
    TernaryTensor::new(rows, cols, scale, Bytes::owned(data))
}

fn norm_weight(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed, stream << 24);
    // Exactly representable in bf16 (hence f16), so every file format holds the same values.
    (0..n)
        .map(|_| half::bf16::from_f32(0.8 + 0.4 * rng.unit()).to_f32())
        .collect()
}

fn embedding(seed: u64, kind: EmbdType, rows: usize, cols: usize) -> Result<Embedding> {
    let rb = kind.row_bytes(cols).ok_or_else(|| {
        Error::Input(format!(
            "{} embeddings need hidden_size divisible by its block",
            kind.name()
        ))
    })?;
    let mut data = vec![0u8; rows * rb];
    parallel::for_rows_strided(&mut data, rb, 256, |first, chunk| {
        let mut x = vec![0f32; cols];
        for (i, row) in chunk.chunks_exact_mut(rb).enumerate() {
            let mut rng = Rng::new(seed, 1 << 40 | (first + i) as u64);
            x.iter_mut().for_each(|v| *v = (rng.unit() - 0.5) * 0.1);
            match kind {
                EmbdType::F16 => {
                    for (o, v) in row.chunks_exact_mut(2).zip(&x) {
                        o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
                    }
                }
                EmbdType::Q8_0 => row.copy_from_slice(&quantize_q8_0(&x)),
                EmbdType::Q6K => row.copy_from_slice(&quantize_q6k(&x)),
                EmbdType::F32 => {
                    for (o, v) in row.chunks_exact_mut(4).zip(&x) {
                        o.copy_from_slice(&v.to_le_bytes());
                    }
                }
                EmbdType::Bf16 => {
                    for (o, v) in row.chunks_exact_mut(2).zip(&x) {
                        o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
                    }
                }
            }
        }
    });
    Ok(Embedding {
        kind,
        rows,
        cols,
        data: Bytes::owned(data),
    })
}

/// The model of `preset` for `seed`, weights in memory (about 1.2 GB for 2B-4T with F16
/// embeddings).
pub fn model(preset: Preset, seed: u64, embd: EmbdType) -> Result<Model> {
    let c = preset.config();
    let (h, f, q, kv) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let layers = (0..c.n_layers)
        .map(|i| {
            let s = |k: u64| (i as u64 + 1) << 8 | k;
            Layer {
                input_layernorm: norm_weight(seed, s(0), h),
                q_proj: ternary(seed, s(1), q, h),
                k_proj: ternary(seed, s(2), kv, h),
                v_proj: ternary(seed, s(3), kv, h),
                attn_sub_norm: Some(norm_weight(seed, s(4), q)),
                o_proj: ternary(seed, s(5), h, q),
                post_attention_layernorm: norm_weight(seed, s(6), h),
                gate_proj: ternary(seed, s(7), f, h),
                up_proj: ternary(seed, s(8), f, h),
                ffn_sub_norm: Some(norm_weight(seed, s(9), f)),
                down_proj: ternary(seed, s(10), h, f),
            }
        })
        .collect();
    let embed_tokens = embedding(seed, embd, c.vocab_size, h)?;
    let norm = norm_weight(seed, 0xFFFF, h);
    let provenance = Provenance {
        format: "synth".into(),
        ternary_type: "I2_S".into(),
        path: format!("synth:{}:{seed}", preset.name()).into(),
        file_bytes: 0,
        metadata: vec![
            ("synth.preset".into(), preset.name().into()),
            ("synth.seed".into(), seed.to_string()),
        ],
    };
    Ok(Model {
        config: c,
        embed_tokens,
        lm_head: None,
        layers,
        norm,
        medusa: None,
        provenance,
    })
}

/// Where the synthetic vocabulary came from.
pub const LLAMA3_FIXTURE: &str = "../shared/fixtures/llama3-tokenizer/tokenizer.json";

/// The tokenizer of `preset`: the real LLaMA-3 tokenizer for 2B-4T where the fixture is
/// present (searched from the working directory upwards), otherwise a generated byte-level
/// BPE of the preset's vocabulary size with LLaMA-3's special tokens in the last 256 ids.
pub fn tokenizer(preset: Preset, seed: u64) -> Result<(Tokenizer, String)> {
    let vocab = preset.config().vocab_size;
    if preset == Preset::B2b4t {
        if let Some(path) = find_fixture() {
            return Ok((
                Tokenizer::from_file(&path)?,
                format!("LLaMA-3 ({})", path.display()),
            ));
        }
    }
    let json = generated_tokenizer_json(vocab, seed);
    let tok = Tokenizer::from_json_bytes(json.as_bytes())?;
    Ok((tok, format!("generated byte-level BPE, {vocab} tokens")))
}

fn find_fixture() -> Option<std::path::PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        for rel in [
            "shared/fixtures/llama3-tokenizer/tokenizer.json",
            LLAMA3_FIXTURE,
        ] {
            let p = dir.join(rel);
            if p.is_file() {
                return Some(p);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// GPT-2's printable stand-ins for the 256 byte values.
fn byte_chars() -> Vec<char> {
    crate::tokenizer::byte_encoder().to_vec()
}

/// The names LLaMA-3 gives its 256 special tokens, in id order.
pub fn special_names() -> Vec<String> {
    let mut names: Vec<String> = vec![
        "<|begin_of_text|>".into(),
        "<|end_of_text|>".into(),
        "<|reserved_special_token_0|>".into(),
        "<|reserved_special_token_1|>".into(),
        "<|reserved_special_token_2|>".into(),
        "<|reserved_special_token_3|>".into(),
        "<|start_header_id|>".into(),
        "<|end_header_id|>".into(),
        "<|reserved_special_token_4|>".into(),
        "<|eot_id|>".into(),
    ];
    names.extend((5..=250).map(|i| format!("<|reserved_special_token_{i}|>")));
    names
}

/// A valid byte-level BPE of `vocab` tokens: 256 byte tokens, then merges of two earlier
/// tokens (at most 12 characters, no duplicates) drawn from `seed`, then the specials.
pub fn generated_tokenizer_json(vocab: usize, seed: u64) -> String {
    let n_regular = vocab - N_SPECIAL;
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    let mut merges = Vec::with_capacity(n_regular);
    let mut rng = Rng::new(seed, 0x706B_656E);
    while tokens.len() < n_regular {
        // Favour short, early tokens, as real merge lists do.
        let pick = |rng: &mut Rng, len: usize| {
            let a = rng.below(len);
            rng.below(a + 1)
        };
        let (a, b) = (pick(&mut rng, tokens.len()), pick(&mut rng, tokens.len()));
        let joined = format!("{}{}", tokens[a], tokens[b]);
        if joined.chars().count() > 12 || seen.contains(&joined) {
            continue;
        }
        merges.push(json!([tokens[a], tokens[b]]));
        seen.insert(joined.clone());
        tokens.push(joined);
    }
    let mut vocab_map = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab_map.insert(t.clone(), json!(i));
    }
    let added: Vec<Value> = special_names()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"id": n_regular + i, "content": name, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let bos = special_names()[0].clone();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": crate::tokenizer::LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {bos.clone(): {"id": bos, "ids": [n_regular], "tokens": [bos]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": vocab_map, "merges": merges}
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = ternary(7, 3, 10, 300);
        let b = ternary(7, 3, 10, 300);
        let c = ternary(8, 3, 10, 300);
        assert_eq!(a.data.as_slice(), b.data.as_slice());
        assert_eq!(a.scale, b.scale);
        assert_ne!(a.data.as_slice(), c.data.as_slice());
        assert!((0.5..=2.0).contains(&a.scale));
    }

    #[test]
    fn codes_have_realistic_zero_fraction_and_padding_is_zero_weight() {
        let t = ternary(1, 1, 64, 300);
        let v = t.view();
        let mut counts = [0usize; 4];
        for r in 0..64 {
            for c in 0..300 {
                counts[v.code(r, c) as usize] += 1;
            }
            for c in 300..384 {
                assert_eq!(v.code(r, c), 1, "padding must be weight 0");
            }
        }
        assert_eq!(counts[3], 0);
        let zero = counts[1] as f64 / (64.0 * 300.0);
        assert!((0.35..0.45).contains(&zero), "zero fraction {zero}");
    }

    #[test]
    fn generated_tokenizer_is_valid_and_round_trips() {
        let json = generated_tokenizer_json(4096, 5);
        let tok = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
        assert_eq!(tok.vocab_size(), 4096);
        assert_eq!(tok.bos_id(), Some(4096 - 256));
        assert!(tok.eos_ids().contains(&(4096 - 256 + 9)));
        let text = "Hello, wörld! 123";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}
