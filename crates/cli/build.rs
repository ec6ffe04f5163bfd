include!("../../build-support/libtorch_link.rs");

/// Records the git commit (and whether the tree was dirty) for `ditbench --version`
/// and for the provenance written into every run's config.
fn git_describe() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    println!("cargo:rustc-env=DITBENCH_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=DITBENCH_GIT_DIRTY={dirty}");
    if let Some(head) = git(&["rev-parse", "--git-dir"]) {
        let head = root.join(head);
        println!("cargo:rerun-if-changed={}", head.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", head.join("index").display());
    }
}

fn main() {
    link_libtorch();
    git_describe();
}
