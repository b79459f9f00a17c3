//! The checksums the Hub lists for a file: sha256 for LFS files (their blob name in the
//! cache), the git blob sha1 for small files kept in git.

use super::{io_err, HubError};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub enum Digest {
    Sha256(String),
    GitSha1(String),
}

impl Digest {
    /// The lowercase hex digest, which is also the file's blob name in the cache.
    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::GitSha1(h) => h,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::GitSha1(_) => "git sha1",
        }
    }

    /// The same digest of the file at `path`.
    pub fn of_file(&self, path: &Path) -> Result<String, HubError> {
        let mut f = std::fs::File::open(path).map_err(io_err(path))?;
        let len = f.metadata().map_err(io_err(path))?.len();
        let mut buf = vec![0u8; 1 << 20];
        match self {
            Digest::Sha256(_) => {
                let mut h = Sha256::new();
                feed(&mut f, &mut buf, path, |b| h.update(b))?;
                Ok(hex(&h.finalize()))
            }
            Digest::GitSha1(_) => {
                let mut h = Sha1::new();
                h.update(format!("blob {len}\0").as_bytes());
                feed(&mut f, &mut buf, path, |b| h.update(b))?;
                Ok(hex(&h.finalize()))
            }
        }
    }
}

fn feed(
    f: &mut std::fs::File,
    buf: &mut [u8],
    path: &Path,
    mut update: impl FnMut(&[u8]),
) -> Result<(), HubError> {
    loop {
        let n = f.read(buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = std::env::temp_dir().join(format!("onebit-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("hello");
        std::fs::write(&p, b"hello\n").unwrap();
        // `sha256sum` and `git hash-object` of "hello\n".
        let sha = Digest::Sha256(String::new()).of_file(&p).unwrap();
        assert_eq!(
            sha,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let git = Digest::GitSha1(String::new()).of_file(&p).unwrap();
        assert_eq!(git, "ce013625030ba8dba906f756967f9e9ca394464a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
