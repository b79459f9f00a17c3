//! Tokenizer: HF `tokenizer.json`, or the same byte-level BPE rebuilt from GGUF metadata.

use crate::Result;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let _ = (&self.inner, text, add_bos);
        todo!("tokenizer: being written")
    }
}
