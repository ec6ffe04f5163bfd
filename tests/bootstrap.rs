//! `./just`, the README's entry point on a machine without `just`: it passes its
//! arguments on to a `just` found on PATH, and installs one into the cache when none is.

mod common;

use std::process::Command;

use common::repo_root;

/// PATH without any folder that holds a `just`, so the script cannot find one.
fn path_without_just() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|d| !d.join("just").exists())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn a_just_on_path_gets_the_arguments_and_the_repository_justfile() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    let script = fake.join("just");
    std::fs::write(&script, "#!/bin/sh\nfor a in \"$@\"; do echo \"arg:$a\"; done\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cache = tmp.path().join("cache");
    let out = Command::new(repo_root().join("just"))
        .args(["demo", "--dry-run", "two words"])
        .env("PATH", format!("{}:{}", fake.display(), path_without_just()))
        .env("DITBENCH_CACHE", &cache)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("arg:")).map(String::from).collect();
    let justfile = repo_root().join("justfile").display().to_string();
    assert_eq!(
        args,
        ["--justfile", justfile.as_str(), "--working-directory", repo_root().to_str().unwrap(), "demo", "--dry-run", "two words"]
    );
    assert!(!cache.exists(), "nothing is installed when PATH has a just");
}

#[test]
fn without_just_it_installs_one_into_the_cache_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = || {
        Command::new(repo_root().join("just"))
            .arg("--list")
            .env("PATH", path_without_just())
            .env("DITBENCH_CACHE", &cache)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("installing just"), "{stderr}");
    let listing = String::from_utf8_lossy(&first.stdout);
    for recipe in ["demo", "test", "setup"] {
        assert!(listing.lines().any(|l| l.split_whitespace().next() == Some(recipe)), "{recipe} missing:\n{listing}");
    }
    assert!(cache.join("bin/just").exists());
    let second = run();
    assert!(second.status.success());
    assert!(!String::from_utf8_lossy(&second.stderr).contains("installing"), "installed twice");
    assert_eq!(first.stdout, second.stdout);
}
