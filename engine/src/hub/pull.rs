//! `onebit pull`: fetches a repo's model files into the Hub cache.
//!
//! hf-hub (the crate candle uses) supplies the cache layout and the repo-listing request
//! (with the token). Its own blocking download is not used, for two reasons: it names partial files `<hash>.part` where
//! huggingface_hub writes `<hash>.incomplete` (so a download one tool began could not be
//! resumed by the other), and it moves a file into `blobs/` without checking it against
//! the Hub's checksum. Here a file is streamed into `blobs/<hash>.incomplete`, resumed
//! with a `Range` request, checked against the sha256 (or git sha1) that the Hub lists,
//! and only then renamed to its blob and linked from the snapshot. The transfer uses ureq,
//! the HTTP client hf-hub itself is built on (its agent is private to it).

use super::cache::{hf_home, link_snapshot, repo_dir};
use super::choose::{pick, Pick};
use super::verify::Digest;
use super::{cache_dir, io_err, resolve, HubError, Reference};
use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where to fetch from and to, and how.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The Hub's base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Bearer token (`HF_TOKEN`, else the file `huggingface-cli login` writes).
    pub token: Option<String>,
    /// The Hub cache ([`cache_dir`]).
    pub cache: PathBuf,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// Tries per file: a transfer cut short is resumed from where it stopped.
    pub attempts: usize,
}

impl PullOptions {
    /// The settings huggingface_hub reads: `HF_ENDPOINT`, `HF_TOKEN` (else
    /// `HF_TOKEN_PATH`, else `$HF_HOME/token`), `HF_HUB_CACHE` / `HF_HOME`.
    pub fn from_env() -> Result<Self, HubError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = match var("HF_TOKEN") {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let path = match var("HF_TOKEN_PATH") {
                    Some(p) => PathBuf::from(p),
                    None => hf_home()?.join("token"),
                };
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            }
        };
        Ok(Self {
            endpoint,
            token,
            cache: cache_dir()?,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            attempts: 3,
        })
    }
}

/// One file of a pull.
#[derive(Clone, Debug)]
pub struct PulledFile {
    pub name: String,
    pub bytes: u64,
    /// False when the cache already held it (from an earlier pull or huggingface-cli).
    pub downloaded: bool,
}

/// What a pull fetched, and the path `-m` will use for it.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub path: PathBuf,
    pub commit: String,
    pub files: Vec<PulledFile>,
    /// Why these files (for a repo chosen from, not named by `:FILE`).
    pub why: Option<String>,
}

#[derive(Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Fetches the files `reference` names (or the best model files of the repo, see
/// [`pick`]) at the commit `main` points to, into `opts.cache`.
pub fn pull(reference: &Reference, opts: &PullOptions) -> Result<Pulled, HubError> {
    let repo = &reference.repo;
    let api = ApiBuilder::from_cache(Cache::new(opts.cache.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .with_user_agent("onebit", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Unreachable {
            url: opts.endpoint.clone(),
            message: e.to_string(),
        })?;
    let listing = list(&api, repo)?;
    let names: Vec<String> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .collect();
    let (wanted, why) = match &reference.file {
        Some(file) if names.contains(file) => (vec![file.clone()], None),
        Some(file) => {
            return Err(HubError::NoModelFile {
                repo: repo.clone(),
                why: format!("it has no file {file:?}; it has {}", names.join(", ")),
            })
        }
        None => match pick(&names).map_err(|why| HubError::NoModelFile {
            repo: repo.clone(),
            why,
        })? {
            Pick::Gguf { file, why } => (vec![file], Some(why)),
            Pick::HfDir { files } => (
                files,
                Some("a Hugging Face model directory (the repo has no ternary GGUF file)".into()),
            ),
        },
    };
    if let Some(why) = &why {
        tracing::info!(repo, files = wanted.join(", "), "chosen: {why}");
    }
    let dir = repo_dir(&opts.cache, repo);
    let at_commit = api.repo(Repo::with_revision(
        repo.clone(),
        RepoType::Model,
        listing.sha.clone(),
    ));
    let client = Client::new(opts);
    let mut files = Vec::new();
    for name in &wanted {
        let sib = listing
            .siblings
            .iter()
            .find(|s| &s.rfilename == name)
            .ok_or_else(|| HubError::Listing {
                repo: repo.clone(),
                message: format!("{name} vanished from the list"),
            })?;
        let digest = match (&sib.lfs, &sib.blob_id) {
            (Some(lfs), _) => Digest::Sha256(lfs.sha256.to_ascii_lowercase()),
            (None, Some(id)) => Digest::GitSha1(id.to_ascii_lowercase()),
            (None, None) => {
                return Err(HubError::Listing {
                    repo: repo.clone(),
                    message: format!("no checksum listed for {name}"),
                })
            }
        };
        let valid_hex = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_hex(digest.hex()) {
            return Err(HubError::Listing {
                repo: repo.clone(),
                message: format!("{name}'s checksum {:?} is not hex", digest.hex()),
            });
        }
        let size = sib.lfs.as_ref().map(|l| l.size).or(sib.size);
        let file = Fetch {
            repo,
            name,
            url: at_commit.url(name),
            digest,
            size,
        };
        files.push(file.run(&client, &dir, opts)?);
        link_snapshot(&dir, &listing.sha, name, file.digest.hex())?;
    }
    Cache::new(opts.cache.clone())
        .model(repo.clone())
        .create_ref(&listing.sha)
        .map_err(io_err(&dir))?;
    let path = match &reference.file {
        Some(_) => resolve(reference, &opts.cache)?,
        None if wanted.len() == 1 && wanted[0].ends_with(".gguf") => {
            dir.join("snapshots").join(&listing.sha).join(&wanted[0])
        }
        None => dir.join("snapshots").join(&listing.sha),
    };
    Ok(Pulled {
        path,
        commit: listing.sha,
        files,
        why,
    })
}

/// The Hub's file list of `repo` at `main`, with sizes and checksums.
fn list(api: &Api, repo: &str) -> Result<Listing, HubError> {
    let request = api
        .model(repo.to_string())
        .info_request()
        .query("blobs", "true");
    let url = request.url().to_string();
    let response = request.call().map_err(|e| http_error(&url, e))?;
    response
        .into_json::<Listing>()
        .map_err(|e| HubError::Listing {
            repo: repo.to_string(),
            message: e.to_string(),
        })
}

fn http_error(url: &str, e: ureq::Error) -> HubError {
    match e {
        ureq::Error::Status(status, _) => HubError::Http {
            url: url.to_string(),
            status,
            hint: match status {
                401 | 403 => "the Hub wants a token for this repo: set HF_TOKEN (or run `huggingface-cli login`), and accept the model's licence on its page if it is gated".into(),
                404 => "no such repo or file; check the name (OWNER/NAME as on huggingface.co)".into(),
                416 => "the partial download is longer than the file; delete it and pull again".into(),
                429 => "too many requests; wait a minute and pull again".into(),
                _ => "the Hub refused the request".into(),
            },
        },
        ureq::Error::Transport(t) => HubError::Unreachable {
            url: url.to_string(),
            message: t.to_string(),
        },
    }
}

/// File downloads: the token and user agent on every request, proxies from the
/// environment, redirects followed (to the Hub's CDN for large files) with the token
/// kept to the Hub's own host.
struct Client {
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    fn new(opts: &PullOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("onebit/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            token: opts.token.clone(),
        }
    }

    fn get(&self, url: &str) -> ureq::Request {
        let request = self.agent.get(url);
        match &self.token {
            Some(t) => request.set("Authorization", &format!("Bearer {t}")),
            None => request,
        }
    }
}

/// Holds huggingface_hub's lock for one blob (`.locks/models--OWNER--NAME/<hash>.lock`
/// under the cache, taken with flock as its filelock does), so that two pulls, or a pull
/// and `huggingface-cli download`, never append to the same partial file at once.
fn lock(cache: &Path, repo_dir: &Path, hash: &str) -> Result<Flock<std::fs::File>, HubError> {
    let folder = repo_dir.file_name().unwrap_or_default();
    let locks = cache.join(".locks").join(folder);
    std::fs::create_dir_all(&locks).map_err(io_err(&locks))?;
    let path = locks.join(format!("{hash}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let io = |path: PathBuf, errno: nix::errno::Errno| HubError::Io {
        path,
        source: errno.into(),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!(
                "another download of this file is running (it holds {}); waiting for it",
                path.display()
            );
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io(path, e))
        }
        Err((_, e)) => Err(io(path, e)),
    }
}

/// One file to bring into `blobs/`.
struct Fetch<'a> {
    repo: &'a str,
    name: &'a str,
    url: String,
    digest: Digest,
    size: Option<u64>,
}

impl Fetch<'_> {
    fn run(&self, client: &Client, dir: &Path, opts: &PullOptions) -> Result<PulledFile, HubError> {
        let blobs = dir.join("blobs");
        let blob = blobs.join(self.digest.hex());
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let cached = || {
            len(&blob)
                .filter(|&n| self.size.is_none_or(|s| s == n))
                .map(|bytes| {
                    tracing::info!(file = self.name, "already in the cache");
                    PulledFile {
                        name: self.name.to_string(),
                        bytes,
                        downloaded: false,
                    }
                })
        };
        if let Some(done) = cached() {
            return Ok(done);
        }
        let _lock = lock(&opts.cache, dir, self.digest.hex())?;
        // Another pull (or huggingface_hub) may have finished it while this one waited.
        if let Some(done) = cached() {
            return Ok(done);
        }
        std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let part = blobs.join(format!("{}.incomplete", self.digest.hex()));
        let bar = self.bar(opts.progress);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.transfer(client, &part, &bar) {
                Ok(()) => break,
                Err(e @ HubError::Interrupted { .. }) if tries < opts.attempts.max(1) => {
                    tracing::warn!("{e}; resuming");
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            }
        }
        bar.finish_and_clear();
        let got_len = len(&part).unwrap_or(0);
        let got = if self.size.is_some_and(|s| s != got_len) {
            format!("{got_len} bytes")
        } else {
            self.digest.of_file(&part)?
        };
        if got != self.digest.hex() {
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Checksum {
                repo: self.repo.to_string(),
                file: self.name.to_string(),
                kind: self.digest.kind(),
                got,
                want: match self.size {
                    Some(s) if got_len != s => format!("{s} bytes"),
                    _ => self.digest.hex().to_string(),
                },
            });
        }
        std::fs::rename(&part, &blob).map_err(io_err(&blob))?;
        tracing::info!(
            file = self.name,
            bytes = got_len,
            kind = self.digest.kind(),
            "downloaded and checked"
        );
        Ok(PulledFile {
            name: self.name.to_string(),
            bytes: got_len,
            downloaded: true,
        })
    }

    fn bar(&self, visible: bool) -> ProgressBar {
        let bar = if visible {
            ProgressBar::new(self.size.unwrap_or(0))
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(self.name.to_string());
        bar
    }

    /// One GET from where `part` ends to the end of the file, appended to `part`.
    fn transfer(&self, client: &Client, part: &Path, bar: &ProgressBar) -> Result<(), HubError> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if self.size == Some(have) {
            return Ok(());
        }
        let mut request = client.get(&self.url);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            // The partial file is longer than the file: start over.
            Err(ureq::Error::Status(416, _)) => {
                std::fs::remove_file(part).map_err(io_err(part))?;
                return self.transfer(client, part, bar);
            }
            r => r.map_err(|e| http_error(&self.url, e))?,
        };
        let resumed = response.status() == 206;
        if resumed {
            let range = response.header("Content-Range").unwrap_or("");
            if !range.starts_with(&format!("bytes {have}-")) {
                return Err(HubError::Http {
                    url: self.url.clone(),
                    status: 206,
                    hint: format!("asked for bytes {have}- and got Content-Range {range:?}"),
                });
            }
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(part)
            .map_err(io_err(part))?;
        let start = if resumed { have } else { 0 };
        bar.set_position(start);
        let mut body = bar.wrap_read(response.into_reader());
        let copied = std::io::copy(&mut body, &mut out).and_then(|_| out.flush());
        if let Err(e) = copied {
            return Err(HubError::Interrupted {
                file: self.name.to_string(),
                got: std::fs::metadata(part).map(|m| m.len()).unwrap_or(0),
                size: self.size.unwrap_or(0),
                message: e.to_string(),
            });
        }
        let now = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = self.size.filter(|&s| now < s) {
            return Err(HubError::Interrupted {
                file: self.name.to_string(),
                got: now,
                size,
                message: "the connection closed early".into(),
            });
        }
        Ok(())
    }
}
