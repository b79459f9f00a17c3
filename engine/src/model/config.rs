//! Model hyperparameters, common to every file format, and the block structure they
//! describe: which family a checkpoint belongs to decides the decoder block the forward
//! pass runs (see [`Block`]).

use serde::Serialize;

/// The FFN's gate activation: `act(gate_proj(x)) · up_proj(x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)²` (BitNet b1.58 2B-4T, `hidden_act: relu2`).
    Relu2,
    /// `x · sigmoid(x)` (LLaMA and 1bitLLM, `hidden_act: silu`).
    Silu,
}

impl Activation {
    /// The activation an HF `hidden_act` or GGUF `hidden_activation` names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "relu2" | "relu_squared" | "relu_sqr" => Some(Self::Relu2),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Relu2 => "relu2",
            Self::Silu => "silu",
        }
    }
}

/// The decoder block's structure; each has its own file in the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    /// BitNet b1.58: an RMSNorm before `o_proj` (`attn_sub_norm`) and before `down_proj`
    /// (`ffn_sub_norm`), with relu² (2B-4T) or SiLU (1bitLLM's reproductions).
    BitNet(Activation),
    /// LLaMA with every linear layer a BitLinear: SiLU MLP, no sub-norms (HF1BitLLM's
    /// Llama3-8B-1.58, tiiuae's Falcon3 1.58-bit and Falcon-E).
    LlamaBitLinear,
}

impl Block {
    pub fn activation(self) -> Activation {
        match self {
            Self::BitNet(a) => a,
            Self::LlamaBitLinear => Activation::Silu,
        }
    }

    pub fn has_sub_norms(self) -> bool {
        matches!(self, Self::BitNet(_))
    }
}

/// The model family a checkpoint belongs to, for `onebit info` and error messages. The
/// block structure is [`Block`]; the family adds which published models it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// microsoft/bitnet-b1.58-2B-4T and models of its layout.
    BitNetB158,
    /// 1bitLLM/bitnet_b1_58-large and -3B (`BitnetForCausalLM`).
    OneBitLlm,
    /// HF1BitLLM/Llama3-8B-1.58-100B-tokens (Llama 3 vocabulary).
    Llama3,
    /// tiiuae/Falcon3-{1,3,7,10}B-*-1.58bit.
    Falcon3,
    /// tiiuae/Falcon-E-{1,3}B-*.
    FalconE,
    /// Another LLaMA-layout BitLinear model.
    LlamaBitLinear,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::BitNetB158 => "BitNet b1.58 (microsoft/bitnet-b1.58-2B-4T layout)",
            Self::OneBitLlm => "1bitLLM bitnet_b1_58 (BitnetForCausalLM)",
            Self::Llama3 => "Llama 3 1.58-bit (HF1BitLLM/Llama3-8B-1.58)",
            Self::Falcon3 => "Falcon3 1.58-bit (tiiuae)",
            Self::FalconE => "Falcon-E (tiiuae)",
            Self::LlamaBitLinear => "LLaMA with BitLinear layers",
        }
    }

    /// The family of a LLaMA-layout BitLinear model, told by its name where it has one
    /// (HF `_name_or_path`, GGUF `general.name`), else by its vocabulary: Llama 3 has
    /// 128,256 tokens, Falcon3 131,072, Falcon-E 32,768.
    pub fn of_llama(name: Option<&str>, vocab_size: usize) -> Self {
        let name = name.unwrap_or("").to_ascii_lowercase();
        if name.contains("falcon-e") || name.contains("falcon_e") {
            Self::FalconE
        } else if name.contains("falcon3") || name.contains("falcon-3") {
            Self::Falcon3
        } else if name.contains("llama3") || name.contains("llama-3") {
            Self::Llama3
        } else {
            match vocab_size {
                128_256 => Self::Llama3,
                131_072 => Self::Falcon3,
                32_768 => Self::FalconE,
                _ => Self::LlamaBitLinear,
            }
        }
    }
}

/// RoPE frequency scaling (`rope_scaling` in config.json).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f32 },
    /// Llama 3.1's: long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between `low_freq_factor` and `high_freq_factor`.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
}

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
    pub block: Block,
    pub family: Family,
    pub rope_scaling: Option<RopeScaling>,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// RoPE's inverse frequencies for this model: `theta^(-2i/head_dim)`, scaled as
    /// `rope_scaling` says.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base = onebit_kernels::float::rope_inv_freq(self.head_dim, self.rope_theta);
        match self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
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
        match self.rope_scaling {
            Some(RopeScaling::Linear { factor }) if !(factor.is_finite() && factor > 0.0) => {
                return Err(format!("rope_scaling factor {factor} must be a positive number"))
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) if !(factor.is_finite()
                && factor > 0.0
                && low_freq_factor > 0.0
                && high_freq_factor > low_freq_factor
                && original_max_position_embeddings > 0) =>
            {
                return Err(format!(
                    "rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0 (factor {factor}, low {low_freq_factor}, high {high_freq_factor}, original {original_max_position_embeddings})"
                ))
            }
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rope_scaling: Option<RopeScaling>) -> Config {
        Config {
            hidden_size: 256,
            intermediate_size: 512,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 128,
            vocab_size: 16,
            max_context: 64,
            rope_theta: 500_000.0,
            rms_norm_eps: 1e-5,
            bos_token_id: None,
            eos_token_ids: vec![],
            block: Block::LlamaBitLinear,
            family: Family::Llama3,
            rope_scaling,
        }
    }

    #[test]
    fn llama3_rope_scaling_keeps_short_wavelengths_and_divides_long_ones() {
        let plain = config(None).rope_inv_freq();
        let (factor, low, high, old) = (8.0, 1.0, 4.0, 8192usize);
        let scaled = config(Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        }))
        .rope_inv_freq();
        let mut kinds = [0usize; 3];
        for (&f, &g) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            if wavelen < old as f32 / high {
                assert_eq!(g, f);
                kinds[0] += 1;
            } else if wavelen > old as f32 / low {
                assert_eq!(g, f / factor);
                kinds[1] += 1;
            } else {
                assert!(
                    g < f && g > f / factor,
                    "{g} between {} and {f}",
                    f / factor
                );
                kinds[2] += 1;
            }
        }
        assert!(
            kinds.iter().all(|&k| k > 0),
            "all three bands covered: {kinds:?}"
        );
        let linear = config(Some(RopeScaling::Linear { factor: 4.0 })).rope_inv_freq();
        assert!(plain.iter().zip(&linear).all(|(f, g)| *g == f / 4.0));
    }

    #[test]
    fn bad_rope_scaling_is_refused() {
        let c = config(Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 4.0,
            high_freq_factor: 1.0,
            original_max_position_embeddings: 8192,
        }));
        assert!(c.validate().unwrap_err().contains("llama3"));
        let c = config(Some(RopeScaling::Linear { factor: 0.0 }));
        assert!(c.validate().unwrap_err().contains("factor"));
    }
}
