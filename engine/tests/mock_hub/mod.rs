//! A local stand-in for the Hugging Face Hub, on 127.0.0.1 with a free port: the repo
//! listing (`/api/models/{repo}/revision/{rev}?blobs=true`), `/{repo}/resolve/{rev}/{file}`
//! (small files directly with their git sha1 as ETag; LFS files as a 302 to a CDN on
//! another host, 127.0.0.2, with `X-Linked-Etag` and `X-Linked-Size`, as the Hub does) and
//! the CDN with `Range` support; HEAD as huggingface_hub sends it. Faults on demand:
//! transfers cut off half-way, corrupted bytes, a repo that wants a token.

#![allow(dead_code)]

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Served through LFS (sha256, CDN redirect) rather than from git.
    pub lfs: bool,
}

impl File {
    pub fn new(name: &str, bytes: Vec<u8>, lfs: bool) -> Self {
        Self {
            name: name.into(),
            bytes,
            lfs,
        }
    }

    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    pub fn git_sha1(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(&self.bytes);
        hex(&h.finalize())
    }

    /// The name of its blob in the cache.
    pub fn blob(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One request the mock saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

#[derive(Default)]
pub struct Faults {
    /// CDN transfers still to cut off after half their body.
    pub cut: AtomicUsize,
    /// Serve LFS bodies with one byte flipped.
    pub corrupt: AtomicBool,
}

struct State {
    repos: HashMap<String, Vec<File>>,
    /// Repos that answer 401 without `Authorization: Bearer {token}`.
    gated: HashMap<String, String>,
    faults: Arc<Faults>,
    seen: Mutex<Vec<Seen>>,
    /// The CDN's `host:port`.
    cdn: String,
}

pub struct MockHub {
    pub port: u16,
    state: Arc<State>,
}

impl MockHub {
    /// Serves `repos` (`OWNER/NAME` → files); `gated` repos want that token.
    pub fn start(repos: Vec<(&str, Vec<File>)>, gated: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cdn = TcpListener::bind("127.0.0.2:0").unwrap();
        let state = Arc::new(State {
            repos: repos.into_iter().map(|(r, f)| (r.to_string(), f)).collect(),
            gated: gated
                .iter()
                .map(|(r, t)| (r.to_string(), t.to_string()))
                .collect(),
            faults: Arc::default(),
            seen: Mutex::default(),
            cdn: cdn.local_addr().unwrap().to_string(),
        });
        for l in [listener, cdn] {
            let st = state.clone();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let st = st.clone();
                    std::thread::spawn(move || serve(&st, conn));
                }
            });
        }
        Self { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Requests seen so far whose path starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn serve(st: &State, conn: TcpStream) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let method = line.split_whitespace().next().unwrap_or("GET").to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    st.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    });
    let mut out = conn;
    let reply = route(st, &path, &headers);
    let _ = reply.write(&mut out, &st.faults, method == "HEAD");
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A CDN body, subject to the cut and corrupt faults.
    cdn: bool,
}

impl Reply {
    fn status(status: u16, msg: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!("{{\"error\":\"{msg}\"}}").into_bytes(),
            cdn: false,
        }
    }

    fn write(
        mut self,
        out: &mut TcpStream,
        faults: &Faults,
        head_only: bool,
    ) -> std::io::Result<()> {
        if self.cdn && faults.corrupt.load(SeqCst) && !self.body.is_empty() {
            let mid = self.body.len() / 2;
            self.body[mid] ^= 0x5a;
        }
        let reason = match self.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            401 => "Unauthorized",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            _ => "Other",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if head_only {
            return out.flush();
        }
        let cut = self.cdn
            && faults
                .cut
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if cut {
            // Half the body, then the connection drops, as a network failure would.
            out.write_all(&self.body[..self.body.len() / 2])?;
            out.flush()?;
            return out.shutdown(std::net::Shutdown::Both);
        }
        out.write_all(&self.body)?;
        out.flush()
    }
}

fn route(st: &State, path: &str, headers: &HashMap<String, String>) -> Reply {
    let find_repo = |repo: &str| -> Result<&Vec<File>, Reply> {
        let files = st
            .repos
            .get(repo)
            .ok_or_else(|| Reply::status(404, "Repository not found"))?;
        if let Some(token) = st.gated.get(repo) {
            if headers.get("authorization") != Some(&format!("Bearer {token}")) {
                return Err(Reply::status(401, "Access to this model is restricted"));
            }
        }
        Ok(files)
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, rev)) = rest.split_once("/revision/") else {
            return Reply::status(404, "no such route");
        };
        let files = match find_repo(repo) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if rev != "main" && rev != COMMIT {
            return Reply::status(404, "Revision not found");
        }
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let mut s = serde_json::json!({"rfilename": f.name, "size": f.bytes.len(), "blobId": f.git_sha1()});
                if f.lfs {
                    s["lfs"] = serde_json::json!({"sha256": f.sha256(), "size": f.bytes.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let body =
            serde_json::json!({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings});
        return Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            cdn: false,
        };
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let file = st
            .repos
            .values()
            .flatten()
            .find(|f| f.lfs && f.sha256() == sha);
        return match file {
            Some(f) => ranged(&f.bytes, headers.get("range"), true),
            None => Reply::status(404, "no such blob"),
        };
    }
    // /{owner}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo = format!("{}/{}", parts[0], parts[1]);
        let files = match find_repo(&repo) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let Some(f) = files.iter().find(|f| f.name == parts[4]) else {
            return Reply::status(404, "Entry not found");
        };
        if f.lfs {
            return Reply {
                status: 302,
                headers: vec![
                    (
                        "Location".into(),
                        format!("http://{}/cdn/{}", st.cdn, f.sha256()),
                    ),
                    ("X-Linked-Etag".into(), format!("\"{}\"", f.sha256())),
                    ("X-Linked-Size".into(), f.bytes.len().to_string()),
                    ("X-Repo-Commit".into(), COMMIT.into()),
                ],
                body: Vec::new(),
                cdn: false,
            };
        }
        let mut r = ranged(&f.bytes, headers.get("range"), false);
        r.headers
            .push(("ETag".into(), format!("\"{}\"", f.git_sha1())));
        r.headers.push(("X-Repo-Commit".into(), COMMIT.into()));
        return r;
    }
    Reply::status(404, "no such route")
}

/// The body, or the part a `Range: bytes=N-` asks for.
fn ranged(bytes: &[u8], range: Option<&String>, cdn: bool) -> Reply {
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(s) if s >= bytes.len() => Reply::status(416, "range"),
        Some(s) => Reply {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()),
            )],
            body: bytes[s..].to_vec(),
            cdn,
        },
        None => Reply {
            status: 200,
            headers: Vec::new(),
            body: bytes.to_vec(),
            cdn,
        },
    }
}
