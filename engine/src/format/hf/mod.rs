//! Hugging Face model directories: `config.json`, `generation_config.json`,
//! `model.safetensors` (or shards listed in `model.safetensors.index.json`) and
//! `tokenizer.json`, as microsoft/bitnet-b1.58-2B-4T ships them (uint8-packed ternary
//! projections with a `weight_scale` each), or with float projection weights that are
//! ternarized at load exactly as BitNet does (absmean).

pub mod safetensors;
mod write;

pub use write::{config_json, tensors, write_dir, HfWriteOptions, ScaleDtype};

use super::layout::{self, Names, Source};
use super::{codec, repack};
use crate::chat::ChatTemplate;
use crate::model::{
    Activation, Block, Config, Embedding, Family, Model, Provenance, RopeScaling, TernaryTensor,
};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use onebit_kernels::embd::EmbdType;
use safetensors::{Dtype, Entry, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// SentencePiece's model file, read when a folder has no `tokenizer.json`.
pub const SENTENCEPIECE: &str = "tokenizer.model";
/// Provenance metadata key of the checkpoint's own name (`_name_or_path`).
pub const NAME_KEY: &str = "_name_or_path";

/// How the stored `weight_scale` relates to the effective weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleRule {
    /// transformers `AutoBitLinear`: effective = ternary × weight_scale.
    Multiply,
    /// transformers `BitLinear`: effective = ternary ÷ weight_scale.
    Divide,
}

/// The safetensors files of a model and which file holds each tensor.
pub struct Weights {
    files: Vec<SafeTensors>,
    index: HashMap<String, usize>,
}

impl Weights {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(WEIGHTS);
        let index_path = dir.join(INDEX);
        if index_path.exists() {
            let text = std::fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: Value = serde_json::from_slice(&text).map_err(|e| {
                Error::corrupt(
                    &index_path,
                    e.column() as u64,
                    format!("not valid JSON: {e}"),
                )
            })?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::corrupt(&index_path, 0, "no \"weight_map\" object"))?;
            let mut shard_ids: HashMap<String, usize> = HashMap::new();
            let mut files = Vec::new();
            let mut index = HashMap::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    Error::corrupt(
                        &index_path,
                        0,
                        format!("weight_map['{name}'] is not a file name"),
                    )
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(Error::corrupt(
                        &index_path,
                        0,
                        format!("shard name {file:?} must be a plain file name"),
                    ));
                }
                let id = match shard_ids.get(file) {
                    Some(&id) => id,
                    None => {
                        files.push(SafeTensors::open(&dir.join(file))?);
                        shard_ids.insert(file.to_string(), files.len() - 1);
                        files.len() - 1
                    }
                };
                if files[id].get(name).is_none() {
                    return Err(Error::tensor(
                        dir.join(file),
                        name,
                        format!("{INDEX} places it in this shard, but the shard does not hold it"),
                    ));
                }
                index.insert(name.clone(), id);
            }
            Ok(Self { files, index })
        } else if single.exists() {
            let f = SafeTensors::open(&single)?;
            let index = f.names().map(|n| (n.to_string(), 0)).collect();
            Ok(Self {
                files: vec![f],
                index,
            })
        } else {
            Err(Error::unsupported(
                dir,
                format!("no {WEIGHTS} or {INDEX} in this directory"),
            ))
        }
    }

    pub fn get(&self, name: &str) -> Option<(&SafeTensors, &Entry)> {
        let &i = self.index.get(name)?;
        let f = &self.files[i];
        Some((f, f.get(name)?))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.file_len()).sum()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(path, e.column() as u64, format!("not valid JSON: {e}")))
}

/// An id or list of ids (`eos_token_id` may be either).
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Hyperparameters and quantization settings from `config.json`.
pub struct HfConfig {
    pub config: Config,
    pub scale_rule: ScaleRule,
    pub tied: bool,
    pub raw: Value,
}

pub fn parse_config(path: &Path, v: &Value) -> Result<HfConfig> {
    let err = |what: String| Error::corrupt(path, 0, what);
    let num = |k: &str| -> Result<Option<usize>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| err(format!("\"{k}\" should be a non-negative integer, is {x}"))),
        }
    };
    let req = |k: &str| num(k)?.ok_or_else(|| err(format!("\"{k}\" is missing")));
    let float = |k: &str, default: f64| -> Result<f32> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(default as f32),
            Some(x) => x
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| err(format!("\"{k}\" should be a number, is {x}"))),
        }
    };
    let (block, family) = block_of(path, v)?;
    let rope_scaling = rope_scaling(path, v.get("rope_scaling"))?;
    let hidden_size = req("hidden_size")?;
    let n_heads = req("num_attention_heads")?;
    if n_heads == 0 {
        return Err(err("num_attention_heads is 0".into()));
    }
    let head_dim = num("head_dim")?.unwrap_or(hidden_size / n_heads);
    let q = v.get("quantization_config");
    let linear_class = q
        .and_then(|q| q.get("linear_class"))
        .and_then(Value::as_str);
    // transformers and mlx-lm: the scale is a multiplier only for AutoBitLinear.
    let scale_rule = if linear_class == Some("autobitlinear") {
        ScaleRule::Multiply
    } else {
        ScaleRule::Divide
    };
    if q.is_some() && linear_class.is_none() && family == Family::BitNetB158 {
        tracing::warn!(
            "{}: quantization_config has no linear_class; treating weight_scale as transformers' BitLinear does (effective weight = ternary / weight_scale)",
            path.display()
        );
    }
    let config = Config {
        hidden_size,
        intermediate_size: req("intermediate_size")?,
        n_layers: req("num_hidden_layers")?,
        n_heads,
        n_kv_heads: num("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        vocab_size: req("vocab_size")?,
        max_context: num("max_position_embeddings")?.unwrap_or(2048),
        rope_theta: float("rope_theta", 500000.0)?,
        rms_norm_eps: float("rms_norm_eps", 1e-5)?,
        bos_token_id: num("bos_token_id")?.map(|b| b as u32),
        eos_token_ids: ids(v.get("eos_token_id")),
        block,
        family,
        rope_scaling,
    };
    config
        .validate()
        .map_err(|e| err(format!("hyperparameters: {e}")))?;
    // transformers' default differs by class: BitNet 2B-4T's checkpoints tie, LlamaConfig
    // defaults to an untied head.
    let tied = v
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(family == Family::BitNetB158);
    Ok(HfConfig {
        config,
        scale_rule,
        tied,
        raw: v.clone(),
    })
}

/// The block structure and family `config.json` describes: `model_type` `bitnet` is
/// BitNet b1.58 (relu² unless `hidden_act` says otherwise), `BitnetForCausalLM` on
/// `llama` is 1bitLLM's (sub-norms, SiLU), and any other `llama` with
/// `quantization_config.quant_method` `bitnet` is LLaMA with BitLinear layers.
fn block_of(path: &Path, v: &Value) -> Result<(Block, Family)> {
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("bitnet");
    let act = match v.get("hidden_act").and_then(Value::as_str) {
        None => None,
        Some(name) => Some(Activation::parse(name).ok_or_else(|| {
            Error::unsupported(
                path,
                format!("hidden_act is {name:?}; onebit implements relu2 and silu"),
            )
        })?),
    };
    let is_arch = |name: &str| {
        v.get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(name)))
    };
    let quant_method = v
        .pointer("/quantization_config/quant_method")
        .and_then(Value::as_str);
    match model_type {
        "bitnet" => Ok((
            Block::BitNet(act.unwrap_or(Activation::Relu2)),
            Family::BitNetB158,
        )),
        "llama" if is_arch("BitnetForCausalLM") => Ok((
            Block::BitNet(act.unwrap_or(Activation::Silu)),
            Family::OneBitLlm,
        )),
        "llama" if quant_method == Some("bitnet") => {
            if act.is_some_and(|a| a != Activation::Silu) {
                return Err(Error::unsupported(
                    path,
                    "a LLaMA model with BitLinear layers uses hidden_act silu",
                ));
            }
            let name = v.get("_name_or_path").and_then(Value::as_str);
            let vocab = v.get("vocab_size").and_then(Value::as_u64).unwrap_or(0);
            Ok((
                Block::LlamaBitLinear,
                Family::of_llama(name, vocab as usize),
            ))
        }
        "llama" => Err(Error::unsupported(
            path,
            "a LLaMA model without quantization_config.quant_method \"bitnet\" is not a ternary model; onebit runs 1.58-bit checkpoints (BitNet b1.58, 1bitLLM, HF1BitLLM, Falcon3 1.58-bit, Falcon-E)",
        )),
        other => Err(Error::unsupported(
            path,
            format!("model_type is {other:?}; onebit runs \"bitnet\" and ternary \"llama\" (quant_method bitnet) models"),
        )),
    }
}

/// `rope_scaling`: absent, null or `default` means none; `linear` and `llama3` are
/// implemented; any other kind is refused rather than run wrong.
fn rope_scaling(path: &Path, v: Option<&Value>) -> Result<Option<RopeScaling>> {
    let Some(r) = v.filter(|r| !r.is_null()) else {
        return Ok(None);
    };
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str| -> Result<f32> {
        r.get(k)
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    0,
                    format!("rope_scaling ({kind}) has no number \"{k}\""),
                )
            })
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: f("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(Error::unsupported(
                path,
                format!(
                    "rope_scaling type {other:?} is not implemented (onebit has linear and llama3)"
                ),
            ))
        }
    })
}

/// The chat template of `tokenizer_config.json` (`v`): a string, or a list of named
/// templates of which onebit takes `default`; with the `bos_token` / `eos_token` texts it
/// refers to (a string or an added-token object).
fn chat_template(path: &Path, v: &Value, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
    let source = match v.get("chat_template") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    0,
                    "chat_template is a list without a \"default\" template",
                )
            })?
            .to_string(),
        Some(other) => {
            return Err(Error::corrupt(
                path,
                0,
                format!("chat_template should be a string, is {other}"),
            ))
        }
    };
    let token = |key: &str, fallback: Option<u32>| -> String {
        match v.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Some(Value::Null) => String::new(),
            _ => tok.token_text(fallback),
        }
    };
    Ok(Some(ChatTemplate {
        source,
        bos_token: token("bos_token", tok.bos_id()),
        eos_token: token("eos_token", tok.eos_ids().first().copied()),
    }))
}

/// Loads an HF model directory.
pub fn load_dir(dir: &Path) -> Result<(Model, Tokenizer)> {
    let config_path = dir.join(CONFIG);
    if !config_path.exists() {
        return Err(Error::unsupported(
            dir,
            format!("no {CONFIG}: not a Hugging Face model directory"),
        ));
    }
    let hf = parse_config(&config_path, &read_json(&config_path)?)?;
    let mut config = hf.config.clone();
    let gen_path = dir.join(GENERATION_CONFIG);
    let generation = if gen_path.exists() {
        Some(read_json(&gen_path)?)
    } else {
        None
    };
    // tokenizer.json first; LLaMA-2-style folders may ship only SentencePiece's model.
    let json_path = dir.join(TOKENIZER);
    let spm_path = dir.join(SENTENCEPIECE);
    let (tok_path, mut tokenizer) = if json_path.exists() {
        let t = Tokenizer::from_file(&json_path)?;
        (json_path, t)
    } else if spm_path.exists() {
        let t = Tokenizer::from_sentencepiece_file(&spm_path)?;
        (spm_path, t)
    } else {
        return Err(Error::unsupported(
            dir,
            format!(
                "no {TOKENIZER} or {SENTENCEPIECE}: copy the model's tokenizer into the directory"
            ),
        ));
    };
    let mut eos = generation
        .as_ref()
        .map(|g| ids(g.get("eos_token_id")))
        .unwrap_or_default();
    eos.extend(&config.eos_token_ids);
    let bos = config.bos_token_id.or_else(|| {
        generation
            .as_ref()
            .and_then(|g| ids(g.get("bos_token_id")).first().copied())
    });
    tokenizer.set_special_ids(bos, &eos);
    let tok_config_path = dir.join(TOKENIZER_CONFIG);
    if tok_config_path.exists() {
        let v = read_json(&tok_config_path)?;
        tokenizer.set_chat_template(chat_template(&tok_config_path, &v, &tokenizer)?);
    }
    config.bos_token_id = tokenizer.bos_id();
    config.eos_token_ids = tokenizer.eos_ids();
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::unsupported(
            &tok_path,
            format!(
                "the tokenizer has {} tokens but config.json vocab_size is {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        ));
    }

    let weights = Weights::open(dir)?;
    let lm_head = match weights.get(layout::HF_HEAD) {
        Some(_) if !hf.tied => Some(embedding(&weights, &config, layout::HF_HEAD)?),
        Some((f, _)) => {
            tracing::warn!(
                "{}: ignoring lm_head.weight (tie_word_embeddings is true)",
                f.path.display()
            );
            None
        }
        None if !hf.tied => {
            return Err(Error::unsupported(
                dir,
                "tie_word_embeddings is false but the checkpoint has no lm_head.weight",
            ))
        }
        None => None,
    };
    let embed_tokens = embedding(&weights, &config, layout::HF_EMBD)?;
    let mut src = HfSource {
        w: &weights,
        rule: hf.scale_rule,
        float_projections: 0,
    };
    let norm = src.norm(
        &Names {
            gguf: String::new(),
            hf: layout::HF_NORM.into(),
        },
        config.hidden_size,
    )?;
    let layers = layout::build_layers(&config, &mut src)?;
    let n_float = src.float_projections;
    let ternary_type = if n_float > 0 {
        "float (ternarized at load)"
    } else {
        "uint8-packed"
    };
    let mut metadata = vec![
        (
            "linear_class".into(),
            hf.raw
                .pointer("/quantization_config/linear_class")
                .map(|v| v.to_string())
                .unwrap_or_default(),
        ),
        (
            "quantization_mode".into(),
            hf.raw
                .pointer("/quantization_config/quantization_mode")
                .map(|v| v.to_string())
                .unwrap_or_default(),
        ),
        ("embed_tokens dtype".into(), embed_tokens.kind.name().into()),
        ("shards".into(), weights.files.len().to_string()),
    ];
    if let Some(name) = hf.raw.get("_name_or_path").and_then(Value::as_str) {
        metadata.push((NAME_KEY.into(), name.into()));
    }
    let medusa = super::medusa::from_hf_dir(dir, config.hidden_size)?;
    let provenance = Provenance {
        format: "hf".into(),
        ternary_type: ternary_type.into(),
        path: dir.to_path_buf(),
        file_bytes: weights.total_bytes(),
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

/// The embedding or an untied head (`name`), `[vocab_size, hidden_size]`.
fn embedding(w: &Weights, c: &Config, name: &str) -> Result<Embedding> {
    let (f, e) = w.get(name).ok_or_else(|| {
        Error::unsupported(
            PathBuf::from(WEIGHTS),
            format!("tensor '{name}' is missing"),
        )
    })?;
    let kind = match e.dtype {
        Dtype::F32 => EmbdType::F32,
        Dtype::F16 => EmbdType::F16,
        Dtype::Bf16 => EmbdType::Bf16,
        d => {
            return Err(Error::tensor(
                &f.path,
                name,
                format!(
                    "dtype {} is not supported for the embedding (BF16, F16, F32)",
                    d.name()
                ),
            ))
        }
    };
    if e.shape != [c.vocab_size, c.hidden_size] {
        return Err(Error::tensor(
            &f.path,
            name,
            format!(
                "shape {:?} does not match [vocab_size, hidden_size] = [{}, {}]",
                e.shape, c.vocab_size, c.hidden_size
            ),
        ));
    }
    Ok(Embedding {
        kind,
        rows: c.vocab_size,
        cols: c.hidden_size,
        data: f.data(e)?,
    })
}

struct HfSource<'a> {
    w: &'a Weights,
    rule: ScaleRule,
    float_projections: usize,
}

impl HfSource<'_> {
    fn find(&self, name: &str) -> Result<(&SafeTensors, &Entry)> {
        let found = self
            .w
            .get(name)
            .or_else(|| layout::hf_alias(name).and_then(|old| self.w.get(&old)));
        found.ok_or_else(|| {
            let file = self
                .w
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_else(|| PathBuf::from(WEIGHTS));
            Error::tensor(file, name, "missing from the model")
        })
    }
}

impl Source for HfSource<'_> {
    fn norm(&mut self, names: &Names, len: usize) -> Result<Vec<f32>> {
        let (f, e) = self.find(&names.hf)?;
        if e.shape != [len] {
            return Err(Error::tensor(
                &f.path,
                &e.name,
                format!("shape {:?} does not match the configured [{len}]", e.shape),
            ));
        }
        let data = f.data(e)?;
        let v = e.dtype.to_f32(data.as_slice()).ok_or_else(|| {
            Error::tensor(
                &f.path,
                &e.name,
                format!(
                    "dtype {} is not a float type (BF16, F16, F32) for a norm",
                    e.dtype.name()
                ),
            )
        })?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(
                &f.path,
                &e.name,
                format!("element {i} is not finite ({})", v[i]),
            ));
        }
        Ok(v)
    }

    fn ternary(&mut self, names: &Names, rows: usize, cols: usize) -> Result<TernaryTensor> {
        let (f, e) = self.find(&names.hf)?;
        let bad = |what: String| Error::tensor(&f.path, &e.name, what);
        let data = f.data(e)?;
        if e.dtype == Dtype::U8 {
            if !rows.is_multiple_of(4) || e.shape != [rows / 4, cols] {
                return Err(bad(format!(
                    "packed shape {:?} does not match [out_features/4, in_features] = [{}/4, {cols}] from config.json",
                    e.shape, rows
                )));
            }
            let packed = data.as_slice();
            if super::gguf_model::has_code3(packed) {
                return Err(bad(
                    "holds the invalid 2-bit code 3 (codes are w+1 in {0, 1, 2})".into(),
                ));
            }
            let scale_name = format!("{}_scale", names.hf);
            let (sf, se) = self.find(&scale_name)?;
            let sv = se
                .dtype
                .to_f32(sf.data(se)?.as_slice())
                .filter(|v| v.len() == 1)
                .ok_or_else(|| {
                    Error::tensor(
                        &sf.path,
                        &se.name,
                        format!(
                            "must hold one BF16/F16/F32 value, has {} {:?}",
                            se.dtype.name(),
                            se.shape
                        ),
                    )
                })?[0];
            if !sv.is_finite() || sv == 0.0 {
                return Err(Error::tensor(
                    &sf.path,
                    &se.name,
                    format!("scale {sv} must be finite and nonzero"),
                ));
            }
            let scale = match self.rule {
                ScaleRule::Multiply => sv,
                ScaleRule::Divide => 1.0 / sv,
            };
            let data = repack::hf_to_kernel(packed, rows, cols);
            return Ok(TernaryTensor::new(
                rows,
                cols,
                scale,
                crate::model::Bytes::owned(data),
            ));
        }
        if e.shape != [rows, cols] {
            return Err(bad(format!(
                "shape {:?} does not match [out_features, in_features] = [{rows}, {cols}]",
                e.shape
            )));
        }
        let w = e.dtype.to_f32(data.as_slice()).ok_or_else(|| {
            bad(format!(
                "dtype {} is neither uint8-packed ternary nor a float type",
                e.dtype.name()
            ))
        })?;
        if w.iter().any(|x| !x.is_finite()) {
            return Err(bad("holds non-finite weights".into()));
        }
        let (codes, scale) = codec::ternarize_absmean(&w);
        self.float_projections += 1;
        let data = repack::pack_codes(&codes, rows, cols);
        Ok(TernaryTensor::new(
            rows,
            cols,
            scale,
            crate::model::Bytes::owned(data),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu",
            "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 131072,
            "quantization_config": {"quant_method": "bitnet"},
        })
    }

    fn parse(v: &Value) -> Result<HfConfig> {
        parse_config(Path::new("config.json"), v)
    }

    #[test]
    fn families_are_told_apart() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.config.block, Block::LlamaBitLinear);
        assert_eq!(c.config.family, Family::Falcon3, "by vocabulary");
        assert!(!c.tied, "LlamaConfig's default head is untied");
        let mut v = base();
        v["_name_or_path"] = "tiiuae/Falcon-E-3B-Instruct".into();
        assert_eq!(parse(&v).unwrap().config.family, Family::FalconE, "by name");
        let mut v = base();
        v["architectures"] = json!(["BitnetForCausalLM"]);
        v.as_object_mut().unwrap().remove("quantization_config");
        let c = parse(&v).unwrap().config;
        assert_eq!(
            (c.block, c.family),
            (Block::BitNet(Activation::Silu), Family::OneBitLlm)
        );
        let mut v = base();
        v["model_type"] = "bitnet".into();
        v["hidden_act"] = "relu2".into();
        let c = parse(&v).unwrap();
        assert_eq!(c.config.block, Block::BitNet(Activation::Relu2));
        assert!(c.tied, "BitNet 2B-4T ties its head");
    }

    #[test]
    fn what_onebit_cannot_run_is_refused_with_the_reason() {
        let refused = |edit: &dyn Fn(&mut Value), needle: &str| {
            let mut v = base();
            edit(&mut v);
            let e = parse(&v).err().expect("refused").to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        };
        refused(&|v| v["model_type"] = "mistral".into(), "\"mistral\"");
        refused(
            &|v| {
                v.as_object_mut().unwrap().remove("quantization_config");
            },
            "not a ternary model",
        );
        refused(&|v| v["hidden_act"] = "gelu".into(), "gelu");
        refused(
            &|v| v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0}),
            "yarn",
        );
        refused(
            &|v| v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0}),
            "low_freq_factor",
        );
    }

    #[test]
    fn rope_scaling_is_read() {
        let mut v = base();
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = parse(&v).unwrap().config;
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        v["rope_scaling"] = json!({"rope_type": "default"});
        assert_eq!(parse(&v).unwrap().config.rope_scaling, None);
    }
}
