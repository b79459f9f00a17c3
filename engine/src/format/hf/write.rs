//! HF directory writer: the layout of microsoft/bitnet-b1.58-2B-4T (uint8-packed
//! projections plus a one-element `weight_scale`, `quantization_config` autobitlinear /
//! offline), with the embedding in the model's dtype and norms in bf16 when that is
//! exact (f32 otherwise).

use super::safetensors::{self, Dtype, OutTensor};
use super::{CONFIG, GENERATION_CONFIG, INDEX, TOKENIZER, TOKENIZER_CONFIG, WEIGHTS};
use crate::format::layout::{self, LayerTensor};
use crate::format::repack;
use crate::model::{Activation, Block, Embedding, Model, TernaryTensor};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use half::bf16;
use onebit_kernels::embd::EmbdType;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScaleDtype {
    /// As the published checkpoint stores it (rounds the scale to bf16).
    #[default]
    Bf16,
    /// Exact.
    F32,
}

#[derive(Clone, Debug)]
pub struct HfWriteOptions {
    pub scale_dtype: ScaleDtype,
    /// `bitlinear` stores 1/scale (transformers' older BitLinear); default `autobitlinear`.
    pub bitlinear: bool,
    /// Split `model.safetensors` into shards of at most this many bytes (plus one tensor).
    pub max_shard_bytes: Option<u64>,
}

impl Default for HfWriteOptions {
    fn default() -> Self {
        Self {
            scale_dtype: ScaleDtype::Bf16,
            bitlinear: false,
            max_shard_bytes: None,
        }
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A float vector as bf16 when every value survives the round trip, else f32.
fn float_tensor(name: String, v: &[f32]) -> OutTensor<'static> {
    let exact = v.iter().all(|&x| bf16::from_f32(x).to_f32() == x);
    let (dtype, data) = if exact {
        (
            Dtype::Bf16,
            v.iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        )
    } else {
        (Dtype::F32, f32_bytes(v))
    };
    OutTensor {
        name,
        dtype,
        shape: vec![v.len()],
        data: Cow::Owned(data),
    }
}

fn projection(
    name: &str,
    t: &TernaryTensor,
    opts: &HfWriteOptions,
) -> Result<[OutTensor<'static>; 2]> {
    if !t.rows.is_multiple_of(4) {
        return Err(Error::tensor(
            Path::new("<hf writer>"),
            name,
            format!(
                "out_features {} is not a multiple of 4, which the HF uint8 packing needs",
                t.rows
            ),
        ));
    }
    let packed = repack::kernel_to_hf(t.view().data, t.rows, t.cols);
    let s = if opts.bitlinear {
        1.0 / t.scale
    } else {
        t.scale
    };
    let (dtype, data) = match opts.scale_dtype {
        ScaleDtype::Bf16 => (Dtype::Bf16, bf16::from_f32(s).to_le_bytes().to_vec()),
        ScaleDtype::F32 => (Dtype::F32, s.to_le_bytes().to_vec()),
    };
    Ok([
        OutTensor {
            name: name.to_string(),
            dtype: Dtype::U8,
            shape: vec![t.rows / 4, t.cols],
            data: Cow::Owned(packed),
        },
        OutTensor {
            name: format!("{name}_scale"),
            dtype,
            shape: vec![1],
            data: Cow::Owned(data),
        },
    ])
}

/// An embedding-shaped tensor (the embedding or an untied head) under `name`.
fn embedding_tensor<'a>(name: &str, e: &'a Embedding) -> OutTensor<'a> {
    let stored = |dtype| OutTensor {
        name: name.into(),
        dtype,
        shape: vec![e.rows, e.cols],
        data: e.data.as_slice().into(),
    };
    match e.kind {
        EmbdType::F32 => stored(Dtype::F32),
        EmbdType::F16 => stored(Dtype::F16),
        EmbdType::Bf16 => stored(Dtype::Bf16),
        EmbdType::Q8_0 | EmbdType::Q6K => {
            // safetensors has no block-quantized dtypes: store the dequantized values exactly.
            let v = e.view();
            let mut vals = vec![0f32; e.rows * e.cols];
            for (r, row) in vals.chunks_exact_mut(e.cols).enumerate() {
                v.row_to_f32(r, row);
            }
            OutTensor {
                name: name.into(),
                dtype: Dtype::F32,
                shape: vec![e.rows, e.cols],
                data: Cow::Owned(f32_bytes(&vals)),
            }
        }
    }
}

/// All tensors of `model` in HF names, embedding first.
pub fn tensors<'a>(model: &'a Model, opts: &HfWriteOptions) -> Result<Vec<OutTensor<'a>>> {
    let embd = embedding_tensor(layout::HF_EMBD, &model.embed_tokens);
    let mut out = vec![embd];
    for (i, l) in model.layers.iter().enumerate() {
        for (k, p) in layout::layer_tensors(l).iter().enumerate() {
            let name = layout::names(i, k).hf;
            match p {
                LayerTensor::Norm(v) => out.push(float_tensor(name, v)),
                LayerTensor::Ternary(t) => out.extend(projection(&name, t, opts)?),
                LayerTensor::Absent => {}
            }
        }
    }
    out.push(float_tensor(layout::HF_NORM.into(), &model.norm));
    if let Some(head) = &model.lm_head {
        out.push(embedding_tensor(layout::HF_HEAD, head));
    }
    Ok(out)
}

/// `config.json` for `model`.
pub fn config_json(model: &Model, opts: &HfWriteOptions) -> serde_json::Value {
    let c = &model.config;
    let torch_dtype = match model.embed_tokens.kind {
        EmbdType::F16 => "float16",
        EmbdType::F32 | EmbdType::Q8_0 | EmbdType::Q6K => "float32",
        EmbdType::Bf16 => "bfloat16",
    };
    // The families' own config.json spellings: BitNet 2B-4T is `bitnet`, 1bitLLM's
    // reproductions are `BitnetForCausalLM` on model_type `llama`, the rest plain LLaMA.
    let (architecture, model_type) = match (c.block, c.family) {
        (Block::BitNet(Activation::Relu2), _) => ("BitNetForCausalLM", "bitnet"),
        (Block::BitNet(_), _) => ("BitnetForCausalLM", "llama"),
        (Block::LlamaBitLinear, _) => ("LlamaForCausalLM", "llama"),
    };
    let mut v = serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_act": c.block.activation().name(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_context,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": model.lm_head.is_none(),
        "torch_dtype": torch_dtype,
        "attention_bias": false,
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": if opts.bitlinear { "bitlinear" } else { "autobitlinear" },
            "quantization_mode": "offline",
        },
    });
    if c.head_dim * c.n_heads != c.hidden_size {
        v["head_dim"] = c.head_dim.into();
    }
    // The checkpoint's own name tells a LLaMA-layout family apart when read back.
    if let Some((_, name)) = model
        .provenance
        .metadata
        .iter()
        .find(|(k, _)| k == super::NAME_KEY || k == "general.name")
    {
        v["_name_or_path"] = name.trim_matches('"').into();
    }
    if let Some(r) = c.rope_scaling {
        v["rope_scaling"] = serde_json::to_value(r).unwrap_or_default();
    }
    if let Some(b) = c.bos_token_id {
        v["bos_token_id"] = b.into();
    }
    if let Some(&e) = c.eos_token_ids.first() {
        v["eos_token_id"] = e.into();
    }
    v
}

/// Writes `model` and `tok` as an HF directory (created if missing).
pub fn write_dir(dir: &Path, model: &Model, tok: &Tokenizer, opts: &HfWriteOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let write_json = |name: &str, v: &serde_json::Value| {
        let p = dir.join(name);
        let text = serde_json::to_string_pretty(v).unwrap_or_default();
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    write_json(CONFIG, &config_json(model, opts))?;
    let mut gen = serde_json::json!({ "eos_token_id": tok.eos_ids(), "do_sample": false });
    if let Some(b) = tok.bos_id() {
        gen["bos_token_id"] = b.into();
    }
    write_json(GENERATION_CONFIG, &gen)?;
    let tp = dir.join(TOKENIZER);
    std::fs::write(&tp, tok.to_json()?).map_err(|e| Error::io(&tp, e))?;
    if let Some(t) = tok.chat_template() {
        write_json(
            TOKENIZER_CONFIG,
            &serde_json::json!({
                "chat_template": t.source,
                "bos_token": t.bos_token,
                "eos_token": t.eos_token,
            }),
        )?;
    }
    match &model.medusa {
        Some(heads) => crate::format::medusa::write_hf(dir, heads)?,
        None => {
            let _ = std::fs::remove_file(dir.join(crate::format::medusa::HF_FILE));
        }
    }

    let all = tensors(model, opts)?;
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let Some(limit) = opts.max_shard_bytes else {
        let _ = std::fs::remove_file(dir.join(INDEX));
        return safetensors::write(&dir.join(WEIGHTS), &all, &meta);
    };
    let mut shards: Vec<Vec<OutTensor<'_>>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in all {
        let len = t.data.len() as u64;
        if size > 0 && size + len > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(s) = shards.last_mut() {
            s.push(t);
        }
    }
    let n = shards.len();
    let mut map = serde_json::Map::new();
    let mut total = 0u64;
    for (k, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        for t in shard {
            map.insert(t.name.clone(), file.clone().into());
            total += t.data.len() as u64;
        }
        safetensors::write(&dir.join(&file), shard, &meta)?;
    }
    let _ = std::fs::remove_file(dir.join(WEIGHTS));
    write_json(
        INDEX,
        &serde_json::json!({ "metadata": { "total_size": total }, "weight_map": map }),
    )
}
