//! GGUF → [`Model`]: bitnet.cpp's `bitnet-b1.58` / `bitnet-25` (I2_S), `bitnet`
//! (1bitLLM's models or BitNet 2B-4T, TQ1_0 / TQ2_0 / I2_S) and `llama` with ternary
//! projections (HF1BitLLM's Llama3-8B-1.58, Falcon3 1.58-bit, Falcon-E, as bitnet.cpp and
//! llama.cpp convert them).

use super::codec;
use super::gguf::{ty, GgufFile, TensorInfo, Value};
use super::layout::{self, Names, Source};
use super::repack;
use crate::model::{
    Activation, Block, Bytes, Config, Embedding, Family, Model, Provenance, RopeScaling,
    TernaryTensor,
};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use half::{bf16, f16};
use onebit_kernels::embd::EmbdType;
use onebit_kernels::ternary;

/// Architectures onebit runs: BitNet b1.58's block (sub-norms) under its three names, and
/// LLaMA's block when its projections are ternary.
pub const ARCHS: &[&str] = &["bitnet-b1.58", "bitnet-25", "bitnet", "llama"];

/// Builds the model and tokenizer from a parsed GGUF file.
pub fn model_from_gguf(g: &GgufFile) -> Result<(Model, Tokenizer)> {
    let arch = g.str_key("general.architecture")?;
    if !ARCHS.contains(&arch) {
        return Err(Error::unsupported(
            &g.path,
            format!(
                "general.architecture is {arch:?}; onebit runs ternary models ({}): convert a 1.58-bit checkpoint instead",
                ARCHS.join(", ")
            ),
        ));
    }
    let tokenizer = Tokenizer::from_gguf(g)?;
    let config = config_from_gguf(g, arch, &tokenizer)?;
    let embed_tokens = embedding(g, &config, layout::GGUF_EMBD)?;
    let lm_head = match g.tensor(layout::GGUF_OUTPUT) {
        // A head that is a byte-for-byte copy of token_embd is the tied head written out.
        Some(t)
            if g.tensor(layout::GGUF_EMBD)
                .is_some_and(|e| e.ggml_type == t.ggml_type && e.dims == t.dims)
                && g.tensor_data(t)?.as_slice() == embed_tokens.data.as_slice() =>
        {
            tracing::debug!(
                "{}: output.weight duplicates token_embd; using the tied head",
                g.path.display()
            );
            None
        }
        Some(_) => Some(embedding(g, &config, layout::GGUF_OUTPUT)?),
        None => None,
    };
    let mut src = GgufSource {
        g,
        ternary_types: Vec::new(),
    };
    let norm = src.norm(
        &Names {
            gguf: layout::GGUF_NORM.into(),
            hf: String::new(),
        },
        config.hidden_size,
    )?;
    let layers = layout::build_layers(&config, &mut src)?;
    let mut types = src.ternary_types;
    types.sort();
    types.dedup();
    let ternary_type = types.join("+");
    for t in g.tensors() {
        let known = t.name.starts_with("medusa.")
            || t.name == layout::GGUF_EMBD
            || t.name == layout::GGUF_OUTPUT
            || t.name == layout::GGUF_NORM
            || (0..config.n_layers).any(|i| {
                (0..layout::LAYER_NAMES.len()).any(|k| layout::names(i, k).gguf == t.name)
            });
        if !known {
            tracing::warn!(
                "{}: tensor '{}' is not used by the BitNet graph; ignoring it",
                g.path.display(),
                t.name
            );
        }
    }
    let mut metadata = vec![
        ("gguf.version".to_string(), g.version.to_string()),
        ("tensors".to_string(), g.tensors().len().to_string()),
        (
            "token_embd type".to_string(),
            embed_tokens.kind.name().to_string(),
        ),
    ];
    for key in [
        "general.architecture",
        "general.name",
        "general.file_type",
        "tokenizer.ggml.pre",
    ] {
        if let Some(v) = g.get(key) {
            metadata.push((key.to_string(), v.summary()));
        }
    }
    let medusa = super::medusa::from_gguf(g, config.hidden_size)?;
    let provenance = Provenance {
        format: "gguf".into(),
        ternary_type,
        path: g.path.clone(),
        file_bytes: g.file_len(),
        metadata,
    };
    Ok((
        Model {
            config,
            embed_tokens,
            lm_head,
            layers,
            norm,
            medusa,
            provenance,
        },
        tokenizer,
    ))
}

fn config_from_gguf(g: &GgufFile, arch: &str, tok: &Tokenizer) -> Result<Config> {
    let k = |s: &str| format!("{arch}.{s}");
    let us = |s: &str| -> Result<usize> {
        let v = g.u64_key(&k(s))?;
        usize::try_from(v)
            .map_err(|_| Error::corrupt(&g.path, 0, format!("{} = {v} is out of range", k(s))))
    };
    let hidden_size = us("embedding_length")?;
    let n_heads = us("attention.head_count")?;
    let n_kv_heads = match g.get(&k("attention.head_count_kv")) {
        Some(_) => us("attention.head_count_kv")?,
        None => n_heads,
    };
    if n_heads == 0 || hidden_size % n_heads != 0 {
        return Err(Error::corrupt(
            &g.path,
            0,
            format!(
                "{} = {hidden_size} is not a multiple of the head count {n_heads}",
                k("embedding_length")
            ),
        ));
    }
    let mut head_dim = hidden_size / n_heads;
    if let Some(v) = g.get(&k("attention.key_length")) {
        head_dim = v.as_u64().unwrap_or(0) as usize;
    }
    if let Some(v) = g.get(&k("rope.dimension_count")) {
        let rd = v.as_u64().unwrap_or(0) as usize;
        if rd != head_dim {
            return Err(Error::unsupported(
                &g.path,
                format!("{} = {rd} but head_dim is {head_dim}: partial rotary embeddings are not part of BitNet b1.58", k("rope.dimension_count")),
            ));
        }
    }
    let vocab_size = tok.vocab_size();
    if let Some(v) = g.get(&k("vocab_size")).and_then(Value::as_u64) {
        if v as usize != vocab_size {
            return Err(Error::corrupt(
                &g.path,
                0,
                format!(
                    "{} = {v} but tokenizer.ggml.tokens has {vocab_size} tokens",
                    k("vocab_size")
                ),
            ));
        }
    }
    let rope_theta = match g.f64_key(&k("rope.freq_base"))? {
        Some(v) => v as f32,
        None => {
            tracing::warn!(
                "{}: {} missing; using 10000",
                g.path.display(),
                k("rope.freq_base")
            );
            10000.0
        }
    };
    let rms_norm_eps = match g.f64_key(&k("attention.layer_norm_rms_epsilon"))? {
        Some(v) => v as f32,
        None => 1e-5,
    };
    let (block, family) = block_of(g, arch, vocab_size)?;
    let rope_scaling = match g.get(&k("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: g.f64_key(&k("rope.scaling.factor"))?.unwrap_or(1.0) as f32,
        }),
        Some(other) => {
            return Err(Error::unsupported(
                &g.path,
                format!(
                    "{} is {other:?}; onebit implements linear RoPE scaling in GGUF files",
                    k("rope.scaling.type")
                ),
            ))
        }
    };
    if g.tensor("rope_freqs.weight").is_some() {
        return Err(Error::unsupported(
            &g.path,
            "the file carries rope_freqs.weight (per-frequency RoPE factors, as llama.cpp stores llama3 scaling); onebit reads that scaling from config.json only: run the HF directory",
        ));
    }
    let config = Config {
        hidden_size,
        intermediate_size: us("feed_forward_length")?,
        n_layers: us("block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        max_context: us("context_length")?,
        rope_theta,
        rms_norm_eps,
        bos_token_id: tok.bos_id(),
        eos_token_ids: tok.eos_ids(),
        block,
        family,
        rope_scaling,
    };
    config
        .validate()
        .map_err(|e| Error::corrupt(&g.path, 0, format!("hyperparameters: {e}")))?;
    Ok(config)
}

/// `token_embd.weight` or an untied `output.weight` (`name`).
/// The block and family of a file of architecture `arch`. `bitnet` is both 1bitLLM's
/// models (SiLU; llama.cpp's default) and BitNet 2B-4T (relu²): `bitnet.hidden_activation`
/// says which when present; without it, a SentencePiece vocabulary (`tokenizer.ggml.model`
/// `llama`, as 1bitLLM ships) means 1bitLLM and a byte-level BPE one the 2B-4T layout.
fn block_of(g: &GgufFile, arch: &str, vocab_size: usize) -> Result<(Block, Family)> {
    let key = format!("{arch}.hidden_activation");
    let act = match g.get(&key).and_then(Value::as_str) {
        None => None,
        Some(name) => Some(Activation::parse(name).ok_or_else(|| {
            Error::unsupported(
                &g.path,
                format!("{key} is {name:?}; onebit implements relu2 and silu"),
            )
        })?),
    };
    let family_of = |a: Activation| match a {
        Activation::Relu2 => Family::BitNetB158,
        Activation::Silu => Family::OneBitLlm,
    };
    Ok(match arch {
        "bitnet" => {
            let sentencepiece =
                g.get("tokenizer.ggml.model").and_then(Value::as_str) == Some("llama");
            let a = act.unwrap_or(if sentencepiece {
                Activation::Silu
            } else {
                Activation::Relu2
            });
            (Block::BitNet(a), family_of(a))
        }
        "llama" => {
            if act.is_some_and(|a| a != Activation::Silu) {
                return Err(Error::unsupported(
                    &g.path,
                    format!("{key} must be silu for a LLaMA block"),
                ));
            }
            let name = g.get("general.name").and_then(Value::as_str);
            (Block::LlamaBitLinear, Family::of_llama(name, vocab_size))
        }
        _ => {
            let a = act.unwrap_or(Activation::Relu2);
            (Block::BitNet(a), family_of(a))
        }
    })
}

fn embedding(g: &GgufFile, c: &Config, name: &str) -> Result<Embedding> {
    let t = g
        .tensor(name)
        .ok_or_else(|| Error::tensor(&g.path, name, "missing from the file"))?;
    let kind = match t.ggml_type {
        ty::F32 => EmbdType::F32,
        ty::F16 => EmbdType::F16,
        ty::BF16 => EmbdType::Bf16,
        ty::Q8_0 => EmbdType::Q8_0,
        ty::Q6_K => EmbdType::Q6K,
        _ => {
            return Err(Error::tensor(
                &g.path,
                name,
                format!(
                    "type {} is not supported for the embedding (use F32, F16, BF16, Q8_0 or Q6_K)",
                    t.type_name()
                ),
            ))
        }
    };
    expect_dims(
        g,
        t,
        &[c.hidden_size as u64, c.vocab_size as u64],
        "[hidden_size, vocab_size]",
    )?;
    Ok(Embedding {
        kind,
        rows: c.vocab_size,
        cols: c.hidden_size,
        data: g.tensor_data(t)?,
    })
}

fn expect_dims(g: &GgufFile, t: &TensorInfo, want: &[u64], what: &str) -> Result<()> {
    if t.dims != want {
        return Err(Error::tensor(
            &g.path,
            &t.name,
            format!(
                "shape {:?} (ggml order) does not match the configuration: expected {want:?} = {what} (tensor info at byte {})",
                t.dims, t.info_offset
            ),
        ));
    }
    Ok(())
}

/// Decodes a float vector (F32/F16/BF16) from little-endian bytes.
pub fn floats(kind: u32, data: &[u8]) -> Option<Vec<f32>> {
    Some(match kind {
        ty::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ty::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        ty::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// True if some 2-bit field of `data` holds the invalid code 3.
pub fn has_code3(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if v & (v >> 1) & 0x5555_5555_5555_5555 != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b & (b >> 1) & 0x55 != 0)
}

struct GgufSource<'a> {
    g: &'a GgufFile,
    ternary_types: Vec<String>,
}

impl GgufSource<'_> {
    fn find(&self, names: &Names) -> Result<&TensorInfo> {
        self.g
            .tensor(&names.gguf)
            .ok_or_else(|| Error::tensor(&self.g.path, &names.gguf, "missing from the file"))
    }
}

impl Source for GgufSource<'_> {
    fn norm(&mut self, names: &Names, len: usize) -> Result<Vec<f32>> {
        let t = self.find(names)?;
        expect_dims(self.g, t, &[len as u64], "its configured length")?;
        let data = self.g.tensor_data(t)?;
        let v = floats(t.ggml_type, data.as_slice()).ok_or_else(|| {
            Error::tensor(
                &self.g.path,
                &t.name,
                format!(
                    "type {} is not a float type (F32, F16, BF16) for a norm",
                    t.type_name()
                ),
            )
        })?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(
                &self.g.path,
                &t.name,
                format!("element {i} is not finite ({})", v[i]),
            ));
        }
        Ok(v)
    }

    fn ternary(&mut self, names: &Names, rows: usize, cols: usize) -> Result<TernaryTensor> {
        let g = self.g;
        let t = self.find(names)?;
        expect_dims(
            g,
            t,
            &[cols as u64, rows as u64],
            "[in_features, out_features]",
        )?;
        let data = g.tensor_data(t)?;
        let n = rows * cols;
        let bad = |what: String| {
            Error::tensor(
                &g.path,
                &t.name,
                format!("{what} (data at byte {})", t.offset),
            )
        };
        let (data, scale) = match t.ggml_type {
            ty::I2_S => {
                let raw = data.as_slice();
                let s = f32::from_le_bytes([
                    raw[n / 4],
                    raw[n / 4 + 1],
                    raw[n / 4 + 2],
                    raw[n / 4 + 3],
                ]);
                let codes = &raw[..n / 4];
                if has_code3(codes) {
                    let i = (0..n)
                        .find(|&i| codec::i2s_code(codes, i) == 3)
                        .unwrap_or(0);
                    return Err(bad(format!("element {i} has the invalid 2-bit code 3")));
                }
                let packed = if cols.is_multiple_of(ternary::BLOCK_ELEMS) {
                    // The file's layout is the kernels' layout: use the mapping as is.
                    data.slice(0, n / 4)
                        .ok_or_else(|| bad("I2_S codes lie outside the tensor".into()))?
                } else {
                    Bytes::owned(ternary::pack(rows, cols, |r, c| {
                        codec::i2s_code(codes, r * cols + c)
                    }))
                };
                (packed, s)
            }
            ty::SHERRY => {
                // Every 5-bit pattern is a valid block, so there is nothing to validate but
                // the size (checked by the parser); the file's layout is the kernels'.
                let len = rows * onebit_kernels::sherry::row_bytes(cols);
                let raw = data.as_slice();
                let s = f32::from_le_bytes([raw[len], raw[len + 1], raw[len + 2], raw[len + 3]]);
                if !s.is_finite() {
                    return Err(bad(format!("the weight scale {s} is not finite")));
                }
                let packed = data
                    .slice(0, len)
                    .ok_or_else(|| bad("SHERRY groups lie outside the tensor".into()))?;
                self.ternary_types.push(t.type_name());
                return Ok(TernaryTensor::sherry(rows, cols, s, packed));
            }
            ty::TQ2_0 | ty::TQ1_0 => {
                let raw = data.as_slice();
                let (packed, s) = if t.ggml_type == ty::TQ2_0 {
                    repack::tq2_0_to_kernel(raw, rows, cols)
                } else {
                    repack::tq1_0_to_kernel(raw, rows, cols)
                }
                .map_err(bad)?;
                // The file's copy is no longer needed: keep peak RSS near one copy. The pages
                // are also made unreadable, or the kernel maps them back whenever a fault on a
                // neighbouring tensor maps the page-cache folio they share.
                // SAFETY: nothing reads this tensor's window of the file again (`raw` is
                // dead and the model keeps only `packed`); other tensors' bytes never lie on
                // the whole pages inside it.
                unsafe { data.retire_pages() };
                (Bytes::owned(packed), s)
            }
            _ => {
                return Err(bad(format!(
                "type {} is not a ternary type (I2_S, TQ2_0, TQ1_0 or SHERRY); re-quantize the projections",
                t.type_name()
            )))
            }
        };
        if !scale.is_finite() {
            return Err(bad(format!("the weight scale {scale} is not finite")));
        }
        self.ternary_types.push(t.type_name());
        Ok(TernaryTensor::new(rows, cols, scale, data))
    }
}
