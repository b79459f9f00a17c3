//! What the scheduler and the HTTP handlers need from a model, as two small traits: the
//! engine thread drives a [`Backend`] (sessions and batched forward steps), the connection
//! threads use a [`Vocab`] (tokenizer and chat template). The daemon plugs in the real
//! engine ([`super::engine`]); the scheduler's unit tests plug in a toy.

use crate::chat::ChatMessage;

/// The model side, owned by the one engine thread.
pub trait Backend: Send + 'static {
    type Session: Send;
    /// A fresh, empty session (one per slot, kept across requests for prefix reuse).
    fn new_session(&self) -> Self::Session;
    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32];
    /// Forgets every position from `n` on.
    fn truncate(&self, s: &mut Self::Session, n: usize);
    /// How many tokens a session can hold.
    fn capacity(&self, s: &Self::Session) -> usize;
    /// Appends `ids[i]` to `sessions[i]` for every i in one batched forward pass and
    /// returns the logits after each session's last new token.
    fn step(
        &self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>, String>;
}

/// The text side, shared by all connection threads.
pub trait Vocab: Send + Sync + 'static {
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, String>;
    /// The prompt tokens of a chat, in the model's chat format.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String>;
    fn decode(&self, ids: &[u32]) -> Result<String, String>;
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
