//! Helpers shared by the end-to-end tests: where the fixtures are, and skipping cleanly
//! when they are absent.

use std::path::PathBuf;

/// `../shared/fixtures` relative to the workspace root, or `ONEBIT_FIXTURES` if set.
pub fn fixtures_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ONEBIT_FIXTURES") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    root.is_dir().then_some(root)
}

/// Returns the fixture path, or prints why the test is skipped and returns None.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    match fixtures_dir() {
        Some(d) if d.join(rel).exists() => Some(d.join(rel)),
        Some(d) => {
            eprintln!("SKIP: fixture {} not found under {}", rel, d.display());
            None
        }
        None => {
            eprintln!("SKIP: ../shared/fixtures is absent (set ONEBIT_FIXTURES to point at it)");
            None
        }
    }
}

/// A fixture committed under `tests/fixtures` (made by the repository's own tools, such as
/// `tools/zoo/make_fixtures.py`), or prints why the test is skipped and returns None.
pub fn repo_fixture(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: fixture {} not found (make it with tools/zoo/make_fixtures.py)",
            p.display()
        );
        None
    }
}
