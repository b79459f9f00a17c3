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
        "architecture": "bitnet-b1.58",
        "config": c,
        "params": model.n_params(),
        "ternary_weight_bytes": ternary_bytes,
        "embedding": { "type": embd.kind.name(), "shape": [embd.rows, embd.cols], "bytes": embd.data.len(), "tied_lm_head": true },
        "kv_cache_bytes_per_token": Session::kv_bytes_per_token(&model, KvFormat::default()),
        "kv_cache_bytes_per_token_by_format": KvFormat::ALL
            .iter()
            .map(|f| (f.name(), Session::kv_bytes_per_token(&model, *f)))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "tokenizer": { "vocab_size": tok.vocab_size(), "bos": tok.bos_id(), "eos": tok.eos_ids() },
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
    println!("architecture bitnet-b1.58: {} layers, hidden {}, ffn {}, heads {}/{} (head_dim {}), vocab {}, context {}",
        c.n_layers, c.hidden_size, c.intermediate_size, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.max_context);
    println!(
        "rope         rotate-half, theta {}; rms_norm_eps {}",
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
        "embedding    {} [{}, {}], {} bytes, tied LM head",
        embd.kind.name(),
        embd.rows,
        embd.cols,
        embd.data.len()
    );
    println!(
        "kv cache     {} bytes per token (f16, the default; f32 {}, q8_0 {}, q4_0 {})",
        Session::kv_bytes_per_token(&model, KvFormat::F16),
        Session::kv_bytes_per_token(&model, KvFormat::F32),
        Session::kv_bytes_per_token(&model, KvFormat::Q8_0),
        Session::kv_bytes_per_token(&model, KvFormat::Q4_0)
    );
    println!(
        "tokenizer    {} tokens, bos {:?}, eos {:?}",
        tok.vocab_size(),
        tok.bos_id(),
        tok.eos_ids()
    );
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
