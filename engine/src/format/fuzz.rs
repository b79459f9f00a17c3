//! Entry points for the parsers' fuzz targets (`engine/fuzz`), also run on random and
//! mutated bytes by `tests/tests/corrupt_files.rs`. Each takes arbitrary bytes, runs the
//! whole path a model file takes, and must return (an error is fine) without panicking.

use super::gguf::GgufFile;
use super::hf::{self, safetensors::SafeTensors};
use crate::model::Bytes;
use crate::tokenizer::Tokenizer;

/// GGUF header parse, model build and tokenizer rebuild over `data`.
pub fn gguf(data: &[u8]) -> bool {
    let bytes = Bytes::owned(data.to_vec());
    if let Ok(g) = GgufFile::parse("fuzz.gguf", bytes.clone()) {
        for t in g.tensors() {
            let _ = g.tensor_data(t);
        }
        let _ = Tokenizer::from_gguf(&g);
    }
    super::load_gguf_bytes("fuzz.gguf", bytes).is_ok()
}

/// safetensors header parse over `data`, reading every tensor's window.
pub fn safetensors(data: &[u8]) -> bool {
    match SafeTensors::parse("fuzz.safetensors", Bytes::owned(data.to_vec())) {
        Ok(st) => {
            let names: Vec<String> = st.names().map(str::to_string).collect();
            for n in names {
                if let Some(e) = st.get(&n) {
                    let d = st.data(e);
                    if let Ok(d) = d {
                        let _ = e.dtype.to_f32(d.as_slice());
                    }
                }
            }
            true
        }
        Err(_) => false,
    }
}

/// `config.json` parse over `data`.
pub fn hf_config(data: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v) => hf::parse_config(std::path::Path::new("fuzz/config.json"), &v).is_ok(),
        Err(_) => false,
    }
}

/// `tokenizer.json` parse over `data`, then a short encode/decode.
/// A SentencePiece `tokenizer.model`, then an encode and decode.
pub fn sentencepiece(data: &[u8]) -> bool {
    match crate::tokenizer::spm::from_model_file(data) {
        Ok(inner) => {
            let t = Tokenizer::from_inner(inner);
            if let Ok(ids) = t.encode("Hello, world! </s> 123 日本", true) {
                let _ = t.decode(&ids);
                for id in ids {
                    let _ = t.token_bytes(id);
                }
            }
            true
        }
        Err(_) => false,
    }
}

pub fn tokenizer_json(data: &[u8]) -> bool {
    match Tokenizer::from_json_bytes(data) {
        Ok(t) => {
            if let Ok(ids) = t.encode("Hello, world! <|eot_id|> 123", true) {
                let _ = t.decode(&ids);
            }
            true
        }
        Err(_) => false,
    }
}
