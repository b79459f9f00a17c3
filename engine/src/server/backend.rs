//! What the HTTP handlers need besides the compute surface: the connection threads use a
//! [`Vocab`] (tokenizer and chat template); the engine thread drives a
//! [`crate::backend::Backend`], the same trait every other caller uses.

use crate::chat::ChatMessage;

/// The text side, shared by all connection threads.
pub trait Vocab: Send + Sync + 'static {
    fn encode(&self, text: &str, add_bos: bool) -> crate::Result<Vec<u32>>;
    /// The prompt tokens of a chat, in the model's chat format.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> crate::Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> crate::Result<String>;
    /// The raw bytes a token stands for (a piece of a UTF-8 sequence, possibly).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    fn vocab_size(&self) -> usize;
    /// Tokens that end a generation.
    fn eos_ids(&self) -> Vec<u32>;
    /// Tokens of special text (`<|eot_id|>`, ...) that are never shown as text.
    fn is_control(&self, id: u32) -> bool;
}

/// Facts about the served model for `/v1/models` and `/props`.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The id clients put in `model`.
    pub id: String,
    pub n_ctx_train: usize,
    /// Tokens one slot can hold.
    pub n_ctx_slot: usize,
    pub n_vocab: usize,
    pub n_params: u64,
    pub path: String,
}

impl ModelInfo {
    /// `n_ctx_slot` is what one slot holds.
    pub fn new(model: &crate::model::Model, id: String, n_ctx_slot: usize, n_vocab: usize) -> Self {
        Self {
            id,
            n_ctx_train: model.config.max_context,
            n_ctx_slot,
            n_vocab,
            n_params: model.n_params(),
            path: model.provenance.path.display().to_string(),
        }
    }
}
