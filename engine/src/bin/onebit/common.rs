//! What every subcommand shares: logging, model selection, threads.

use clap::Args as ClapArgs;
use onebit_engine::model::Model;
use onebit_engine::tokenizer::Tokenizer;
use std::path::PathBuf;

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Logs to stderr; `ONEBIT_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("ONEBIT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

#[derive(ClapArgs, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a GGUF file or a Hugging Face model directory (default: the embedded model).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Read every down_proj weight column. By default decoding skips the columns whose
    /// input is 0 (lossless: the same results, fewer bytes read).
    #[arg(long)]
    pub dense_down: bool,
}

impl ModelArgs {
    /// [`load`](Self::load), then the lossless options of the forward pass.
    pub fn load_for_inference(&self) -> Result<(Model, Tokenizer), Box<dyn std::error::Error>> {
        let (mut model, tok) = self.load()?;
        if !self.dense_down {
            let t0 = std::time::Instant::now();
            let done = model.use_sparse_down();
            tracing::debug!(
                "down_proj repacked input-channel-major: {:.1} MB in {:.2} s ({:.1} MB of file pages released)",
                done.column_bytes as f64 / 1e6,
                t0.elapsed().as_secs_f64(),
                done.released_bytes as f64 / 1e6
            );
        }
        Ok((model, tok))
    }

    pub fn load(&self) -> Result<(Model, Tokenizer), Box<dyn std::error::Error>> {
        if let Some(t) = self.threads {
            if t == 0 {
                return Err("-t/--threads must be at least 1".into());
            }
            onebit_kernels::parallel::init_threads(t);
        }
        let t0 = std::time::Instant::now();
        let loaded = match &self.model {
            Some(path) => onebit_engine::format::load(path)?,
            None => load_embedded()?,
        };
        tracing::info!(
            "loaded {} ({} layers, hidden {}, vocab {}) in {:.2} s",
            loaded.0.provenance.path.display(),
            loaded.0.config.n_layers,
            loaded.0.config.hidden_size,
            loaded.0.config.vocab_size,
            t0.elapsed().as_secs_f64()
        );
        Ok(loaded)
    }
}

#[cfg(feature = "embedded-model")]
fn load_embedded() -> Result<(Model, Tokenizer), Box<dyn std::error::Error>> {
    tracing::info!(
        "no -m given: using the embedded model {} ({})",
        onebit_engine::embedded::NAME,
        onebit_engine::embedded::SOURCE
    );
    Ok(onebit_engine::embedded::load()?)
}

#[cfg(not(feature = "embedded-model"))]
fn load_embedded() -> Result<(Model, Tokenizer), Box<dyn std::error::Error>> {
    Err("no model given and this build has no embedded model (feature `embedded-model` is off): pass -m MODEL (a GGUF file or a Hugging Face model directory)".into())
}
