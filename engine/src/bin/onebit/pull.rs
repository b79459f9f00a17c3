//! `onebit pull OWNER/NAME[:FILE]`: fetch a model from the Hugging Face Hub into its cache,
//! after which `-m OWNER/NAME[:FILE]` runs it.

use crate::common::CliResult;
use clap::Args as ClapArgs;
use onebit_engine::hub::{self, PullOptions, Reference};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// OWNER/NAME (the best ternary GGUF in the repo, else its safetensors model directory)
    /// or OWNER/NAME:FILE (that file).
    pub reference: String,
    /// Print what was fetched as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let reference = Reference::parse(&a.reference)?;
    let opts = PullOptions::from_env()?;
    tracing::info!(
        endpoint = opts.endpoint,
        cache = %opts.cache.display(),
        token = opts.token.is_some(),
        "pulling {reference}"
    );
    let pulled = hub::pull(&reference, &opts)?;
    if a.json {
        let files: Vec<_> = pulled
            .files
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "bytes": f.bytes, "downloaded": f.downloaded}))
            .collect();
        let v = serde_json::json!({
            "reference": reference.to_string(), "path": pulled.path, "commit": pulled.commit,
            "why": pulled.why, "files": files,
        });
        println!("{v}");
        return Ok(());
    }
    for f in &pulled.files {
        let how = if f.downloaded {
            "downloaded"
        } else {
            "already in the cache"
        };
        eprintln!("{} ({} bytes): {how}", f.name, f.bytes);
    }
    if let Some(why) = &pulled.why {
        eprintln!("chose {}: {why}", pulled.path.display());
    }
    eprintln!("run it with: onebit run -m {reference} -p \"...\"");
    println!("{}", pulled.path.display());
    Ok(())
}
