//! Tokenizer: HF `tokenizer.json`, or the same tokenizer rebuilt from GGUF metadata
//! (`tokenizer.ggml.*`: a byte-level BPE, or a SentencePiece vocabulary in `spm`), all run by
//! the `tokenizers` crate so encoding matches HF.

pub mod spm;

use crate::chat::ChatTemplate;
use crate::format::gguf::{GgufFile, Value};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// The LLaMA-3 pre-tokenizer split (HF `tokenizer.json` of Llama 3, llama.cpp `llama-bpe`).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.pre` values that mean the LLaMA-3 split.
const LLAMA3_PRE: &[&str] = &["llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3"];

/// GGUF token types.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// How a token's piece spells its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// GPT-2's byte-level alphabet (BitNet 2B-4T, Llama 3, Falcon).
    ByteLevel,
    /// SentencePiece: "▁" for a space, `<0xNN>` byte pieces (LLaMA-2, 1bitLLM).
    SentencePiece,
}

const BOS_NAMES: &[&str] = &["<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>"];
const EOS_NAMES: &[&str] = &[
    "<|end_of_text|>",
    "<|eot_id|>",
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<eos>",
];

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Added tokens (specials and user-defined): id → text.
    added: HashMap<u32, String>,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// Cached: `tokenizers` recounts the whole vocabulary on every call.
    vocab_size: usize,
    pieces: Pieces,
    /// A copy of `inner` that reads special-token text as plain text, made on first use
    /// (only chat prompts need it).
    plain: std::sync::OnceLock<tokenizers::Tokenizer>,
    /// The model's own chat template (HF `tokenizer_config.json`, GGUF
    /// `tokenizer.chat_template`); `None` means BitNet's built-in chat format.
    chat_template: Option<std::sync::Arc<ChatTemplate>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// Any JSON value, checked and dropped. Unlike `serde::de::IgnoredAny`, which skips a
/// string's escapes without decoding them, every string is decoded, so a lone surrogate
/// (`"\udc00"`) is an error here rather than a panic in `tokenizers` (found by the
/// `tokenizer_json` fuzz target). Strings without escapes are borrowed, not copied.
struct CheckedJson;

impl<'de> serde::Deserialize<'de> for CheckedJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(CheckedJson)
    }
}

impl<'de> serde::de::Visitor<'de> for CheckedJson {
    type Value = CheckedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<CheckedJson>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self, A::Error> {
        while map.next_entry::<CheckedJson, CheckedJson>()?.is_some() {}
        Ok(self)
    }
}

fn tok_err(what: impl std::fmt::Display) -> Error {
    Error::Tokenizer(what.to_string())
}

impl Tokenizer {
    /// Loads an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_bytes(&bytes).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_start_matches("tokenizer: ")
            ))
        })
    }

    /// Loads a SentencePiece `tokenizer.model` (what LLaMA-2-style HF folders ship beside, or
    /// instead of, `tokenizer.json`).
    pub fn from_sentencepiece_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = spm::from_model_file(&bytes).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_start_matches("tokenizer: ")
            ))
        })?;
        Ok(Self::wrap(inner))
    }

    /// Parses an HF `tokenizer.json` held in memory.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        // `tokenizers` panics (instead of erroring) on some malformed JSON, e.g. a truncated
        // decoder or a `\u` escape that is no code point: check the syntax first, and
        // contain any panic left in its deserializers.
        serde_json::from_slice::<CheckedJson>(bytes).map_err(|e| {
            tok_err(format!(
                "not a valid tokenizer.json: {e} (at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| {
                tok_err("not a valid tokenizer.json: the tokenizer library rejected its structure")
            })?;
        let inner = parsed.map_err(|e| tok_err(format!("not a valid tokenizer.json: {e}")))?;
        // A single text has one sequence: a `single` template naming the second ($B) makes
        // every encode panic inside `tokenizers` (found by the tokenizer_json fuzz target).
        // The template's pieces are only visible through its Debug form.
        if let Some(tokenizers::PostProcessorWrapper::Template(t)) = inner.get_post_processor() {
            if t.get_single().contains("id: B") {
                return Err(tok_err(
                    "not a valid tokenizer.json: post_processor.single uses the second sequence ($B), which a single text does not have; use $A",
                ));
            }
        }
        Ok(Self::wrap(inner))
    }

    /// Wraps a `tokenizers` tokenizer built elsewhere (the SentencePiece builder).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self::wrap(inner)
    }

    fn wrap(inner: tokenizers::Tokenizer) -> Self {
        let added: HashMap<u32, String> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        let bos = BOS_NAMES.iter().find_map(|n| inner.token_to_id(n));
        let eos = EOS_NAMES
            .iter()
            .filter_map(|n| inner.token_to_id(n))
            .collect();
        let vocab_size = inner.get_vocab_size(true);
        let pieces = pieces_of(&inner);
        Self {
            inner,
            pieces,
            added,
            bos,
            eos,
            vocab_size,
            plain: std::sync::OnceLock::new(),
            chat_template: None,
        }
    }

    /// The added tokens (specials and user-defined) as (id, text): the strings that
    /// [`encode`](Self::encode) turns into single ids.
    pub fn added_tokens(&self) -> impl Iterator<Item = (u32, &str)> {
        self.added.iter().map(|(&id, t)| (id, t.as_str()))
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_deref()
    }

    pub fn set_chat_template(&mut self, t: Option<ChatTemplate>) {
        self.chat_template = t.map(std::sync::Arc::new);
    }

    /// The token's text, or "" (how a template sees a model without that token).
    pub fn token_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.id_to_token(i)).unwrap_or_default()
    }

    /// Rebuilds the byte-level BPE stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.display();
        let err = |what: String| Error::Tokenizer(format!("{path}: {what}"));
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" && model != "llama" {
            return Err(err(format!(
                "tokenizer.ggml.model is {model:?}; onebit reads byte-level BPE (\"gpt2\") and SentencePiece (\"llama\") tokenizers"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            let arr = g
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("{key} is missing or not an array")))?;
            arr.iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| err(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = match g.get("tokenizer.ggml.merges") {
            Some(_) => strings("tokenizer.ggml.merges")?,
            None => Vec::new(),
        };
        let types: Vec<i32> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) if a.len() == tokens.len() => {
                a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect()
            }
            Some(a) => {
                return Err(err(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    a.len(),
                    tokens.len()
                )))
            }
            None => vec![token_type::NORMAL; tokens.len()],
        };
        let mut tok = if model == "llama" {
            let scores: Vec<f32> = g
                .get("tokenizer.ggml.scores")
                .and_then(Value::as_array)
                .ok_or_else(|| err("tokenizer.ggml.scores is missing or not an array: a SentencePiece vocabulary needs a score per piece".into()))?
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| err("tokenizer.ggml.scores holds a non-number".into()))?;
            let add_space_prefix = g
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let vocab = spm::Vocab {
                pieces: &tokens,
                scores: &scores,
                types: &types,
                add_space_prefix,
            };
            Self::wrap(vocab.build().map_err(|e| err(e.to_string()))?)
        } else {
            let pre = g
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default");
            build_bpe(&tokens, &merges, &types, pre).map_err(|e| err(e.to_string()))?
        };
        let id_key = |k: &str| {
            g.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < tokens.len())
        };
        if let Some(b) = id_key("tokenizer.ggml.bos_token_id") {
            tok.bos = Some(b);
        }
        let mut eos: Vec<u32> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .iter()
        .filter_map(|k| id_key(k))
        .collect();
        eos.extend(tok.eos.iter().copied());
        tok.eos = dedup(eos);
        if let Some(source) = g.get("tokenizer.chat_template").and_then(Value::as_str) {
            let eos_token = tok.token_text(id_key("tokenizer.ggml.eos_token_id"));
            tok.set_chat_template(Some(ChatTemplate {
                source: source.to_string(),
                bos_token: tok.token_text(tok.bos),
                eos_token,
            }));
        }
        Ok(tok)
    }

    /// Overrides the BOS id and prepends model-declared EOS ids (config / generation_config).
    pub fn set_special_ids(&mut self, bos: Option<u32>, eos: &[u32]) {
        if bos.is_some() {
            self.bos = bos;
        }
        let mut all = eos.to_vec();
        all.extend(self.eos.iter().copied());
        self.eos = dedup(all);
    }

    /// Token ids of `text`; special-token text (e.g. `<|eot_id|>`) becomes the special token.
    /// BOS is added only when `add_bos` is set (and the tokenizer has one).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 1);
        if add_bos {
            if let Some(b) = self.bos {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids of `text` read as plain text: special-token text such as `<|eot_id|>`
    /// becomes the ordinary tokens that spell it, never the special token. For text that
    /// comes from users, so that it cannot forge a chat template's control tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let plain = self.plain.get_or_init(|| {
            let mut t = self.inner.clone();
            t.set_encode_special_tokens(true);
            t
        });
        let enc = plain.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, specials rendered as their text; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary of {n}"
            )));
        }
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id).unwrap_or_default());
        }
        // SentencePiece put a space in front of the text (its dummy prefix): a text's decoding
        // drops it, as SentencePiece and HF's decoder do.
        if self.pieces == Pieces::SentencePiece && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// How this tokenizer's pieces spell bytes.
    pub fn pieces(&self) -> Pieces {
        self.pieces
    }

    /// Raw bytes of one token (byte-level inverse map, or SentencePiece's "▁" and byte
    /// pieces); added tokens give their text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if let Some(s) = self.added.get(&id) {
            return Some(s.as_bytes().to_vec());
        }
        let s = self.inner.id_to_token(id)?;
        if self.pieces == Pieces::SentencePiece {
            return Some(spm::piece_bytes(&s));
        }
        let map = byte_decoder();
        let mut out = Vec::with_capacity(s.len());
        for ch in s.chars() {
            match map.get(&ch) {
                Some(&b) => out.push(b),
                None => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Some(out)
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end generation (EOS, `<|eot_id|>`, `<|end_of_text|>`, ... when present).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }

    /// Whether `id` is an added (special or user-defined) token.
    pub fn is_added(&self, id: u32) -> bool {
        self.added.contains_key(&id)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// The HF `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tok_err)
    }

    /// The `tokenizers` crate object, for callers needing more than this API.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// A BPE with byte fallback, or a decoder that turns "▁" into spaces, is SentencePiece's.
fn pieces_of(inner: &tokenizers::Tokenizer) -> Pieces {
    use tokenizers::DecoderWrapper as D;
    let sentencepiece_decoder = |d: &D| matches!(d, D::Metaspace(_) | D::ByteFallback(_));
    let byte_fallback =
        matches!(inner.get_model(), tokenizers::ModelWrapper::BPE(b) if b.byte_fallback);
    let decoder = match inner.get_decoder() {
        Some(D::Sequence(s)) => s.get_decoders().iter().any(sentencepiece_decoder),
        Some(d) => sentencepiece_decoder(d),
        None => false,
    };
    if byte_fallback || decoder {
        Pieces::SentencePiece
    } else {
        Pieces::ByteLevel
    }
}

fn dedup(v: Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn build_bpe(tokens: &[&str], merges: &[&str], types: &[i32], pre: &str) -> Result<Tokenizer> {
    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    for (id, t) in tokens.iter().enumerate() {
        // First occurrence wins; duplicates (unused slots) keep their own id for decoding only.
        vocab.entry((*t).to_string()).or_insert(id as u32);
    }
    if vocab.len() != tokens.len() {
        tracing::warn!(
            "tokenizer: {} duplicate token strings in the vocabulary",
            tokens.len() - vocab.len()
        );
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            // Split at the first space after the first character (a merge part is never empty).
            let cut = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i);
            match cut {
                Some(i) => Ok((m[..i].to_string(), m[i + 1..].to_string())),
                None => Err(tok_err(format!(
                    "merge {m:?} is not two tokens separated by a space"
                ))),
            }
        })
        .collect::<Result<_>>()?;
    let llama3 = LLAMA3_PRE.contains(&pre);
    let pre_tok: PreTokenizerWrapper = if llama3 || !matches!(pre, "gpt2" | "default") {
        if !llama3 {
            tracing::warn!(
                "tokenizer: pre-tokenizer {pre:?} is not known; using the LLaMA-3 split"
            );
        }
        let split = Split::new(
            SplitPattern::Regex(LLAMA3_PATTERN.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("pre-tokenizer regex: {e}")))?;
        PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ]))
    } else {
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))
    };
    // llama.cpp skips merges for words already in the vocabulary with the LLaMA-3 split,
    // as tiktoken and HF's Llama-3 tokenizer.json (ignore_merges) do.
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(llama3)
        .build()
        .map_err(|e| tok_err(format!("cannot build BPE: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tok));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    add_typed_tokens(&mut inner, tokens, types, &[token_type::CONTROL]);
    Ok(Tokenizer::wrap(inner))
}

/// Adds a GGUF vocabulary's tokens of the `special` types as special tokens, and its
/// user-defined ones as added tokens, so that their text encodes to them whole.
fn add_typed_tokens(
    inner: &mut tokenizers::Tokenizer,
    tokens: &[&str],
    types: &[i32],
    special: &[i32],
) {
    let of = |want: &[i32], is_special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(_, t)| want.contains(t))
            .map(|(s, _)| AddedToken::from(s.to_string(), is_special).normalized(false))
            .collect()
    };
    inner.add_special_tokens(&of(special, true));
    inner.add_tokens(&of(&[token_type::USER_DEFINED], false));
}

/// GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100 + n.
pub fn byte_encoder() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(0xFF + n).unwrap_or('\0')
        };
    }
    map
}

fn byte_decoder() -> &'static HashMap<char, u8> {
    static MAP: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        byte_encoder()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// Turns a stream of token bytes into text, holding back an incomplete UTF-8 sequence
/// until the bytes that complete it arrive.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held back, lossily decoded.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `\u` escape that is no code point inside the decoder made `tokenizers` panic (its
    /// decoder deserializer unwraps); the syntax check names it instead.
    #[test]
    fn a_lone_surrogate_escape_is_a_syntax_error() {
        let json = br#"{"version":"1.0","decoder":{"type":"ByteLevel","x":"\udc00"},"model":{"type":"BPE","vocab":{},"merges":[]}}"#;
        let e = Tokenizer::from_json_bytes(json).unwrap_err().to_string();
        assert!(e.contains("surrogate") && e.contains("column 58"), "{e}");
    }

    /// Found by the `tokenizer_json` fuzz target: every encode panicked (an index out of
    /// bounds in `tokenizers`) when the single-text template named the second sequence.
    #[test]
    fn a_single_template_naming_the_second_sequence_is_refused() {
        let json = br#"{"version":"1.0","post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"B","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{}},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}"#;
        let e = Tokenizer::from_json_bytes(json).unwrap_err().to_string();
        assert!(e.contains("post_processor.single"), "{e}");
    }

    #[test]
    fn byte_map_is_gpt2() {
        let m = byte_encoder();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'a' as usize], 'a');
        let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn stream_decoder_holds_partial_utf8() {
        let mut d = StreamDecoder::new();
        let euro = "€".as_bytes();
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&[euro[2], b'x']), "€x");
        assert_eq!(d.push(&[0xff, b'y']), "\u{fffd}y");
        assert_eq!(d.push(&euro[..2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
