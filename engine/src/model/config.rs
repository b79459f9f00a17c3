//! Model hyperparameters, common to every file format.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Maximum context (max_position_embeddings / context_length).
    pub max_context: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation (eos_token_id, which may be a list, plus the chat end).
    pub eos_token_ids: Vec<u32>,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks the relations the forward pass relies on; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_context),
        ];
        for (name, v) in fields {
            if v == 0 || v > 1 << 24 {
                return Err(format!("{name} = {v} is out of range"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for rotate-half RoPE",
                self.head_dim
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "rope_theta {} must be a positive number",
                self.rope_theta
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!(
                "rms_norm_eps {} must be a non-negative number",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }
}
