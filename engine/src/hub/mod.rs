//! Models from the Hugging Face Hub, kept in the Hub's own cache layout so that files
//! fetched by `huggingface-cli download` are found here and the other way round:
//!
//! ```text
//! $HF_HUB_CACHE (default $HF_HOME/hub, default ~/.cache/huggingface/hub)
//!   models--OWNER--NAME/
//!     blobs/<sha256 of an LFS file, or git blob sha1 of a small one>
//!     blobs/<hash>.incomplete          a partial download, resumed with a Range request
//!     snapshots/<commit>/<file>        relative symlink to ../../blobs/<hash>
//!     refs/main                        the commit that `main` pointed to when pulled
//! ```
//!
//! [`pull`] downloads (`onebit pull OWNER/NAME[:FILE]`); [`resolve`] finds a pulled model
//! on disk with no network, which is what `-m OWNER/NAME` does everywhere a path goes
//! ([`model_arg`]).

mod cache;
mod choose;
mod pull;
mod verify;

pub use cache::{cache_dir, repo_of, resolve};
pub use choose::{pick, Pick};
pub use pull::{pull, PullOptions, Pulled};

use std::path::{Path, PathBuf};

/// What went wrong finding or fetching a model; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{0:?} is not a model reference: write OWNER/NAME or OWNER/NAME:FILE, as on huggingface.co"
    )]
    BadReference(String),
    #[error("{reference:?} is neither a file nor a model in the Hugging Face cache {}; fetch it with `onebit pull {reference}`", cache.display())]
    NotPulled { reference: String, cache: PathBuf },
    #[error("{file:?} is not in the pulled snapshot of {repo} ({}); fetch it with `onebit pull {repo}:{file}`", snapshot.display())]
    FileNotPulled {
        repo: String,
        file: String,
        snapshot: PathBuf,
    },
    #[error("{repo} has no file onebit can run: {why}")]
    NoModelFile { repo: String, why: String },
    #[error("no home directory to keep the Hugging Face cache in: set HF_HOME or HF_HUB_CACHE")]
    NoCacheDir,
    #[error("cannot reach {url}: {message}; check the network, or HF_ENDPOINT if set")]
    Unreachable { url: String, message: String },
    #[error("{url} answered HTTP {status}: {hint}")]
    Http {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("the Hub's file list for {repo} is not understood ({message})")]
    Listing { repo: String, message: String },
    #[error("the download of {file} stopped at {got} of {size} bytes ({message}); run `onebit pull` again to resume it")]
    Interrupted {
        file: String,
        got: u64,
        size: u64,
        message: String,
    },
    #[error("{file} from {repo} does not match the Hub's checksum ({kind} {got}, listed {want}): the download was corrupted or tampered with, so it was deleted; run `onebit pull` again")]
    Checksum {
        repo: String,
        file: String,
        kind: &'static str,
        got: String,
        want: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `OWNER/NAME` with an optional `:FILE` inside the repo.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub repo: String,
    pub file: Option<String>,
}

impl Reference {
    /// Parses `OWNER/NAME[:FILE]`: owner and name as the Hub allows them (letters,
    /// digits, `-`, `_`, `.`), and a relative file path that stays inside the repo.
    pub fn parse(s: &str) -> Result<Self, HubError> {
        let bad = || HubError::BadReference(s.to_string());
        let (repo, file) = match s.split_once(':') {
            Some((r, f)) => (r, Some(f)),
            None => (s, None),
        };
        let (owner, name) = repo.split_once('/').ok_or_else(bad)?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !part_ok(owner) || !part_ok(name) {
            return Err(bad());
        }
        if let Some(f) = file {
            let inside = !f.is_empty()
                && !f.starts_with('/')
                && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if !inside {
                return Err(bad());
            }
        }
        Ok(Self {
            repo: repo.to_string(),
            file: file.map(str::to_string),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{file}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// The value of `-m`: an existing file or directory as it is, else `OWNER/NAME[:FILE]`
/// found in the Hugging Face cache. Anything else, including `DIR/NAME.gguf` (a file name,
/// not a repo), is returned as a path, for the loader to report as missing.
pub fn model_arg(s: &str) -> Result<PathBuf, HubError> {
    let path = Path::new(s);
    let file_name = [".gguf", ".safetensors", ".json"]
        .iter()
        .any(|ext| s.to_ascii_lowercase().ends_with(ext));
    if path.exists() || file_name && !s.contains(':') {
        return Ok(path.to_path_buf());
    }
    match Reference::parse(s) {
        Ok(r) => resolve(&r, &cache_dir()?),
        Err(_) => Ok(path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("microsoft/bitnet-b1.58-2B-4T-gguf:ggml-model-i2_s.gguf").unwrap();
        assert_eq!(r.repo, "microsoft/bitnet-b1.58-2B-4T-gguf");
        assert_eq!(r.file.as_deref(), Some("ggml-model-i2_s.gguf"));
        assert_eq!(
            r.to_string(),
            "microsoft/bitnet-b1.58-2B-4T-gguf:ggml-model-i2_s.gguf"
        );
        assert_eq!(Reference::parse("a/b").unwrap().file, None);
        assert_eq!(
            Reference::parse("a/b:sub/x.gguf").unwrap().file.as_deref(),
            Some("sub/x.gguf")
        );
        for bad in [
            "a",
            "a/b/c",
            "/b",
            "a/",
            "a/b:",
            "a/b:../x",
            "a/b:/etc/passwd",
            "a/b:x/../../y",
            "a b/c",
            "../x/y",
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(HubError::BadReference(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn model_arg_keeps_paths_and_plain_names() {
        let here = std::env::temp_dir();
        assert_eq!(model_arg(here.to_str().unwrap()).unwrap(), here);
        // Not a reference (two slashes): left for the loader to call missing.
        assert_eq!(
            model_arg("no/such/file.gguf").unwrap(),
            PathBuf::from("no/such/file.gguf")
        );
        // A file name, not a repo.
        assert_eq!(
            model_arg("models/x.gguf").unwrap(),
            PathBuf::from("models/x.gguf")
        );
        // A reference that was never pulled says how to pull it.
        let empty = std::env::temp_dir().join("onebit-empty-hub-cache");
        let e = resolve(&Reference::parse("nobody/nothing").unwrap(), &empty).unwrap_err();
        assert!(e.to_string().contains("onebit pull nobody/nothing"), "{e}");
    }
}
