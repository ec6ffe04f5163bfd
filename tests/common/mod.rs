//! Helpers shared by the end-to-end tests: the built binary, the repository, file walks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built `ditbench`, with none of the environment that could hide a problem: no
/// LD_LIBRARY_PATH (it must find libtorch through its RUNPATH) and no DITBENCH_STORE
/// (each test names its store).
pub fn ditbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ditbench"));
    c.env_remove("LD_LIBRARY_PATH").env_remove("DITBENCH_STORE");
    c
}

/// The repository root, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
pub fn repo_root() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).join("../..").canonicalize().unwrap()
}

/// Every file under `dir`, recursively (empty when `dir` does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
