//! The real engine behind the server: text from [`crate::tokenizer`], the prompt format
//! from [`crate::chat`]; the steps come from any [`crate::backend::Backend`].

use super::backend::Vocab;
use crate::backend::{Backend, BackendError, Need};
use crate::chat::{chat_ids, ChatMessage};
use crate::tokenizer::Tokenizer;
use std::sync::Arc;

/// One forward pass over a short prompt, so the first request does not pay for first-touch
/// page faults, thread-pool start-up or (on a device) code-object loading.
pub fn warm_up<B: Backend>(backend: &mut B, ids: &[u32]) -> Result<(), BackendError> {
    let mut s = backend.new_session(ids.len().max(1))?;
    backend.step(&mut [&mut s], &[ids], &[Need::Logits])
}

pub struct EngineVocab {
    tok: Arc<Tokenizer>,
    vocab: usize,
}

impl EngineVocab {
    /// `model_vocab` bounds ids clients may send (the embedding's rows).
    pub fn new(tok: Arc<Tokenizer>, model_vocab: usize) -> Self {
        let vocab = tok.vocab_size().min(model_vocab).max(1);
        Self { tok, vocab }
    }
}

impl Vocab for EngineVocab {
    fn encode(&self, text: &str, add_bos: bool) -> crate::Result<Vec<u32>> {
        self.tok.encode(text, add_bos)
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> crate::Result<Vec<u32>> {
        chat_ids(&self.tok, messages)
    }

    fn decode(&self, ids: &[u32]) -> crate::Result<String> {
        self.tok.decode(ids)
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.tok.token_bytes(id).unwrap_or_default()
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn eos_ids(&self) -> Vec<u32> {
        self.tok.eos_ids()
    }

    fn is_control(&self, id: u32) -> bool {
        self.tok.is_special(id)
    }
}
