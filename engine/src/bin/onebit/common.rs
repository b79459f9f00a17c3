//! What every subcommand shares: logging, model selection, threads.

use clap::Args as ClapArgs;
use onebit_engine::format::{LoadMethod, LoadOptions};
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
    /// Model: a GGUF file, a Hugging Face model directory, or `OWNER/NAME[:FILE]` fetched
    /// by `onebit pull` (default: the embedded model).
    #[arg(short = 'm', long = "model", value_parser = onebit_engine::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// How a GGUF file gets into memory: uring (io_uring O_DIRECT reads into a sealed
    /// memfd, falling back to read where refused), read (pread into the memfd) or mmap (the
    /// file's page cache, as mapped windows).
    #[arg(long = "load", default_value = "uring")]
    pub load: LoadMethod,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Read every down_proj weight column. By default decoding skips the columns whose
    /// input is 0 (lossless: the same results, fewer bytes read).
    #[arg(long)]
    pub dense_down: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<(Model, Tokenizer), Box<dyn std::error::Error>> {
        if let Some(t) = self.threads {
            if t == 0 {
                return Err("-t/--threads must be at least 1".into());
            }
            onebit_kernels::parallel::init_threads(t);
        }
        let t0 = std::time::Instant::now();
        let loaded = match &self.model {
            Some(path) => onebit_engine::format::load_with(path, &load_options(self.load))?,
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

/// Load options for `--load` on the real kernel.
pub fn load_options(method: LoadMethod) -> LoadOptions {
    LoadOptions {
        method,
        ..LoadOptions::default()
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

/// Where the forward pass runs, shared by run, perplexity and logits.
#[derive(ClapArgs, Clone, Debug)]
pub struct SurfaceArgs {
    /// Compute surface: auto (what `onebit probe` finds), cpu, igpu, npu+igpu or npu+cpu.
    #[arg(long, default_value = "auto")]
    pub surface: onebit_engine::backend::SurfaceChoice,
    /// Run device surfaces on the in-process KFD emulator instead of the hardware.
    #[arg(long)]
    pub emulator: bool,
    /// Built NPU kernel artifacts (kernels/npu/build.sh) for npu+igpu / npu+cpu.
    #[arg(long = "npu-artifacts", env = "ONEBIT_NPU_ARTIFACTS")]
    pub npu_artifacts: Option<std::path::PathBuf>,
    /// KV cache format of CPU sessions: f32 (exact), f16, q8_0 or q4_0 (half, about a
    /// quarter and about an eighth of f32's bytes; `q4` for short). Device surfaces keep
    /// f32, which their kernels read.
    #[arg(long = "kv", default_value = "f16")]
    pub kv: onebit_engine::forward::KvFormat,
}

impl SurfaceArgs {
    /// Loads the model and opens the surface with `ctx` tokens per session.
    pub fn open(
        &self,
        model: &ModelArgs,
        ctx: usize,
        screened_head: bool,
    ) -> Result<Loaded, Box<dyn std::error::Error>> {
        let (m, tok) = model.load()?;
        let mut eos = tok.eos_ids();
        eos.extend(m.config.eos_token_ids.iter().copied());
        let vocab = m.config.vocab_size;
        let opts = onebit_engine::backend::SelectOptions {
            choice: self.surface,
            emulator: self.emulator,
            ctx,
            sessions: 1,
            screened_head,
            sparse_down: !model.dense_down,
            npu_artifacts: self.npu_artifacts.clone(),
            kv_format: self.kv,
            ..Default::default()
        };
        Ok(Loaded {
            backend: onebit_engine::backend::open(m, &opts)?,
            tok,
            eos,
            vocab,
        })
    }
}

/// A model opened on a surface.
pub struct Loaded {
    pub backend: onebit_engine::backend::Opened,
    pub tok: Tokenizer,
    /// Tokens that end a generation (the tokenizer's and the model config's).
    pub eos: Vec<u32>,
    pub vocab: usize,
}

/// Runs `$body` with `$b` bound to the opened backend, whichever surface it is.
#[macro_export]
macro_rules! with_backend {
    ($opened:expr, |$b:ident| $body:expr) => {
        match $opened {
            onebit_engine::backend::Opened::Cpu(mut $b) => $body,
            onebit_engine::backend::Opened::Igpu(mut $b) => $body,
            onebit_engine::backend::Opened::NpuCpu(mut $b) => $body,
            onebit_engine::backend::Opened::NpuIgpu(mut $b) => $body,
        }
    };
}
