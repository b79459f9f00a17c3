//! Model file formats. `-m` takes a GGUF file or a Hugging Face model directory; each
//! format has one loader, memory-maps its file and validates every offset and shape.
//!
//! - [`gguf`]: GGUF reader; [`gguf_write`]: GGUF writer (I2_S, TQ2_0, TQ1_0, SHERRY).
//! - [`sherry`]: projecting dense ternary weights onto Sherry's 3:4 sparsity.
//! - [`hf`]: HF directory loader and writer (uint8-packed ternary safetensors).
//! - [`medusa`]: Medusa heads (speculative decoding) in either.

pub mod codec;
pub mod fuzz;
pub mod gguf;
mod gguf_model;
pub mod gguf_write;
pub mod hf;
pub mod layout;
pub mod medusa;
pub mod read_file;
pub mod repack;
pub mod sherry;

use crate::model::{Bytes, Model};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

pub use gguf_model::ARCHS as GGUF_ARCHS;
pub use read_file::{LoadMethod, LoadOptions};

/// Loads a model and its tokenizer from a GGUF file or an HF directory, reading a GGUF file
/// into the weights' sealed memfd with io_uring (see [`read_file`]).
pub fn load(path: &Path) -> Result<(Model, Tokenizer)> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with a chosen load method. HF directories are always memory-mapped (their
/// safetensors files are read where they lie).
pub fn load_with(path: &Path, o: &LoadOptions) -> Result<(Model, Tokenizer)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if o.method != LoadMethod::Mmap {
            tracing::debug!(
                "{}: a Hugging Face directory is memory-mapped (--load {} applies to GGUF files)",
                path.display(),
                o.method
            );
        }
        return hf::load_dir(path);
    }
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if n == 4 && &magic == gguf::MAGIC {
        let g = gguf::GgufFile::open_with(path, o)?;
        let loaded = gguf_model::model_from_gguf(&g);
        // The metadata (the vocabulary's strings: tens of MB on a 128k vocabulary) is freed
        // now; hand the heap pages back so they do not sit beside the weights.
        drop(g);
        crate::model::return_freed_memory();
        return loaded;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hint = if name.ends_with(".safetensors") || name.ends_with(".json") {
        "pass the Hugging Face model directory that holds it, not the file"
    } else {
        "pass a GGUF file (starts with \"GGUF\") or a Hugging Face model directory"
    };
    Err(Error::corrupt(
        path,
        0,
        format!("not a model: the file does not start with \"GGUF\" ({hint})"),
    ))
}

/// Loads a GGUF model held in memory (e.g. compiled into the binary); `name` is used in messages.
pub fn load_gguf_bytes(name: &str, bytes: Bytes) -> Result<(Model, Tokenizer)> {
    let g = gguf::GgufFile::parse(name, bytes)?;
    gguf_model::model_from_gguf(&g)
}
