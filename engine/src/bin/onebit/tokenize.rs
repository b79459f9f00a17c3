//! `onebit tokenize`: text → ids (no BOS unless `--bos`).

use crate::common::{CliResult, ModelArgs};
use onebit_engine::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A tokenizer.json to use instead of a model's tokenizer.
    #[arg(long, conflicts_with = "model")]
    pub tokenizer: Option<PathBuf>,
    /// Read the text from a file.
    #[arg(short = 'f', long = "file", conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// The text.
    pub text: Option<String>,
    /// Prepend BOS.
    #[arg(long)]
    pub bos: bool,
    /// Print {"ids": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let text = match (&a.file, &a.text) {
        (Some(f), _) => {
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
        }
        (None, Some(t)) => t.clone(),
        (None, None) => return Err("give the text as an argument or with -f FILE".into()),
    };
    let tok = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None => a.model.load()?.1,
    };
    let ids = tok.encode(&text, a.bos)?;
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}
