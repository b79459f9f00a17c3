//! Engine errors. Each names the file or tensor, the offset where one applies, and what
//! to do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file that does not follow its format.
    #[error("{path}: {what} (at byte offset {offset}); the file is corrupt or not a supported model — re-download or re-convert it")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// A tensor whose shape or type does not fit the model's configuration.
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    /// Something the file declares that onebit does not implement.
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input from a user or client (prompt too long, empty, unknown id, ...).
    #[error("{0}")]
    Input(String),
    /// A compute surface failed (a queue hang, a device error, out of device memory).
    #[error("{0}")]
    Device(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        what: impl Into<String>,
    ) -> Self {
        Self::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            what: what.into(),
        }
    }
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }
}
