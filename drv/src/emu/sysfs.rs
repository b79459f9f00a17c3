//! The fake file tree (sysfs, procfs) an [`super::Emulator`] serves.

use std::io;
use std::path::{Path, PathBuf};

use super::FileMap;

/// Path -> contents; directories exist implicitly as prefixes of files.
#[derive(Default)]
pub(crate) struct Tree {
    files: FileMap,
}

impl Tree {
    pub(crate) fn insert(&mut self, path: PathBuf, contents: String) {
        self.files.insert(path, contents);
    }

    pub(crate) fn get(&self, path: &Path) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// Immediate children of directory `dir`, sorted; None if no file lies below it.
    pub(crate) fn list(&self, dir: &Path) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for p in self.files.keys() {
            if let Ok(rest) = p.strip_prefix(dir) {
                if let Some(first) = rest.components().next() {
                    let name = first.as_os_str().to_string_lossy().into_owned();
                    if !out.contains(&name) && !rest.as_os_str().is_empty() {
                        out.push(name);
                    }
                }
            }
        }
        out.sort();
        (!out.is_empty()).then_some(out)
    }

    pub(crate) fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.files.keys().any(|p| p.starts_with(path))
    }

    /// Loads every regular file under `dir` (recursively) at `mount_at`.
    pub(crate) fn load_dir(&mut self, dir: &Path, mount_at: &Path) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let target = mount_at.join(e.file_name());
            if e.file_type()?.is_dir() {
                self.load_dir(&e.path(), &target)?;
            } else {
                self.files
                    .insert(target, std::fs::read_to_string(e.path())?);
            }
        }
        Ok(())
    }
}
