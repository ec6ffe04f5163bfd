//! A prediction stored before a run finishes is checked by the trainer that finishes
//! it (issue 15 §3): the observed number is the one the run logged, and a run that
//! stops early leaves it pending.

mod common;

use std::sync::atomic::AtomicBool;

use ditbench_track::{read_run, PredictionRecord, Target};
use ditbench_train::config::ValidationConfig;
use ditbench_train::run::Quiet;
use ditbench_train::validation::VAL_LOSS_EMA;
use ditbench_train::{train, Outcome, Provenance};

fn record(run_id: &str, step: i64) -> PredictionRecord {
    PredictionRecord {
        id: PredictionRecord::new_id(1.0, run_id),
        sweep: "tests".into(),
        created_at: 1.0,
        created_by: "test".into(),
        metric: VAL_LOSS_EMA.into(),
        fingerprint: None,
        hold_out: format!("run_id = '{run_id}'"),
        form: "power".into(),
        formula: "Q = E + A·G^-α".into(),
        params: serde_json::json!({}),
        fitted_on: vec!["other".into()],
        n_points: 3,
        level: 0.95,
        // Wide enough that any loss of a fresh model lies inside.
        targets: vec![Target { run_id: run_id.into(), step, gflops: 0.001, predicted: 1.0, lo: 1e-3, hi: 1e3, check: None }],
    }
}

#[test]
fn the_trainer_checks_a_prediction_when_it_finishes_the_run() {
    let _serial = common::serial();
    let (st, dir) = common::store("predictions", "check");
    st.register_sweep("tests", None).unwrap();
    let mut cfg = common::config(4);
    cfg.validation = Some(ValidationConfig { images: 8, timesteps: 2, every: 0, seed: 1 });
    st.save_prediction(&record(&cfg.run_id, 4)).unwrap();
    // A target at a step never logged stays pending, also after the run finishes.
    st.save_prediction(&PredictionRecord { id: PredictionRecord::new_id(2.0, "b"), ..record(&cfg.run_id, 3) }).unwrap();

    let out = train(&st, &cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap();
    assert!(matches!(out, Outcome::Finished { .. }), "{out:?}");

    let data = read_run(&st.run_dir("tests", &cfg.run_id)).unwrap();
    let logged: Vec<f64> = (0..data.metrics.len())
        .map(|i| data.metrics.point(i))
        .filter(|p| p.name == VAL_LOSS_EMA && p.step == 4)
        .map(|p| p.value)
        .collect();
    assert_eq!(logged.len(), 1, "one validation loss at the final step");
    // Read from the files, not recomputed: the trainer wrote the check.
    let (recs, warnings) = st.predictions("tests").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let at4 = recs.iter().find(|r| r.targets[0].step == 4).unwrap();
    let c = at4.targets[0].check.as_ref().expect("checked by the trainer at the end of the run");
    assert_eq!(c.observed, logged[0]);
    assert!(c.inside);
    assert!((c.abs_log_error - logged[0].ln().abs()).abs() < 1e-12, "|ln 1 − ln observed|");
    let at3 = recs.iter().find(|r| r.targets[0].step == 3).unwrap();
    assert!(at3.targets[0].check.is_none(), "no val_loss_ema at step 3: stays pending");
    let _ = std::fs::remove_dir_all(dir);
}
