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
    // gflops, compute, steps by size and by patch, loss; the held-out prediction and the
    // isoFLOP profiles (every run is evaluated at 5 steps, so both laws can be fitted).
    assert_eq!(html.matches("<figure id=\"fig-").count(), 7);
    assert!(html.contains("<figure id=\"fig-prediction\"") && html.contains("<figure id=\"fig-isoflop\""));
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

/// The fingerprint of the rows `common::write_sweep` writes for `metric` with
/// `num_samples` (computed by the track crate, not by the report).
fn written_fingerprint(metric: &str, num_samples: i64) -> ditbench_track::Fingerprint {
    ditbench_track::EvalRow {
        step: 0,
        wall_time: 0.0,
        metric: metric.into(),
        value: 0.0,
        num_samples,
        cfg_scale: 1.0,
        sampler: "ddpm".into(),
        sampling_steps: 250,
        extractor: "inception-v3".into(),
        extractor_hash: Some("00112233445566ff".into()),
        reference_hash: Some("8899aabbccddeeff".into()),
        cfg_mode: Some("paper".into()),
        weights: Some("ema".into()),
        vae: Some("none".into()),
        precision: Some("fp32".into()),
    }
    .fingerprint()
}

#[test]
fn quality_numbers_made_differently_never_share_a_fit() {
    // Six runs on one Gflops ladder: three evaluated with 1000 samples, three with 5000,
    // each group on an exact power law of its own (FID = a·G^b). A fit over both groups
    // would give neither law; the report must fit one group and say what it left out.
    let (a1k, b1k) = (400.0, -0.5);
    let (a5k, b5k) = (150.0, -0.3);
    let ladder = [("DiT-S", 8, 0.36), ("DiT-S", 4, 1.41), ("DiT-S", 2, 6.06), ("DiT-B", 8, 1.43), ("DiT-B", 4, 5.56), ("DiT-B", 2, 23.0)];
    let mut runs = Vec::new();
    for (i, (m, p, g)) in ladder.into_iter().enumerate() {
        let mut r = RunPlan::new(&format!("r{i}"), m, p, g);
        let (ns, a, b, step) = if i % 2 == 0 { (1000, a1k, b1k, 300_000) } else { (5000, a5k, b5k, 400_000) };
        r.num_samples = ns;
        // Equal run counts: the 5000-sample rows win as the most recent (wall time = step).
        r.evals = vec![(step, "fid".into(), a * f64::powf(g, b), 1.0)];
        runs.push(r);
    }
    let (tmp, root) = tempstore();
    write_sweep(&root, "mixed", &runs);
    let mut opts = ReportOptions::new("mixed", tmp.path().join("rep"));
    opts.bootstrap = 200;
    let rep = write_report(&root, &opts).unwrap();
    let s = read_json(&rep.summary_json);
    let kept = written_fingerprint("fid", 5000);
    assert_eq!(s["fingerprint"]["id"], kept.id());
    assert_eq!(s["fingerprint"]["num_samples"], 5000);
    // The fit is the 5000-sample law exactly, on its three runs.
    let fit = &s["fits"]["ols"];
    assert_eq!(fit["n"], 3);
    assert!((fit["fit"]["b"].as_f64().unwrap() - b5k).abs() < 1e-9, "{fit}");
    assert!((fit["fit"]["a"].as_f64().unwrap() - a5k).abs() < 1e-9 * a5k, "{fit}");
    assert_eq!(s["correlations"]["n"], 3);
    for (i, run) in s["runs"].as_array().unwrap().iter().enumerate() {
        let id = run["run_id"].as_str().unwrap();
        let odd = id.trim_start_matches('r').parse::<usize>().unwrap() % 2 == 1;
        assert_eq!(run["quality"].is_null(), !odd, "run {i}: {run}");
    }
    // The note: how many rows and runs, the field that differs with both values, and
    // the runs left without a value.
    let notes: Vec<&str> = s["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let note = notes.iter().find(|n| n.contains("left out")).unwrap_or_else(|| panic!("{notes:?}"));
    assert!(note.starts_with("3 fid rows of 3 runs left out"), "{note}");
    assert!(note.contains("num_samples 5000 vs 1000") && !note.contains("reference_hash"), "{note}");
    assert!(note.contains("r0, r2, r4"), "{note}");
    let html = std::fs::read_to_string(&rep.html).unwrap();
    assert!(html.contains("num_samples 5000 vs 1000"), "the notes section names the field");

    // Four runs at 1000 samples, two at 5000 (the more recent): the most runs win.
    for (i, r) in runs.iter_mut().enumerate() {
        r.id = format!("q{i}");
        r.num_samples = if i < 4 { 1000 } else { 5000 };
        let (a, b, step) = if i < 4 { (a1k, b1k, 300_000) } else { (a5k, b5k, 400_000) };
        r.evals = vec![(step, "fid".into(), a * f64::powf(r.gflops.unwrap(), b), 1.0)];
    }
    write_sweep(&root, "mostly-1k", &runs);
    let rep = write_report(&root, &ReportOptions::new("mostly-1k", tmp.path().join("rep2"))).unwrap();
    assert_eq!(rep.summary.fingerprint.as_ref().unwrap().id(), written_fingerprint("fid", 1000).id());
    let f = rep.summary.fits.ols.fitted().unwrap();
    assert_eq!(f.n, 4);
    assert!((f.fit.b - b1k).abs() < 1e-9 && (f.fit.a - a1k).abs() < 1e-9 * a1k, "{:?}", f.fit);
    assert!(rep.summary.notes.iter().any(|n| n.starts_with("2 fid rows of 2 runs left out") && n.contains("num_samples 1000 vs 5000")));
}

#[test]
fn a_curve_over_steps_never_joins_evaluations_made_differently() {
    // Every run: cheap intermediate evaluations (1000 samples) and a final one with
    // 50,000 (RunPlan's default). Both ways cover every run; the final one is the most recent and is kept
    // alone, so no curve mixes the two.
    let mut runs = Vec::new();
    for (i, (m, p, g)) in [("DiT-S", 4, 1.41), ("DiT-S", 2, 6.06), ("DiT-B", 2, 23.0)].into_iter().enumerate() {
        let mut r = RunPlan::new(&format!("r{i}"), m, p, g);
        r.evals = vec![(400_000, "fid".into(), 100.0 / g, 1.0)];
        runs.push(r);
    }
    let (tmp, root) = tempstore();
    let mut cheap = runs.clone();
    for r in &mut cheap {
        r.num_samples = 1000;
        r.evals = vec![(100_000, "fid".into(), 300.0, 1.0), (200_000, "fid".into(), 200.0, 1.0)];
        r.loss_every = 0;
    }
    // One store, the two ways written by two writer sessions per run.
    write_sweep(&root, "curves", &runs);
    append_evals(&root, &cheap);
    let rep = write_report(&root, &ReportOptions::new("curves", tmp.path().join("rep"))).unwrap();
    assert_eq!(rep.summary.fingerprint.as_ref().unwrap().num_samples, 50_000);
    for r in &rep.summary.runs {
        assert_eq!((r.quality_evaluations, r.quality_step), (1, Some(400_000)), "{}", r.run_id);
    }
    assert!(
        rep.summary.notes.iter().any(|n| n.starts_with("6 fid rows of 3 runs left out")
            && n.contains("num_samples 50000 vs 1000")
            && !n.contains("runs left without")),
        "{:?}",
        rep.summary.notes
    );
}

/// Appends `runs`' evaluations to runs already in the store (a second writer session).
fn append_evals(root: &std::path::Path, runs: &[RunPlan]) {
    let store = ditbench_track::Store::open(root).unwrap();
    for r in runs {
        let mut w = store.metric_writer(&r.id).unwrap();
        for (step, metric, value, cfg) in &r.evals {
            let mut row = written_fingerprint(metric, r.num_samples);
            row.cfg_scale = *cfg;
            w.log_eval(&ditbench_track::EvalRow {
                step: *step,
                wall_time: *step as f64,
                metric: row.metric,
                value: *value,
                num_samples: row.num_samples,
                cfg_scale: row.cfg_scale,
                sampler: row.sampler,
                sampling_steps: row.sampling_steps,
                extractor: row.extractor,
                extractor_hash: row.extractor_hash,
                reference_hash: row.reference_hash,
                cfg_mode: row.cfg_mode,
                weights: row.weights,
                vae: row.vae,
                precision: row.precision,
            })
            .unwrap();
        }
        w.close().unwrap();
    }
}
