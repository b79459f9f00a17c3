//! GGUF v3 writer: a [`Model`] and its [`Tokenizer`] under the architecture name the
//! reference tools give its family: BitNet 2B-4T as bitnet.cpp's `bitnet-b1.58` with I2_S
//! projections (or onebit's SHERRY 3:4 ones) or llama.cpp's `bitnet` with TQ2_0 / TQ1_0;
//! 1bitLLM's models as `bitnet`; LLaMA-BitLinear models (Llama3-8B-1.58, Falcon3 1.58-bit,
//! Falcon-E) as `llama`, as bitnet.cpp's converter writes them. The key set mirrors what
//! those tools write (see the tiny-a fixtures): hyperparameters under the arch prefix, the
//! full `tokenizer.ggml.*` set, F32 norms, the embedding in the model's own type, and
//! `output.weight` only for an untied head.

use super::gguf::{ty, Value, DEFAULT_ALIGNMENT, MAGIC};
use super::layout::{self, LayerTensor};
use super::{codec, repack};
use crate::model::{Activation, Block, Model, RopeScaling, TernaryTensor};
use crate::tokenizer::{spm, token_type, Pieces, Tokenizer, LLAMA3_PATTERN};
use crate::{Error, Result};
use half::f16;
use onebit_kernels::embd::EmbdType;
use onebit_kernels::{sherry, ternary};
use std::io::Write;
use std::path::Path;

/// Ternary storage type of the projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TernaryType {
    /// bitnet.cpp's I2_S (arch `bitnet-b1.58` for the 2B-4T block).
    #[default]
    I2S,
    /// llama.cpp TQ2_0 (arch `bitnet`).
    Tq2_0,
    /// llama.cpp TQ1_0 (arch `bitnet`).
    Tq1_0,
    /// onebit's Sherry 3:4 sparse ternary (arch `bitnet-b1.58`); the weights must already
    /// be 3:4 (`onebit convert --format sherry` projects them).
    Sherry,
}

impl TernaryType {
    pub fn name(self) -> &'static str {
        match self {
            Self::I2S => "I2_S",
            Self::Tq2_0 => "TQ2_0",
            Self::Tq1_0 => "TQ1_0",
            Self::Sherry => "SHERRY",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "I2_S" | "I2S" => Some(Self::I2S),
            "TQ2_0" => Some(Self::Tq2_0),
            "TQ1_0" => Some(Self::Tq1_0),
            "SHERRY" => Some(Self::Sherry),
            _ => None,
        }
    }

    fn ggml_type(self) -> u32 {
        match self {
            Self::I2S => ty::I2_S,
            Self::Tq2_0 => ty::TQ2_0,
            Self::Tq1_0 => ty::TQ1_0,
            Self::Sherry => ty::SHERRY,
        }
    }

    /// `general.file_type` (llama_ftype) the tools write for this type.
    fn file_type(self) -> u32 {
        match self {
            Self::I2S => 40,
            Self::Tq1_0 => 36,
            Self::Tq2_0 => 37,
            // No llama_ftype names it; the type id again, so it cannot alias one that does.
            Self::Sherry => ty::SHERRY,
        }
    }

    /// The `general.architecture` a model of `block` gets in this type's files.
    pub fn arch(self, block: Block) -> &'static str {
        match (block, self) {
            (Block::BitNet(Activation::Relu2), Self::I2S | Self::Sherry) => "bitnet-b1.58",
            (Block::BitNet(_), _) => "bitnet",
            (Block::LlamaBitLinear, _) => "llama",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct GgufWriteOptions {
    pub ternary: TernaryType,
    /// `general.name`; defaults to the model file's stem.
    pub name: Option<String>,
}

/// Metadata and tensors of a GGUF file to write.
pub type Contents<'a> = (Vec<(String, Value)>, Vec<OutTensor<'a>>);

type DataFn<'a> = Box<dyn Fn(&mut dyn Write) -> std::io::Result<()> + 'a>;

/// A tensor to write; its data is produced when written so large models stream.
pub struct OutTensor<'a> {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub size: u64,
    data: DataFn<'a>,
}

impl<'a> OutTensor<'a> {
    pub fn from_bytes(
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: u32,
        bytes: std::borrow::Cow<'a, [u8]>,
    ) -> Self {
        let size = bytes.len() as u64;
        Self {
            name: name.into(),
            dims,
            ggml_type,
            size,
            data: Box::new(move |w| w.write_all(&bytes)),
        }
    }

    pub fn lazy(
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: u32,
        size: u64,
        f: impl Fn(&mut dyn Write) -> std::io::Result<()> + 'a,
    ) -> Self {
        Self {
            name: name.into(),
            dims,
            ggml_type,
            size,
            data: Box::new(f),
        }
    }
}

/// Writes a GGUF v3 file: metadata in order, tensor infos, aligned data.
pub fn write_gguf(
    w: &mut dyn Write,
    kv: &[(String, Value)],
    tensors: &[OutTensor<'_>],
) -> std::io::Result<()> {
    let align = kv
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(DEFAULT_ALIGNMENT);
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_str(&mut head, k);
        head.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.size).div_ceil(align) * align;
    }
    let pad = |n: u64| vec![0u8; (n.div_ceil(align) * align - n) as usize];
    head.extend(pad(head.len() as u64));
    w.write_all(&head)?;
    for t in tensors {
        let mut counted = Counting {
            inner: &mut *w,
            n: 0,
        };
        (t.data)(&mut counted)?;
        if counted.n != t.size {
            return Err(std::io::Error::other(format!(
                "tensor '{}' produced {} bytes, declared {}",
                t.name, counted.n, t.size
            )));
        }
        w.write_all(&pad(t.size))?;
    }
    w.flush()
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            // An empty array has no element to name its type; strings are the common case.
            let et = a.first().map_or(8, Value::type_id);
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
    }
}

/// The `tokenizer.ggml.*` keys that describe `tok` (byte-level BPE).
pub fn tokenizer_metadata(tok: &Tokenizer) -> Result<Vec<(String, Value)>> {
    let err =
        |what: String| Error::Tokenizer(format!("cannot write the tokenizer to GGUF: {what}"));
    let json: serde_json::Value =
        serde_json::from_str(&tok.to_json()?).map_err(|e| err(format!("tokenizer JSON: {e}")))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(format!("model type {} is not BPE", model["type"])));
    }
    let sentencepiece = tok.pieces() == Pieces::SentencePiece;
    let pre = if sentencepiece {
        None
    } else {
        Some(pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
            err("its pre-tokenizer is neither the LLaMA-3 split nor GPT-2 byte-level, which GGUF readers could not reproduce".into())
        })?)
    };
    let n = tok.vocab_size();
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![token_type::NORMAL; n];
    if let Some(vocab) = model["vocab"].as_object() {
        for (s, id) in vocab {
            if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
                *slot = Some(s.clone());
            }
        }
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            continue;
        };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(content.to_string());
            types[id as usize] = if t["special"].as_bool() == Some(true) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
        }
    }
    if sentencepiece {
        let unk = model["unk_token"].as_str();
        for (i, t) in tokens.iter().enumerate() {
            let Some(t) = t.as_deref() else { continue };
            if spm::byte_piece(t).is_some() {
                types[i] = token_type::BYTE;
            } else if Some(t) == unk {
                types[i] = token_type::UNKNOWN;
            }
        }
    }
    let merge_pairs = bpe_merges(&model["merges"]).map_err(err)?;
    let scores = spm::scores_from_merges(&tokens, &merge_pairs);
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Value::String(t.unwrap_or_else(|| {
                types[i] = 5; // unused slot
                format!("[PAD{i}]")
            }))
        })
        .collect();
    let types = Value::Array(types.into_iter().map(Value::I32).collect());
    let mut kv = match pre {
        // llama.cpp's SentencePiece reader merges by score: scores that keep the merge order.
        None => vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("llama".into()),
            ),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
            (
                "tokenizer.ggml.scores".to_string(),
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            ),
            ("tokenizer.ggml.token_type".to_string(), types),
            (
                "tokenizer.ggml.add_space_prefix".to_string(),
                Value::Bool(prepends_a_space(&json)),
            ),
        ],
        Some(pre) => vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            ("tokenizer.ggml.pre".to_string(), Value::String(pre.into())),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
            ("tokenizer.ggml.token_type".to_string(), types),
            (
                "tokenizer.ggml.merges".to_string(),
                Value::Array(
                    merge_pairs
                        .into_iter()
                        .map(|(l, r)| Value::String(format!("{l} {r}")))
                        .collect(),
                ),
            ),
        ],
    };
    if let Some(b) = tok.bos_id() {
        kv.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    let eos = tok.eos_ids();
    if let Some(&e) = eos.first() {
        kv.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
    }
    let eot = tok
        .token_to_id("<|eot_id|>")
        .filter(|id| eos.contains(id))
        .or_else(|| eos.get(1).copied());
    if let Some(e) = eot {
        kv.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(e)));
    }
    kv.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(tok.bos_id().is_some()),
    ));
    Ok(kv)
}

/// An HF BPE's merges, written as strings ("a b") or pairs (["a", "b"]).
fn bpe_merges(merges: &serde_json::Value) -> std::result::Result<Vec<(String, String)>, String> {
    merges
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::String(s) => s
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| (s[..i].to_string(), s[i + 1..].to_string()))
                .ok_or_else(|| format!("merge {s:?} is not two tokens separated by a space")),
            serde_json::Value::Array(p) if p.len() == 2 => Ok((
                p[0].as_str().unwrap_or("").to_string(),
                p[1].as_str().unwrap_or("").to_string(),
            )),
            other => Err(format!("merge {other} is not a pair")),
        })
        .collect()
}

/// Whether a SentencePiece tokenizer.json puts "▁" in front of the text: a Prepend
/// normalizer (LLaMA-2's legacy form) or a Metaspace pre-tokenizer that prepends.
fn prepends_a_space(json: &serde_json::Value) -> bool {
    let normalizers = match json["normalizer"]["type"].as_str() {
        Some("Sequence") => json["normalizer"]["normalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Some(_) => vec![json["normalizer"].clone()],
        None => vec![],
    };
    let prepend = normalizers.iter().any(|n| n["type"] == "Prepend");
    let metaspace = json["pre_tokenizer"]["type"] == "Metaspace"
        && json["pre_tokenizer"]["prepend_scheme"].as_str() != Some("never");
    prepend || metaspace
}

/// `tokenizer.ggml.pre` for an HF pre-tokenizer, if GGUF readers know it.
fn pre_name(p: &serde_json::Value) -> Option<&'static str> {
    match p["type"].as_str()? {
        "ByteLevel" if p["use_regex"].as_bool() != Some(false) => Some("gpt2"),
        "Sequence" => {
            let parts = p["pretokenizers"].as_array()?;
            let split = parts.iter().any(|x| {
                x["type"] == "Split" && x["pattern"]["Regex"].as_str() == Some(LLAMA3_PATTERN)
            });
            let bytelevel = parts
                .iter()
                .any(|x| x["type"] == "ByteLevel" && x["use_regex"].as_bool() == Some(false));
            (split && bytelevel && parts.len() == 2).then_some("llama-bpe")
        }
        _ => None,
    }
}

fn embd_type(k: EmbdType) -> u32 {
    match k {
        EmbdType::F32 => ty::F32,
        EmbdType::F16 => ty::F16,
        EmbdType::Bf16 => ty::BF16,
        EmbdType::Q8_0 => ty::Q8_0,
        EmbdType::Q6K => ty::Q6_K,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn ternary_tensor<'a>(
    name: String,
    t: &'a TernaryTensor,
    tt: TernaryType,
) -> Result<OutTensor<'a>> {
    let (rows, cols) = (t.rows, t.cols);
    let n = rows * cols;
    let dims = vec![cols as u64, rows as u64];
    let v = t.view();
    let code = move |i: usize| v.code(i / cols, i % cols);
    let bad = |what: String| Error::tensor(Path::new("<gguf writer>"), &name, what);
    match tt {
        TernaryType::Sherry => {
            let size = (rows * sherry::row_bytes(cols) + codec::I2S_TAIL) as u64;
            let scale = t.scale;
            let packed: std::borrow::Cow<'a, [u8]> = match t.sherry_view() {
                Some(s) => std::borrow::Cow::Borrowed(s.data),
                None => {
                    let v = t.view();
                    let w = |r, c| v.code(r, c) as i8 - 1;
                    std::borrow::Cow::Owned(
                        sherry::pack(rows, cols, w).map_err(|e| bad(e.to_string()))?,
                    )
                }
            };
            Ok(OutTensor::lazy(name, dims, ty::SHERRY, size, move |w| {
                w.write_all(&packed)?;
                let mut tail = [0u8; codec::I2S_TAIL];
                tail[..4].copy_from_slice(&scale.to_le_bytes());
                w.write_all(&tail)
            }))
        }
        TernaryType::I2S => {
            if n % codec::I2S_BLOCK_ELEMS != 0 {
                return Err(bad(format!(
                    "I2_S needs rows × cols to be a multiple of 128 ({rows} × {cols})"
                )));
            }
            let size = (n / 4 + codec::I2S_TAIL) as u64;
            let scale = t.scale;
            if cols % ternary::BLOCK_ELEMS == 0 {
                // The kernels' layout is I2_S's: copy the codes as they are.
                let codes = &t.view().data[..n / 4];
                Ok(OutTensor::lazy(name, dims, ty::I2_S, size, move |w| {
                    w.write_all(codes)?;
                    let mut tail = [0u8; codec::I2S_TAIL];
                    tail[..4].copy_from_slice(&scale.to_le_bytes());
                    w.write_all(&tail)
                }))
            } else {
                Ok(OutTensor::lazy(name, dims, ty::I2_S, size, move |w| {
                    w.write_all(&codec::encode_i2s(n, scale, code))
                }))
            }
        }
        TernaryType::Tq2_0 | TernaryType::Tq1_0 => {
            if cols % codec::QK_K != 0 {
                return Err(bad(format!(
                    "{} needs in_features to be a multiple of 256 (has {cols}); write I2_S instead",
                    tt.name()
                )));
            }
            let d = f16::from_f32(t.scale);
            if !d.is_finite() || (d.to_f32() == 0.0 && t.scale != 0.0) {
                return Err(bad(format!(
                    "scale {} does not fit in f16; write I2_S instead",
                    t.scale
                )));
            }
            let (block, tq2) = if tt == TernaryType::Tq2_0 {
                (codec::TQ2_0_BLOCK, true)
            } else {
                (codec::TQ1_0_BLOCK, false)
            };
            let size = (n / codec::QK_K * block) as u64;
            let data = t.view().data;
            Ok(OutTensor::lazy(
                name,
                dims,
                tt.ggml_type(),
                size,
                move |w| {
                    // One row at a time keeps the encoder's buffer small for big models.
                    for row in data.chunks_exact(cols / 4) {
                        let bytes = if tq2 {
                            repack::kernel_to_tq2_0(row, d)
                        } else {
                            repack::kernel_to_tq1_0(row, d)
                        };
                        w.write_all(&bytes)?;
                    }
                    Ok(())
                },
            ))
        }
    }
}

/// The full key/value set and tensor list for `model`.
pub fn model_contents<'a>(
    model: &'a Model,
    tok: &Tokenizer,
    opts: &GgufWriteOptions,
) -> Result<Contents<'a>> {
    let c = &model.config;
    let tt = opts.ternary;
    let arch = tt.arch(c.block);
    // The checkpoint's own name where it has one (it also tells a LLaMA-layout family),
    // else the file's.
    let own_name = model
        .provenance
        .metadata
        .iter()
        .find(|(k, _)| k == super::hf::NAME_KEY || k == "general.name")
        .map(|(_, v)| v.trim_matches('"').to_string());
    let name = opts.name.clone().or(own_name).unwrap_or_else(|| {
        model
            .provenance
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onebit".into())
    });
    let a = |k: &str| format!("{arch}.{k}");
    let u = |x: usize| Value::U32(x as u32);
    let mut kv = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        ("general.name".to_string(), Value::String(name)),
        ("general.file_type".to_string(), Value::U32(tt.file_type())),
        (a("context_length"), u(c.max_context)),
        (a("embedding_length"), u(c.hidden_size)),
        (a("block_count"), u(c.n_layers)),
        (a("feed_forward_length"), u(c.intermediate_size)),
        (a("attention.head_count"), u(c.n_heads)),
        (a("attention.head_count_kv"), u(c.n_kv_heads)),
        (a("rope.dimension_count"), u(c.head_dim)),
        (a("rope.freq_base"), Value::F32(c.rope_theta)),
        (
            a("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps),
        ),
        (a("vocab_size"), u(c.vocab_size)),
    ];
    if let Block::BitNet(act) = c.block {
        // Upstream llama.cpp defaults `bitnet` to SiLU without this hint; readers that
        // do not know the key ignore it.
        kv.push((a("hidden_activation"), Value::String(act.name().into())));
    }
    match c.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            kv.push((a("rope.scaling.type"), Value::String("linear".into())));
            kv.push((a("rope.scaling.factor"), Value::F32(factor)));
        }
        Some(RopeScaling::Llama3 { .. }) => {
            return Err(Error::Input(
                "llama3 RoPE scaling is stored in GGUF as a rope_freqs tensor, which onebit does not write; keep the model as an HF directory".into(),
            ))
        }
    }
    if c.head_dim * c.n_heads != c.hidden_size {
        kv.push((a("attention.key_length"), u(c.head_dim)));
        kv.push((a("attention.value_length"), u(c.head_dim)));
    }
    let tkv = tokenizer_metadata(tok)?;
    let n_tokens = tkv
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| v.as_array())
        .map_or(0, <[Value]>::len);
    if n_tokens != c.vocab_size {
        return Err(Error::Tokenizer(format!(
            "the tokenizer has {n_tokens} tokens but the model's vocabulary is {}; GGUF needs them equal",
            c.vocab_size
        )));
    }
    kv.extend(tkv);
    if let Some(t) = tok.chat_template() {
        kv.push((
            "tokenizer.chat_template".into(),
            Value::String(t.source.clone()),
        ));
    }
    kv.push(("general.quantization_version".into(), Value::U32(2)));

    let e = &model.embed_tokens;
    let mut tensors = vec![
        OutTensor::from_bytes(
            layout::GGUF_EMBD,
            vec![e.cols as u64, e.rows as u64],
            embd_type(e.kind),
            e.data.as_slice().into(),
        ),
        OutTensor::from_bytes(
            layout::GGUF_NORM,
            vec![model.norm.len() as u64],
            ty::F32,
            f32_bytes(&model.norm).into(),
        ),
    ];
    if let Some(head) = &model.lm_head {
        tensors.push(OutTensor::from_bytes(
            layout::GGUF_OUTPUT,
            vec![head.cols as u64, head.rows as u64],
            embd_type(head.kind),
            head.data.as_slice().into(),
        ));
    }
    for (i, l) in model.layers.iter().enumerate() {
        let parts = layout::layer_tensors(l);
        // Norms first, then projections, as bitnet.cpp and gguf-py order them.
        for (k, p) in parts.iter().enumerate() {
            if let LayerTensor::Norm(v) = p {
                let nm = layout::names(i, k).gguf;
                tensors.push(OutTensor::from_bytes(
                    nm,
                    vec![v.len() as u64],
                    ty::F32,
                    f32_bytes(v).into(),
                ));
            }
        }
        for (k, p) in parts.iter().enumerate() {
            if let LayerTensor::Ternary(t) = p {
                tensors.push(ternary_tensor(layout::names(i, k).gguf, t, tt)?);
            }
        }
    }
    if let Some(heads) = &model.medusa {
        let (mkv, mt) = super::medusa::gguf_contents(heads);
        kv.extend(mkv);
        tensors.extend(mt);
    }
    Ok((kv, tensors))
}

/// Writes `model` as GGUF to `w`.
pub fn write(
    w: &mut dyn Write,
    model: &Model,
    tok: &Tokenizer,
    opts: &GgufWriteOptions,
) -> Result<()> {
    let (kv, tensors) = model_contents(model, tok, opts)?;
    write_gguf(w, &kv, &tensors).map_err(|e| Error::io("<gguf output>", e))
}

/// Writes `model` as a GGUF file (via a temporary file renamed into place).
pub fn write_file(
    path: &Path,
    model: &Model,
    tok: &Tokenizer,
    opts: &GgufWriteOptions,
) -> Result<()> {
    let (kv, tensors) = model_contents(model, tok, opts)?;
    let tmp = path.with_extension("gguf.partial");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    write_gguf(&mut w, &kv, &tensors).map_err(|e| Error::io(&tmp, e))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf::GgufFile;
    use crate::model::Bytes;

    #[test]
    fn every_value_type_round_trips() {
        let kv: Vec<(String, Value)> = vec![
            ("u8".into(), Value::U8(7)),
            ("i8".into(), Value::I8(-7)),
            ("u16".into(), Value::U16(65535)),
            ("i16".into(), Value::I16(-300)),
            ("u32".into(), Value::U32(1 << 31)),
            ("i32".into(), Value::I32(-5)),
            ("u64".into(), Value::U64(u64::MAX)),
            ("i64".into(), Value::I64(i64::MIN)),
            ("f32".into(), Value::F32(1.5)),
            ("f64".into(), Value::F64(-2.25)),
            ("bool".into(), Value::Bool(true)),
            ("str".into(), Value::String("ünï".into())),
            ("general.alignment".into(), Value::U32(64)),
            (
                "arr".into(),
                Value::Array(vec![Value::I32(1), Value::I32(-2)]),
            ),
            (
                "nested".into(),
                Value::Array(vec![
                    Value::Array(vec![Value::String("a".into())]),
                    Value::Array(vec![Value::String("b".into()), Value::String("c".into())]),
                ]),
            ),
        ];
        let t = OutTensor::from_bytes("t", vec![3, 2], ty::F32, vec![1u8; 24].into());
        let u = OutTensor::from_bytes("u", vec![5], ty::F16, vec![2u8; 10].into());
        let mut out = Vec::new();
        write_gguf(&mut out, &kv, &[t, u]).unwrap();
        let g = GgufFile::parse("t.gguf", Bytes::owned(out)).unwrap();
        assert_eq!(g.metadata(), &kv[..]);
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_offset % 64, 0);
        let u = g.tensor("u").unwrap();
        assert_eq!(u.rel_offset, 64);
        assert_eq!(g.tensor_data(u).unwrap().as_slice(), &[2u8; 10]);
        assert_eq!(g.tensor("t").unwrap().dims, vec![3, 2]);
    }
}
