//! `onebit info`: what a model file holds.

use crate::common::{CliResult, ModelArgs};
use onebit_engine::forward::{KvFormat, Session};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let (model, tok) = a.model.load()?;
    let c = &model.config;
    let p = &model.provenance;
    let ternary_bytes: usize = model.ternary_bytes();
    let embd = &model.embed_tokens;
    let info = serde_json::json!({
        "path": p.path,
        "format": p.format,
        "ternary_type": p.ternary_type,
        "file_bytes": p.file_bytes,
        "family": c.family,
        "family_name": c.family.name(),
        "block": c.block,
        "activation": c.block.activation().name(),
        "config": c,
        "params": model.n_params(),
        "ternary_weight_bytes": ternary_bytes,
        "embedding": { "type": embd.kind.name(), "shape": [embd.rows, embd.cols], "bytes": embd.data.len(), "tied_lm_head": model.lm_head.is_none() },
        "lm_head": model.lm_head.as_ref().map(|h| serde_json::json!({ "type": h.kind.name(), "shape": [h.rows, h.cols], "bytes": h.data.len() })),
        "kv_cache_bytes_per_token": Session::kv_bytes_per_token(&model, KvFormat::default()),
        "kv_cache_bytes_per_token_by_format": KvFormat::ALL
            .iter()
            .map(|f| (f.name(), Session::kv_bytes_per_token(&model, *f)))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "tokenizer": { "vocab_size": tok.vocab_size(), "bos": tok.bos_id(), "eos": tok.eos_ids() },
        "chat_template": tok.chat_template().map(|t| t.source.clone()),
        "medusa": model.medusa.as_ref().map(|m| serde_json::json!({
            "head_count": m.count(), "kind": onebit_engine::speculate::medusa::KIND, "params": m.n_params(),
        })),
        "metadata": p.metadata.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("model        {}", p.path.display());
    println!(
        "format       {} ({} ternary weights), {} bytes",
        p.format, p.ternary_type, p.file_bytes
    );
    println!("family       {}", c.family.name());
    let block = match c.block {
        onebit_engine::model::Block::BitNet(a) => format!("BitNet (sub-norms, {})", a.name()),
        onebit_engine::model::Block::LlamaBitLinear => {
            "LLaMA with BitLinear (silu, no sub-norms)".into()
        }
    };
    println!("architecture {block}: {} layers, hidden {}, ffn {}, heads {}/{} (head_dim {}), vocab {}, context {}, {} head",
        c.n_layers, c.hidden_size, c.intermediate_size, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.max_context,
        if model.lm_head.is_some() { "untied" } else { "tied" });
    let scaling = c
        .rope_scaling
        .map(|r| format!(", scaling {r:?}"))
        .unwrap_or_default();
    println!(
        "rope         rotate-half, theta {}{scaling}; rms_norm_eps {}",
        c.rope_theta, c.rms_norm_eps
    );
    println!(
        "params       {} ({:.1} M)",
        model.n_params(),
        model.n_params() as f64 / 1e6
    );
    println!(
        "ternary      {} bytes in kernel layout ({:.2} MB)",
        ternary_bytes,
        ternary_bytes as f64 / 1e6
    );
    println!(
        "embedding    {} [{}, {}], {} bytes{}",
        embd.kind.name(),
        embd.rows,
        embd.cols,
        embd.data.len(),
        if model.lm_head.is_none() {
            ", tied LM head"
        } else {
            ""
        }
    );
    if let Some(h) = &model.lm_head {
        println!(
            "lm_head      {} [{}, {}], {} bytes",
            h.kind.name(),
            h.rows,
            h.cols,
            h.data.len()
        );
    }
    println!(
        "kv cache     {} bytes per token (f16, the default; f32 {}, q8_0 {}, q4_0 {})",
        Session::kv_bytes_per_token(&model, KvFormat::F16),
        Session::kv_bytes_per_token(&model, KvFormat::F32),
        Session::kv_bytes_per_token(&model, KvFormat::Q8_0),
        Session::kv_bytes_per_token(&model, KvFormat::Q4_0)
    );
    let kind = match tok.pieces() {
        onebit_engine::tokenizer::Pieces::ByteLevel => "byte-level BPE",
        onebit_engine::tokenizer::Pieces::SentencePiece => "SentencePiece",
    };
    println!(
        "tokenizer    {kind}, {} tokens, bos {:?}, eos {:?}",
        tok.vocab_size(),
        tok.bos_id(),
        tok.eos_ids()
    );
    match tok.chat_template() {
        Some(t) => println!(
            "chat         the model's own template ({} bytes)",
            t.source.len()
        ),
        None => println!("chat         BitNet's built-in format (the model has no template)"),
    }
    if let Some(m) = &model.medusa {
        println!(
            "medusa       {} heads ({}, hidden {}), {} params: speculative drafting (--speculate medusa)",
            m.count(),
            onebit_engine::speculate::medusa::KIND,
            m.hidden,
            m.n_params()
        );
    }
    for (k, v) in &p.metadata {
        println!("  {k} = {v}");
    }
    Ok(())
}
