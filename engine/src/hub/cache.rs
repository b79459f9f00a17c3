//! Where the Hub cache is and what a pulled repo holds, read from disk alone.

use super::choose::{pick, Pick};
use super::{io_err, HubError, Reference};
use hf_hub::{Cache, Repo};
use std::path::{Path, PathBuf};

/// The Hub cache directory, as huggingface_hub finds it: `HF_HUB_CACHE`, else
/// `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Result<PathBuf, HubError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Ok(dir);
    }
    Ok(hf_home()?.join("hub"))
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(super) fn hf_home() -> Result<PathBuf, HubError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("HF_HOME") {
        return Ok(home);
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .ok_or(HubError::NoCacheDir)?;
    Ok(cache.join("huggingface"))
}

/// `models--OWNER--NAME` under `cache`.
pub(super) fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(Repo::model(repo.to_string()).folder_name())
}

/// The snapshot `refs/main` names, if the repo was pulled.
fn main_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    let dir = repo_dir(cache, repo);
    let commit = std::fs::read_to_string(dir.join("refs").join("main")).ok()?;
    let snapshot = dir.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

/// The files of a snapshot, relative to it, with `/` between directories.
fn snapshot_files(snapshot: &Path) -> Result<Vec<String>, HubError> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = snapshot.join(&rel);
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let rel = rel.join(entry.file_name());
            // `is_dir` follows links: files are links into blobs/.
            if snapshot.join(&rel).is_dir() {
                dirs.push(rel);
            } else {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The pulled file or directory `reference` names under `cache`: its `:FILE`, else the GGUF
/// file [`pick`] prefers among those pulled, else the snapshot as a Hugging Face model
/// directory.
pub fn resolve(reference: &Reference, cache: &Path) -> Result<PathBuf, HubError> {
    let repo = &reference.repo;
    let Some(snapshot) = main_snapshot(cache, repo) else {
        return Err(HubError::NotPulled {
            reference: reference.to_string(),
            cache: cache.to_path_buf(),
        });
    };
    if let Some(file) = &reference.file {
        // hf-hub reads refs/main and the snapshot link the same way huggingface_hub does.
        return Cache::new(cache.to_path_buf())
            .model(repo.clone())
            .get(file)
            .ok_or_else(|| HubError::FileNotPulled {
                repo: repo.clone(),
                file: file.clone(),
                snapshot: snapshot.clone(),
            });
    }
    let files = snapshot_files(&snapshot)?;
    match pick(&files).map_err(|why| HubError::NoModelFile {
        repo: repo.clone(),
        why: format!("{why} (in the pulled snapshot {})", snapshot.display()),
    })? {
        Pick::Gguf { file, .. } => Ok(snapshot.join(file)),
        Pick::HfDir { .. } => Ok(snapshot),
    }
}

/// `OWNER/NAME` when `path` lies in a snapshot of the Hub cache (a model id to show
/// instead of a commit hash or a blob name).
pub fn repo_of(path: &Path) -> Option<String> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let at = parts.iter().rposition(|p| p == "snapshots")?;
    let folder = parts.get(at.checked_sub(1)?)?.strip_prefix("models--")?;
    let (owner, name) = folder.split_once("--")?;
    Some(format!("{owner}/{name}"))
}

/// Makes `snapshots/<commit>/<file>` a relative link to `blobs/<hash>`, as huggingface_hub
/// does, replacing whatever was there.
pub(super) fn link_snapshot(
    dir: &Path,
    commit: &str,
    file: &str,
    blob_name: &str,
) -> Result<PathBuf, HubError> {
    let link = dir.join("snapshots").join(commit).join(file);
    let parent = link.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    // One `..` per directory between the link and the repo folder.
    let depth = 2 + file.matches('/').count();
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob_name);
    match std::fs::remove_file(&link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&link)(e)),
        _ => {}
    }
    std::os::unix::fs::symlink(&target, &link).map_err(io_err(&link))?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_of_snapshot_paths() {
        let p = Path::new(
            "/c/hub/models--microsoft--bitnet-b1.58-2B-4T-gguf/snapshots/abc/ggml-model-i2_s.gguf",
        );
        assert_eq!(
            repo_of(p).as_deref(),
            Some("microsoft/bitnet-b1.58-2B-4T-gguf")
        );
        assert_eq!(
            repo_of(Path::new("/c/hub/models--o--n/snapshots/abc")).as_deref(),
            Some("o/n")
        );
        assert_eq!(repo_of(Path::new("/models/x.gguf")), None);
    }
}
