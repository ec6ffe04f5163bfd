//! Held-out prediction on sweeps written through the store: a law fitted on S, B, L
//! predicts XL; a prediction made before a run finishes is checked when it does; bad
//! hold-out filters are refused by name.

mod common;

use common::{tempstore, write_sweep, RunPlan};
use ditbench_family::PAPER_TABLE4;
use ditbench_report::predict::{predict_and_save, HoldOut, PredictOptions};
use ditbench_scaling::{FitOptions, Form};
use ditbench_track::{EvalRow, Status, StatusChange, Store};

/// The true law of the synthetic sweep: Q = E + A·G^-α + B·S^-β, S in images seen.
const TRUTH: (f64, f64, f64, f64, f64) = (2.0, 30.0, 0.5, 4.0e4, 0.6);

fn law(g: f64, images: f64) -> f64 {
    let (e, a, alpha, b, beta) = TRUTH;
    e + a * g.powf(-alpha) + b * images.powf(-beta)
}

/// ±3 % multiplicative noise, fixed per (run, step).
fn noise(k: usize, step: i64) -> f64 {
    let h = ditbench_common::hash_words(&[k as u64, step as u64]);
    1.0 + 0.06 * ((h % 10_000) as f64 / 10_000.0 - 0.5)
}

/// The 12 paper presets, each evaluated 5 times along 400K steps of batch 256 on the law.
fn law_runs() -> Vec<RunPlan> {
    PAPER_TABLE4
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let mut r = RunPlan::new(&e.name.replace('/', "-"), &format!("DiT-{}", e.size), e.patch, e.gflops);
            r.full_model = Some(e.name.to_string());
            r.loss_every = 0;
            for step in [80_000i64, 160_000, 240_000, 320_000, 400_000] {
                r.evals.push((step, "fid".into(), law(e.gflops, step as f64 * 256.0) * noise(k, step), 1.0));
            }
            r
        })
        .collect()
}

fn opts(hold_out: &str) -> PredictOptions {
    PredictOptions { hold_out: hold_out.into(), form: None, fit: FitOptions { bootstrap: 200, ..Default::default() } }
}

#[test]
fn a_law_fitted_on_s_b_l_predicts_xl_within_its_intervals() {
    let (_tmp, root) = tempstore();
    write_sweep(&root, "law", &law_runs());
    let (rec, fit) = predict_and_save(&root, "law", None, &opts("largest-size"), true).unwrap();
    eprintln!("{}", ditbench_report::predict::format_record(&rec));
    assert_eq!(fit.form, Form::Joint, "5 evaluations per run: the joint law over every evaluation");
    assert_eq!(rec.fitted_on.len(), 9);
    assert!(rec.fitted_on.iter().all(|r| !r.starts_with("DiT-XL")), "{:?}", rec.fitted_on);
    assert_eq!(rec.n_points, 45);
    assert_eq!(rec.targets.len(), 15, "3 XL runs × 5 evaluations");
    for t in &rec.targets {
        let c = t.check.as_ref().expect("finished runs are checked at once");
        // The noise-free truth is within 5 % of the prediction; the noisy observation
        // is inside the 95 % predictive interval.
        let truth = law(t.gflops, t.step as f64 * 256.0);
        assert!((t.predicted / truth - 1.0).abs() < 0.05, "{}@{}: predicted {} vs true {truth}", t.run_id, t.step, t.predicted);
        assert!(c.inside, "{}@{}: observed {} outside [{}, {}]", t.run_id, t.step, c.observed, t.lo, t.hi);
    }
    let score = rec.score();
    assert_eq!((score.checked, score.pending, score.inside), (15, 0, 15));
    assert!(score.median_abs_log_error.unwrap() < 0.04, "{score:?}");
    // Stored, and listed again from the store.
    let store = Store::open(&root).unwrap();
    let (stored, warnings) = store.predictions("law").unwrap();
    assert!(warnings.is_empty());
    assert_eq!(stored, vec![rec.clone()]);
    // The record names the law: E, A, α, B, β near the truth (the intervals are the
    // bootstrap's, over whole runs).
    let p = &rec.params["params"];
    let alpha = p["alpha"].as_f64().unwrap();
    assert!((alpha - TRUTH.2).abs() < 0.15, "α = {alpha}");
}

#[test]
fn a_prediction_for_an_unfinished_run_is_checked_when_it_finishes() {
    let (_tmp, root) = tempstore();
    let mut runs = law_runs();
    // XL/2 is still running: evaluated up to 240K of its 400K steps.
    let xl2 = runs.iter_mut().find(|r| r.id == "DiT-XL-2").unwrap();
    let last = xl2.evals.pop().unwrap();
    xl2.evals.truncate(3);
    xl2.status = Status::Running;
    write_sweep(&root, "live", &runs);
    let (rec, _) = predict_and_save(&root, "live", None, &opts("run_id = 'DiT-XL-2'"), true).unwrap();
    // Only the running run's rows are held out (the other XL runs are fitted on) and
    // its planned last step is a target too.
    assert_eq!(rec.fitted_on.len(), 11);
    let steps: Vec<i64> = rec.targets.iter().map(|t| t.step).collect();
    assert_eq!(steps, vec![80_000, 160_000, 240_000, 400_000]);
    assert!(rec.targets.iter().all(|t| t.check.is_none()), "a running run's rows are not final");

    // The run finishes with its last evaluation: the next check (the launcher's, or
    // `predict --list`) fills in every target.
    let store = Store::open(&root).unwrap();
    let mut w = store.metric_writer("DiT-XL-2").unwrap();
    let fp = store.predictions("live").unwrap().0[0].fingerprint.clone().unwrap();
    let row = EvalRow {
        step: last.0,
        wall_time: last.0 as f64,
        metric: "fid".into(),
        value: last.2,
        num_samples: 50_000,
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
    };
    assert_eq!(row.fingerprint().id(), fp, "the test writes the sweep's own fingerprint");
    w.log_eval(&row).unwrap();
    w.close().unwrap();
    store.set_status("DiT-XL-2", &StatusChange::new(Status::Finished)).unwrap();
    let (checked, _) = store.check_predictions("live", true).unwrap();
    let t = checked[0].targets.iter().find(|t| t.step == 400_000).unwrap();
    assert_eq!(t.check.as_ref().unwrap().observed, last.2);
    assert_eq!(checked[0].score().checked, 4);
    // Written back into the store.
    assert_eq!(store.predictions("live").unwrap().0, checked);
}

#[test]
fn hold_out_filters_that_cannot_work_are_refused_by_name() {
    let (_tmp, root) = tempstore();
    write_sweep(&root, "f", &law_runs());
    let err = |h: &str| predict_and_save(&root, "f", None, &opts(h), false).unwrap_err().to_string();
    let e = err("sizee = 'XL'");
    assert!(e.contains("sizee") && e.contains("fraction"), "names the filter and the columns: {e}");
    let e = err("size = 'XXL'");
    assert!(e.contains("matches no"), "{e}");
    let e = err("gflops > 0");
    assert!(e.contains("leaves no evaluated rows"), "{e}");
    let e = err("1 = 1; DROP TABLE points");
    assert!(e.contains("without `;`"), "{e}");
    assert!(HoldOut::parse("  ").is_err());
    // last-half keeps the first half of every run for the fit.
    let (rec, _) = predict_and_save(&root, "f", None, &opts("last-half"), false).unwrap();
    assert!(rec.targets.iter().all(|t| t.step > 200_000));
    assert_eq!(rec.fitted_on.len(), 12);
    // --no-save stores nothing.
    assert!(Store::open(&root).unwrap().predictions("f").unwrap().0.is_empty());
}

/// A sweep without any FID/FD evaluation but with the validation loss: the report's
/// quality series is `val_loss_ema` (said in a note), so its fits and the held-out
/// prediction exist, and the validation figure is drawn.
#[test]
fn without_evaluations_the_validation_loss_is_the_quality_series() {
    let (tmp, root) = tempstore();
    let runs: Vec<RunPlan> = law_runs()
        .into_iter()
        .map(|mut r| {
            r.evals.clear();
            r.loss_every = 80_000;
            r.extra_metrics = vec!["val_loss_ema"];
            r
        })
        .collect();
    write_sweep(&root, "val", &runs);
    let out = tmp.path().join("rep");
    let mut ropts = ditbench_report::ReportOptions::new("val", &out);
    ropts.bootstrap = 100;
    let rep = ditbench_report::write_report(&root, &ropts).unwrap();
    assert_eq!(rep.summary.metric.as_deref(), Some("val_loss_ema"));
    assert!(rep.summary.notes.iter().any(|n| n.contains("validation loss val_loss_ema")), "{:?}", rep.summary.notes);
    assert!(rep.summary.fits.ols.fitted().is_some());
    assert!(out.join("figures/validation.svg").is_file());
    // The stored values are what the fit saw: each run's last val_loss_ema.
    let xl2 = rep.summary.runs.iter().find(|r| r.run_id == "DiT-XL-2").unwrap();
    let k = runs.iter().position(|r| r.id == "DiT-XL-2").unwrap();
    assert_eq!(xl2.quality, Some(common::synthetic_loss(400_000, k + 1) * 0.5));
    // --metric picks a validation loss explicitly, and an unknown one is refused.
    let p = predict_and_save(&root, "val", Some("val_loss_ema"), &opts("largest-size"), false).unwrap().0;
    assert_eq!(p.metric, "val_loss_ema");
    assert!(p.fingerprint.is_none(), "metric-table series carry no eval fingerprint");
}
