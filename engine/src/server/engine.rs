//! The real engine behind the server's traits: sessions and batched steps from
//! [`crate::forward`], text from [`crate::tokenizer`], the prompt format from [`crate::chat`].

use super::backend::{Backend, ModelInfo, Vocab};
use crate::chat::{chat_ids, ChatMessage};
use crate::forward::{forward, forward_sessions, LogitsMode, Session};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use std::sync::Arc;

pub struct EngineBackend {
    model: Arc<Model>,
    /// Tokens one slot holds.
    ctx: usize,
}

impl EngineBackend {
    /// `ctx` 0 means the model's own context.
    pub fn new(model: Arc<Model>, ctx: usize) -> Self {
        let max = model.config.max_context;
        let ctx = if ctx == 0 { max } else { ctx.min(max) };
        Self { model, ctx }
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// One forward pass over a short prompt, so the first request does not pay for
    /// first-touch page faults and thread-pool start-up.
    pub fn warm_up(&self, ids: &[u32]) -> crate::Result<()> {
        let mut s = Session::new(&self.model, ids.len().max(1));
        forward(&self.model, &mut s, ids, LogitsMode::Last).map(|_| ())
    }

    pub fn info(&self, id: String, n_vocab: usize) -> ModelInfo {
        ModelInfo {
            id,
            n_ctx_train: self.model.config.max_context,
            n_ctx_slot: self.ctx,
            n_vocab,
            n_params: self.model.n_params(),
            path: self.model.provenance.path.display().to_string(),
        }
    }
}

impl Backend for EngineBackend {
    type Session = Session;

    fn new_session(&self) -> Session {
        Session::new(&self.model, self.ctx)
    }

    fn tokens<'a>(&self, s: &'a Session) -> &'a [u32] {
        s.tokens()
    }

    fn truncate(&self, s: &mut Session, n: usize) {
        s.truncate(n);
    }

    fn capacity(&self, s: &Session) -> usize {
        s.max_ctx()
    }

    fn step(&self, sessions: &mut [&mut Session], ids: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        forward_sessions(&self.model, sessions, ids, LogitsMode::Last).map_err(|e| e.to_string())
    }
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
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, String> {
        self.tok.encode(text, add_bos).map_err(|e| e.to_string())
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        chat_ids(&self.tok, messages).map_err(|e| e.to_string())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tok.decode(ids).map_err(|e| e.to_string())
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
