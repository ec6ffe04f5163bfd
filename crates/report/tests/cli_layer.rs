//! The `ditbench report` command layer (crates/cli/src/report.rs), compiled into this
//! test so it is exercised before the binary wires it: real argument lists parsed by
//! clap, run against a store written here, output checked against what went in.

mod common;

#[path = "../../cli/src/report.rs"]
#[allow(dead_code)]
mod report;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "ditbench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    Report(report::ReportArgs),
}

fn run(root: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["ditbench", "report"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv)?;
    let Cmd::Report(a) = cli.cmd;
    let mut out = Vec::new();
    report::run_report_to(root, &a, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn sweep_by_name_or_by_spec() {
    let (tmp, root) = common::tempstore();
    common::write_sweep(&root, "paper", &common::paper_runs());
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
    let (tmp, root) = common::tempstore();
    common::write_sweep(&root, "s", &[common::RunPlan::new("r", "DiT-S", 2, 6.0)]);
    assert!(run(&root, &[]).is_err(), "SPEC or --sweep is required");
    let e = run(&root, &["a.toml", "--sweep", "s"]).unwrap_err().to_string();
    assert!(e.contains("cannot be used with"), "{e}");
    let o = tmp.path().join("o");
    let e = run(&root, &["--sweep", "s", "--out", o.to_str().unwrap(), "--huber-delta", "0"]).unwrap_err().to_string();
    assert!(e.contains("--huber-delta must be a positive number"), "{e}");
    let e = run(&root, &["--sweep", "nope", "--out", o.to_str().unwrap()]).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("unknown sweep \"nope\"") && e.contains("sweeps in this store: s"), "{e}");
    let e = run(&root, &[tmp.path().join("missing.toml").to_str().unwrap()]).unwrap_err().to_string();
    assert!(e.contains("missing.toml"), "{e}");
}
