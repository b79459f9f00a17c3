//! `onebit`: run, score and inspect BitNet b1.58 models (llama.cpp's vocabulary where it has one).

mod bandwidth;
mod bench;
mod common;
mod convert;
mod info;
mod jitter;
mod load_bench;
mod logits;
mod perplexity;
mod probe;
mod pull;
mod roofline;
mod run;
mod selftest;
mod synth;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "onebit",
    version,
    about = "Ternary (BitNet b1.58) LLM engine for AMD Strix Halo and any Linux CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it as it comes.
    Run(run::Args),
    /// Perplexity of a text file (BOS + tokens, truncated to the context).
    Perplexity(perplexity::Args),
    /// Write the logits of every position for given token ids to a safetensors file.
    Logits(logits::Args),
    /// Print the token ids of a text.
    Tokenize(tokenize::Args),
    /// Architecture, shapes, tensor types, bytes and tokenizer of a model.
    Info(info::Args),
    /// Rewrite a model in another format (GGUF I2_S / TQ2_0 / TQ1_0, HF packed).
    Convert(convert::Args),
    /// Fetch a model from the Hugging Face Hub (`OWNER/NAME[:FILE]`) into its cache.
    Pull(pull::Args),
    /// What this machine has: KFD, GPUs, render nodes, udmabuf, memlock, NPU.
    Probe(probe::Args),
    /// Write a deterministic random ternary model (2b4t or small) as GGUF or HF.
    Synth(synth::Args),
    /// Prompt-processing and decode speed, llama-bench style, with the bandwidth roofline.
    Bench(bench::Args),
    /// Decode/prefill ceilings from bytes per token and a memory bandwidth.
    Roofline(roofline::Args),
    /// Every kernel of a surface against the CPU reference, then a tiny model end to end.
    Selftest(selftest::Args),
    /// Dispatch-to-completion latency: histogram, p50/p99/p99.9, clock policy, SVG.
    Jitter(jitter::Args),
    /// Time one model load (uring, read or mmap) and measure the page cache it leaves.
    LoadBench(load_bench::Args),
}

fn main() -> ExitCode {
    common::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Perplexity(a) => perplexity::main(a),
        Command::Logits(a) => logits::main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Info(a) => info::main(a),
        Command::Convert(a) => convert::main(a),
        Command::Probe(a) => probe::main(a),
        Command::Pull(a) => pull::main(a),
        Command::Synth(a) => synth::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Roofline(a) => roofline::main(a),
        Command::Selftest(a) => selftest::main(a),
        Command::Jitter(a) => jitter::main(a),
        Command::LoadBench(a) => load_bench::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
