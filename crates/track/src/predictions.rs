//! Predictions kept beside the runs they are about, and checked when those runs finish.
//!
//! A scaling-law prediction is only worth its record: which runs the law was fitted on,
//! which form and parameters, what it said about the held-out runs (value and interval)
//! and, once those runs have finished, what they reached. `ditbench predict` writes one
//! [`PredictionRecord`] per call into `<store>/<sweep>/predictions/<id>.json` (written
//! whole by rename; a folder without `run.json`, so the index never takes it for a
//! run). [`Store::check_predictions`] fills in each target's [`Check`] the first time
//! the target run is finished and has a row at the predicted step that is comparable
//! with the rows the law was fitted on (the same metric and, for evaluations, the same
//! fingerprint). The trainer calls it when it finishes a run (wherever it runs: a local
//! launcher's child or a Slurm task), so a prediction made before a run finishes is
//! checked without anyone asking; `ditbench predict --list` and reports check too.
//!
//! The store knows nothing of the fitting itself: the form, formula and parameters are
//! kept as the fitting code wrote them (`params` is free JSON).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::folder::live_through;
use crate::ids::validate_id;
use crate::store::Store;
use crate::types::{now, Status};

/// The folder of a sweep's predictions.
pub const PREDICTIONS_DIR: &str = "predictions";

/// One prediction: a law fitted on some runs and what it says about others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// `<UTC time>-<hash>`: sorts by creation.
    pub id: String,
    /// Sweep of every run involved.
    pub sweep: String,
    /// Unix seconds.
    pub created_at: f64,
    /// What made it ("ditbench 0.1.0 on host").
    pub created_by: String,
    /// The quality metric predicted (`FD_…`, `fid`, or a metric such as `val_loss_ema`).
    pub metric: String,
    /// The eval fingerprint id every fitted row had (`None` for a metric-table series).
    pub fingerprint: Option<String>,
    /// The hold-out filter as the user gave it.
    pub hold_out: String,
    /// Short name of the functional form ("power", "joint").
    pub form: String,
    /// The form written out, e.g. "Q = E + A·G^-α + B·S^-β".
    pub formula: String,
    /// Fitted parameters, their intervals and fit diagnostics, as the fitting code wrote them.
    pub params: serde_json::Value,
    /// Runs whose points the law was fitted on.
    pub fitted_on: Vec<String>,
    /// Points fitted.
    pub n_points: usize,
    /// Coverage of the intervals (0.95).
    pub level: f64,
    /// What the law says about each held-out (run, step).
    pub targets: Vec<Target>,
}

/// One predicted number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Held-out run.
    pub run_id: String,
    /// Training step the prediction is for.
    pub step: i64,
    /// The run's model Gflops (the law's x).
    pub gflops: f64,
    /// Predicted value.
    pub predicted: f64,
    /// Lower end of the predictive interval.
    pub lo: f64,
    /// Upper end of the predictive interval.
    pub hi: f64,
    /// What the run reached, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// A prediction compared with what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The observed value.
    pub observed: f64,
    /// Unix seconds when it was checked.
    pub checked_at: f64,
    /// `|ln predicted − ln observed|`: the error scaling laws are judged by, symmetric in
    /// over- and under-prediction.
    pub abs_log_error: f64,
    /// `(predicted − observed) / observed`.
    pub rel_error: f64,
    /// Whether the observed value lies inside the predictive interval.
    pub inside: bool,
}

impl Check {
    /// Compares `observed` with a target's prediction, now.
    pub fn new(target: &Target, observed: f64) -> Check {
        Check::at(target, observed, now())
    }

    /// Compares `observed` with a target's prediction, dated `checked_at`.
    pub fn at(target: &Target, observed: f64, checked_at: f64) -> Check {
        Check {
            observed,
            checked_at,
            abs_log_error: (target.predicted.ln() - observed.ln()).abs(),
            rel_error: (target.predicted - observed) / observed,
            inside: target.lo <= observed && observed <= target.hi,
        }
    }
}

/// How a prediction did so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Targets checked.
    pub checked: usize,
    /// Targets still waiting for their run.
    pub pending: usize,
    /// Checked targets inside their interval.
    pub inside: usize,
    /// Median of `abs_log_error` over the checked targets.
    pub median_abs_log_error: Option<f64>,
}

impl PredictionRecord {
    /// Checked, pending, inside, median error.
    pub fn score(&self) -> Score {
        let mut errs: Vec<f64> = self.targets.iter().filter_map(|t| t.check.as_ref().map(|c| c.abs_log_error)).collect();
        errs.sort_by(f64::total_cmp);
        let median = match errs.len() {
            0 => None,
            n if n % 2 == 1 => Some(errs[n / 2]),
            n => Some(0.5 * (errs[n / 2 - 1] + errs[n / 2])),
        };
        Score {
            checked: errs.len(),
            pending: self.targets.len() - errs.len(),
            inside: self.targets.iter().filter(|t| t.check.as_ref().is_some_and(|c| c.inside)).count(),
            median_abs_log_error: median,
        }
    }

    /// A fresh id: creation time (sorts) and a hash of the content (two predictions in
    /// one second differ).
    pub fn new_id(created_at: f64, content: &str) -> String {
        let secs = created_at.max(0.0) as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:08x}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            ditbench_common::fnv1a64(content.as_bytes()) as u32
        )
    }
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn prediction_path(root: &Path, sweep: &str, id: &str) -> PathBuf {
    root.join(sweep).join(PREDICTIONS_DIR).join(format!("{id}.json"))
}

impl Store {
    /// Saves a prediction (its sweep must exist). Returns the file written.
    pub fn save_prediction(&self, rec: &PredictionRecord) -> Result<PathBuf> {
        validate_id("sweep name", &rec.sweep)?;
        validate_id("prediction id", &rec.id)?;
        if !self.root().join(&rec.sweep).is_dir() {
            return Err(Error::UnknownSweep(rec.sweep.clone()));
        }
        let path = prediction_path(self.root(), &rec.sweep, &rec.id);
        let text = serde_json::to_string_pretty(rec).map_err(|e| Error::Corrupt { path: path.clone(), reason: e.to_string() })?;
        crate::fsutil::write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }

    /// A sweep's predictions, oldest first. A file that does not parse is skipped and
    /// named in the returned warnings rather than hiding the others.
    pub fn predictions(&self, sweep: &str) -> Result<(Vec<PredictionRecord>, Vec<String>)> {
        validate_id("sweep name", sweep)?;
        let dir = self.root().join(sweep).join(PREDICTIONS_DIR);
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, warnings)),
            Err(e) => return Err(e).ctx("read predictions folder", &dir),
        };
        for entry in entries {
            let path = entry.ctx("read predictions folder", &dir)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue; // temporaries of a rename in progress
            }
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<PredictionRecord>(&b).map_err(|e| e.to_string())) {
                Ok(r) => out.push(r),
                Err(e) => warnings.push(format!("{}: not a prediction ({e}); left out", path.display())),
            }
        }
        out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok((out, warnings))
    }

    /// Checks every pending target of the sweep's predictions whose run has finished,
    /// writes the checks into the prediction files (unless `write` is false: a
    /// read-only view computes them without saving) and returns the predictions with
    /// their checks. A target whose finished run has no comparable row at its step
    /// stays pending (the run may be evaluated later by `ditbench fid`).
    pub fn check_predictions(&self, sweep: &str, write: bool) -> Result<(Vec<PredictionRecord>, Vec<String>)> {
        let (recs, warnings) = self.predictions(sweep)?;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let checked = self.check_record(&rec)?;
            if write && checked != rec {
                self.save_prediction(&checked)?;
            }
            out.push(checked);
        }
        Ok((out, warnings))
    }

    /// `rec` with a [`Check`] on each pending target whose run has finished with a
    /// comparable row at the target's step; changes nothing on disk.
    pub fn check_record(&self, rec: &PredictionRecord) -> Result<PredictionRecord> {
        let mut rec = rec.clone();
        let (metric, fingerprint) = (rec.metric.clone(), rec.fingerprint.clone());
        for t in rec.targets.iter_mut().filter(|t| t.check.is_none()) {
            if let Some(observed) = self.observed(&rec.sweep, &t.run_id, t.step, &metric, fingerprint.as_deref())? {
                t.check = Some(Check::new(t, observed));
            }
        }
        Ok(rec)
    }

    /// The finished run's live value of `metric` at `step` (the last one written), from
    /// its evals when comparable with `fingerprint`, else from its metrics table.
    fn observed(&self, sweep: &str, run_id: &str, step: i64, metric: &str, fingerprint: Option<&str>) -> Result<Option<f64>> {
        let dir = self.run_dir(sweep, run_id);
        if !dir.join(crate::folder::RUN_FILE).is_file() {
            return Ok(None); // deleted or never registered: stays pending
        }
        let rec = self.run(run_id)?;
        if rec.status != Status::Finished {
            return Ok(None);
        }
        let events = self.run_events(run_id)?;
        let data = crate::segments::read_run(&dir)?.live(&live_through(&events));
        // The last row written wins, as everywhere in the store.
        let from_evals = (0..data.evals.len())
            .rev()
            .map(|i| data.evals.row(i))
            .filter(|r| r.metric == metric && r.step == step && r.value.is_finite())
            .find(|r| fingerprint.is_none_or(|fp| r.fingerprint().id() == fp))
            .map(|r| r.value);
        if from_evals.is_some() || fingerprint.is_some() {
            return Ok(from_evals);
        }
        Ok((0..data.metrics.len())
            .rev()
            .map(|i| data.metrics.point(i))
            .find(|p| p.name == metric && p.step == step && p.value.is_finite())
            .map(|p| p.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_carry_a_utc_date() {
        // 2026-12-06T20:55:20Z = 1796590520 (date -d @1796590520 -u).
        let id = PredictionRecord::new_id(1_796_590_520.0, "x");
        assert!(id.starts_with("20261206T205520Z-"), "{id}");
        // 2000-02-29, a leap day in a century leap year.
        assert!(PredictionRecord::new_id(951_782_400.0, "x").starts_with("20000229T000000Z-"));
        assert_ne!(PredictionRecord::new_id(1.0, "a"), PredictionRecord::new_id(1.0, "b"));
    }

    #[test]
    fn check_uses_log_error_and_interval() {
        let t = Target { run_id: "r".into(), step: 10, gflops: 1.0, predicted: 20.0, lo: 15.0, hi: 30.0, check: None };
        let c = Check::new(&t, 10.0);
        assert!((c.abs_log_error - 2f64.ln()).abs() < 1e-12);
        assert!((c.rel_error - 1.0).abs() < 1e-12);
        assert!(!c.inside);
        assert!(Check::new(&t, 15.0).inside && Check::new(&t, 30.0).inside);
    }
}
