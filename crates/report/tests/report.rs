//! End-to-end: stores written through ditbench-track, reports written from them, and
//! the outputs checked against the numbers that went in (and scipy's on the paper's).

mod common;

use common::{paper_runs, tempstore, write_sweep, RunPlan};
use ditbench_report::{sweep_name_from_spec, write_report, FitChoice, ReportError, ReportOptions};
use ditbench_track::Status;

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn the_papers_table4_as_a_sweep_gives_scipys_correlations() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "paper", &paper_runs());
    let out = tmp.path().join("report");
    let mut opts = ReportOptions::new("paper", &out);
    opts.bootstrap = 300;
    let r = write_report(&root, &opts).unwrap();

    let fx = common::fixtures();
    let s = read_json(&r.summary_json);
    assert_eq!(s["metric"], "fid");
    assert_eq!(s["correlations"]["n"], 12);
    let sp = s["correlations"]["spearman"].as_f64().unwrap();
    let pe = s["correlations"]["pearson_loglog"].as_f64().unwrap();
    assert!((sp - fx["paper_table4"]["spearman"].as_f64().unwrap()).abs() < 1e-12, "{sp}");
    assert!((pe - fx["paper_table4"]["pearson_loglog"].as_f64().unwrap()).abs() < 1e-12, "{pe}");
    // The sweep is Table 4, so the report's paper reference agrees with it.
    assert_eq!(s["paper"]["correlations"]["spearman"].as_f64().unwrap(), sp);
    // The paper says −0.93 for its figure; on Table 4's numbers Pearson in log-log
    // space gives −0.936 and Spearman −0.916 (scipy agrees, see the fixture).
    assert!((pe - -0.93).abs() < 0.01);
    // The fit equals scipy's least squares on the logs, and its CI contains it.
    let ols = &s["fits"]["ols"];
    let (a, b) = (ols["fit"]["a"].as_f64().unwrap(), ols["fit"]["b"].as_f64().unwrap());
    assert!((a - fx["paper_table4"]["ols"]["a"].as_f64().unwrap()).abs() < 1e-9 * a);
    assert!((b - fx["paper_table4"]["ols"]["b"].as_f64().unwrap()).abs() < 1e-10);
    let ci = &ols["b_ci"];
    assert!(ci[0].as_f64().unwrap() < b && b < ci[1].as_f64().unwrap(), "{ci}");
    assert_eq!(ols["resamples"], 300);
    assert!(s["fits"]["huber"]["fit"]["b"].is_number());

    // Per run: final FID is Table 4's, training compute is 3 × Gflops × 256 × 400K.
    for (run, e) in s["runs"].as_array().unwrap().iter().zip(sorted_paper()) {
        assert_eq!(run["model"], e.name);
        assert_eq!(run["quality"].as_f64().unwrap(), e.fid_50k_400k);
        assert_eq!(run["quality_step"], 400_000);
        assert_eq!(run["paper_fid_50k_400k"].as_f64().unwrap(), e.fid_50k_400k);
        let c = run["training_compute"].as_f64().unwrap();
        assert!((c - 3.0 * e.gflops * 256.0 * 400_000.0).abs() < 1e-6 * c);
    }

    // Every promised file, non-empty; PNGs are PNGs; the HTML is self-contained.
    for f in ["gflops", "compute", "steps_by_size", "steps_by_patch", "loss"] {
        let svg = std::fs::read_to_string(out.join(format!("figures/{f}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.len() > 1000, "{f}");
        let png = std::fs::read(out.join(format!("figures/{f}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{f}");
    }
    for f in ["quality_vs_gflops", "quality_vs_steps", "loss", "fit_band"] {
        assert!(out.join(format!("data/{f}.parquet")).metadata().unwrap().len() > 0, "{f}");
    }
    let html = std::fs::read_to_string(&r.html).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no URLs in the HTML");
    assert!(!html.to_ascii_lowercase().contains("<script"), "no scripts");
    assert_eq!(html.matches("<figure id=\"fig-").count(), 5);
    assert_eq!(html.matches("data:image/png;base64,").count(), 12, "one sample grid per run");
    assert!(html.contains("−0.9161"), "Spearman shown");
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("![") && md.contains("figures/gflops.png"));
    assert!(md.contains("| DiT-XL-2 | DiT-XL/2 | finished |"), "{md}");
    assert_eq!(std::fs::read_dir(out.join("samples")).unwrap().count(), 12);
}

fn sorted_paper() -> Vec<ditbench_family::PaperEntry> {
    // The report orders runs by size, then patch from 8 to 2 (Table 4's order).
    ditbench_family::PAPER_TABLE4.to_vec()
}

#[test]
fn loss_points_are_stored_in_full_and_parquet_reads_back() {
    let (tmp, root) = tempstore();
    let mut r = RunPlan::new("r0", "DiT-S", 4, 1.4);
    r.steps = 5000;
    r.loss_every = 1; // 5000 points: drawn downsampled, stored in full
    r.evals = vec![(5000, "fid".into(), 90.0, 1.0)];
    write_sweep(&root, "s", &[r]);
    let out = tmp.path().join("rep");
    let rep = write_report(&root, &ReportOptions::new("s", &out)).unwrap();
    let s = read_json(&rep.summary_json);
    assert_eq!(s["runs"][0]["loss_points"], 5000);
    use polars::prelude::*;
    let f = std::fs::File::open(out.join("data/loss.parquet")).unwrap();
    let df = ParquetReader::new(f).finish().unwrap();
    assert_eq!(df.height(), 5000);
    let raw = df.column("loss").unwrap().f64().unwrap();
    assert_eq!(raw.get(1233), Some(common::synthetic_loss(1234, 0)));
    // one run: no fit, and the report says why instead of drawing one
    assert!(s["fits"]["ols"]["error"].as_str().unwrap().contains("at least 3"), "{}", s["fits"]);
    assert!(s["correlations"]["spearman"].is_null());
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(html.contains("no fit: a power-law fit needs at least 3 points"));
}

#[test]
fn missing_evaluations_are_shown_as_missing_never_zero() {
    let (tmp, root) = tempstore();
    let mut runs = Vec::new();
    for (i, (m, p, g, fid)) in [("DiT-S", 8, 0.36, 150.0), ("DiT-S", 4, 1.41, 100.0), ("DiT-S", 2, 6.06, 70.0), ("DiT-B", 2, 23.0, 45.0)]
        .into_iter()
        .enumerate()
    {
        let mut r = RunPlan::new(&format!("r{i}"), m, p, g);
        r.evals = vec![(400_000, "fid".into(), fid, 1.0)];
        runs.push(r);
    }
    // a failed run with metrics but no evals, and a queued run with nothing at all
    let mut failed = RunPlan::new("failed-run", "DiT-L", 2, 80.7);
    failed.status = Status::Failed;
    failed.steps = 30_000;
    runs.push(failed);
    let mut queued = RunPlan::new("queued-run", "DiT-XL", 2, 118.6);
    queued.status = Status::Queued;
    queued.loss_every = 0;
    runs.push(queued);
    write_sweep(&root, "m", &runs);
    let out = tmp.path().join("rep");
    let rep = write_report(&root, &ReportOptions::new("m", &out)).unwrap();
    let s = read_json(&rep.summary_json);
    assert_eq!(s["correlations"]["n"], 4);
    let by_id = |id: &str| s["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == id).unwrap().clone();
    assert!(by_id("failed-run")["quality"].is_null());
    assert!(by_id("queued-run")["quality"].is_null());
    assert!(by_id("queued-run")["final_loss"].is_null());
    assert_eq!(s["missing"].as_array().unwrap().len(), 2, "{}", s["missing"]);
    let html = std::fs::read_to_string(&rep.html).unwrap();
    let row = html.split("<tr>").find(|r| r.contains("<td>failed-run</td>")).unwrap();
    assert!(row.contains("<td class=\"missing\">missing</td>"), "{row}");
    assert!(!row.contains("<td>0</td>") && !row.contains("<td>0.000</td>"), "{row}");
    // Spearman on the four evaluated runs (a monotone decrease): exactly −1.
    assert!((s["correlations"]["spearman"].as_f64().unwrap() + 1.0).abs() < 1e-12);
}

#[test]
fn fd_metrics_are_named_as_fd_and_guided_rows_are_not_mixed_in() {
    let (tmp, root) = tempstore();
    let fd = "FD_builtin-cnn-32px-s0";
    let mut runs = Vec::new();
    for (i, (p, g, v)) in [(8, 0.01, 30.0), (4, 0.05, 20.0), (2, 0.2, 12.0)].into_iter().enumerate() {
        let mut r = RunPlan::new(&format!("r{i}"), "DiT-S", p, g);
        r.steps = 300;
        r.loss_every = 10;
        r.evals = vec![
            (150, fd.into(), v * 1.5, 1.0),
            (300, fd.into(), v, 1.0),
            (300, fd.into(), v / 10.0, 4.0), // guided: must not replace the unguided value
        ];
        if i == 0 {
            r.evals.push((300, "fid".into(), 55.0, 1.0)); // only one run has FID: not chosen
        }
        runs.push(r);
    }
    write_sweep(&root, "fd", &runs);
    let out = tmp.path().join("rep");
    let rep = write_report(&root, &ReportOptions::new("fd", &out)).unwrap();
    let s = read_json(&rep.summary_json);
    assert_eq!(s["metric"], fd);
    let q: Vec<f64> = s["runs"].as_array().unwrap().iter().map(|r| r["quality"].as_f64().unwrap()).collect();
    assert_eq!(q, [30.0, 20.0, 12.0]);
    let svg = std::fs::read_to_string(out.join("figures/gflops.svg")).unwrap();
    assert!(svg.contains(fd), "the y axis names the FD metric");
    assert!(svg.contains(&format!("{fd} vs transformer Gflops")));
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(html.contains("not an FID"));
    assert!(!html.contains("<th>FID</th>"));

    // --step: values at that step; a step nobody evaluated is a clear error
    let mut opts = ReportOptions::new("fd", tmp.path().join("rep150"));
    opts.step = Some(150);
    opts.fit = FitChoice::Huber;
    let rep = write_report(&root, &opts).unwrap();
    assert_eq!(rep.summary.runs[2].quality, Some(18.0));
    assert_eq!(rep.summary.fits.drawn, "huber");
    opts.step = Some(151);
    let e = write_report(&root, &opts).unwrap_err();
    assert!(matches!(e, ReportError::StepNotEvaluated { .. }), "{e}");
    assert!(e.to_string().contains("evaluated steps: 150, 300"), "{e}");
    // --metric that does not exist
    let mut opts = ReportOptions::new("fd", tmp.path().join("x"));
    opts.metric = Some("fid_typo".into());
    let e = write_report(&root, &opts).unwrap_err().to_string();
    assert!(e.contains("fid_typo") && e.contains(fd), "{e}");
}

#[test]
fn names_from_the_store_are_escaped() {
    let (tmp, root) = tempstore();
    // Sweep and run ids cannot hold '/', so the sweep carries an <img onerror> payload;
    // the model strings carry a full <script> element.
    let sweep = "<img src=x onerror=alert(1)>";
    let mut runs = Vec::new();
    for (i, g) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let mut r = RunPlan::new(&format!("<b>run{i}<b>"), "<script>alert(1)</script>", 2, g);
        r.full_model = Some("DiT-S/2</td><script>alert(2)</script>".into());
        r.evals = vec![(400_000, "fid".into(), 100.0 / (i + 1) as f64, 1.0)];
        r.loss_every = 100_000;
        r.samples = vec![400_000];
        runs.push(r);
    }
    write_sweep(&root, sweep, &runs);
    let out = tmp.path().join("rep");
    let rep = write_report(&root, &ReportOptions::new(sweep, &out)).unwrap();
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(!html.to_ascii_lowercase().contains("<script"), "a script element got through");
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("<b>run"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("DiT-S/2&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
    let md = std::fs::read_to_string(&rep.markdown).unwrap();
    assert!(!md.contains("<script") && !md.contains("<img src=x"));
}

#[test]
fn unknown_sweep_and_spec_errors_say_what_is_valid() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "real", &[RunPlan::new("r", "DiT-S", 2, 6.0)]);
    let e = write_report(&root, &ReportOptions::new("nope", tmp.path().join("o"))).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("real"), "{e}");

    let spec = tmp.path().join("s.toml");
    std::fs::write(&spec, "name = \"demo-sweep\"\n[grid]\nmodel = [\"S/2\"]\n").unwrap();
    assert_eq!(sweep_name_from_spec(&spec).unwrap(), "demo-sweep");
    std::fs::write(&spec, "[sweep]\nmodel = 1\n").unwrap();
    let e = sweep_name_from_spec(&spec).unwrap_err().to_string();
    assert!(e.contains("s.toml") && e.contains("name = \\\"...\\\"") || e.contains("name = \"...\""), "{e}");
    std::fs::write(&spec, "name = [").unwrap();
    assert!(sweep_name_from_spec(&spec).unwrap_err().to_string().contains("not valid TOML"));
}

#[test]
fn no_evaluations_at_all_gives_empty_quality_figures_not_a_failure() {
    let (tmp, root) = tempstore();
    write_sweep(&root, "noeval", &[RunPlan::new("a", "DiT-S", 2, 6.0), RunPlan::new("b", "DiT-B", 2, 23.0)]);
    let rep = write_report(&root, &ReportOptions::new("noeval", tmp.path().join("o"))).unwrap();
    assert!(rep.summary.metric.is_none());
    assert!(rep.summary.runs.iter().all(|r| r.quality.is_none()));
    assert!(rep.summary.notes.iter().any(|n| n.contains("no run of this sweep has a quality evaluation")));
    let svg = std::fs::read_to_string(rep.out_dir.join("figures/compute.svg")).unwrap();
    assert!(svg.contains("no data"));
}
