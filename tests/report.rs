//! `ditbench report` end to end: the built binary on a store written here (the way
//! ditbench-report's own tests write one), its output and files checked against what
//! went in, its refusals with their messages and exit code.

mod common;
/// The store writers of crates/report/tests, so both test layers read the same sweeps.
#[path = "../crates/report/tests/common/mod.rs"]
mod store;

use std::path::Path;

use common::ditbench;

/// `ditbench --store ROOT report ARGS…`: its stdout when it exits 0; its stderr when it
/// exits 2, the code of every refused command (clap's usage errors included).
fn run(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = ditbench().arg("--store").arg(root).arg("report").args(args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8(out.stdout).unwrap()),
        Some(2) => Err(stderr),
        code => panic!("report {args:?} exited with {code:?}: {stderr}"),
    }
}

#[test]
fn sweep_by_name_or_by_spec() {
    let (tmp, root) = store::tempstore();
    store::write_sweep(&root, "paper", &store::paper_runs());
    let out = tmp.path().join("r1");
    let text = run(&root, &["--sweep", "paper", "--out", out.to_str().unwrap(), "--bootstrap", "100"]).unwrap();
    assert!(text.starts_with(&format!("wrote {}", out.join("report.html").display())), "{text}");
    // scipy: spearmanr = −0.91608, pearsonr(log, log) = −0.93562 on Table 4
    assert!(text.contains("fid vs Gflops over 12 runs: Spearman -0.9161, Pearson (log-log) -0.9356"), "{text}");
    assert!(text.contains("fit ols: fid = 137.7671 * Gflops^-0.3648"), "{text}");
    assert!(out.join("summary.json").is_file());

    let spec = tmp.path().join("paper.toml");
    std::fs::write(&spec, "name = \"paper\"\n").unwrap();
    let out2 = tmp.path().join("r2");
    let text = run(&root, &[spec.to_str().unwrap(), "--out", out2.to_str().unwrap(), "--step", "200000", "--fit", "huber", "--bootstrap", "50"]).unwrap();
    assert!(text.contains("over 12 runs"), "{text}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out2.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["step"], 200_000);
    assert_eq!(s["fits"]["drawn"], "huber");
    // at 200K the fixture's FID is Table 4's × 1.4
    assert!((s["runs"][0]["quality"].as_f64().unwrap() - 153.6 * 1.4).abs() < 1e-9);
}

#[test]
fn bad_arguments_are_refused_with_reasons() {
    let (tmp, root) = store::tempstore();
    store::write_sweep(&root, "s", &[store::RunPlan::new("r", "DiT-S", 2, 6.0)]);
    assert!(run(&root, &[]).is_err(), "SPEC or --sweep is required");
    let e = run(&root, &["a.toml", "--sweep", "s"]).unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
    let o = tmp.path().join("o");
    let e = run(&root, &["--sweep", "s", "--out", o.to_str().unwrap(), "--huber-delta", "0"]).unwrap_err();
    assert!(e.contains("--huber-delta must be a positive number"), "{e}");
    let e = run(&root, &["--sweep", "nope", "--out", o.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("unknown sweep \"nope\"") && e.contains("sweeps in this store: s"), "{e}");
    let e = run(&root, &[tmp.path().join("missing.toml").to_str().unwrap()]).unwrap_err();
    assert!(e.contains("missing.toml"), "{e}");
}
