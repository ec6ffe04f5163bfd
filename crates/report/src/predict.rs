//! Held-out prediction: fit a scaling law on part of a sweep, predict the rest.
//!
//! Every evaluated (run, step) of the sweep is a row of a small `points` table:
//!
//! | column   | meaning                                                      |
//! |----------|--------------------------------------------------------------|
//! | run_id, model, size, patch, status | the run                             |
//! | gflops   | the model's forward Gflops per image (the law's G)           |
//! | batch_size, steps | the run's batch and planned steps                   |
//! | step     | the evaluated training step                                  |
//! | images   | images seen at that step, `step × batch_size` (the law's S)  |
//! | fraction | `step / steps`                                               |
//! | value    | the quality number (null for a run's planned final step not evaluated yet) |
//!
//! A hold-out filter is a SQL boolean expression over those columns (`size = 'XL'`,
//! `gflops > 1`, `fraction > 0.5`) or one of the shortcuts `largest-size`,
//! `largest-gflops`, `last-half`. Rows it matches are the targets; the law is fitted on
//! the others (with a value). A run not yet evaluated at its last step gets a planned
//! row there, so a prediction can be made before the run finishes; the store checks it
//! when it does ([`ditbench_track::Store::check_predictions`]).
//!
//! The form: the joint law `Q = E + A·G^-α + B·S^-β` over every intermediate
//! evaluation when the fitted rows have at least two distinct steps (more points per
//! run, as the scaling-law literature recommends), else `Q = E + A·G^-α` over each
//! run's last evaluation.

use std::collections::BTreeSet;

use ditbench_scaling::{Fit, FitOptions, Form, Point};
use ditbench_track::{Check, PredictionRecord, Target};
use polars::prelude::*;
use polars::sql::SQLContext;

use crate::data::{size_rank, SweepData};
use crate::ReportError;

/// The rows to hold out.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldOut {
    /// Every run of the largest size present (S < B < L < XL).
    LargestSize,
    /// Every run with the largest Gflops present.
    LargestGflops,
    /// Every evaluation past half of its run's planned steps.
    LastHalf,
    /// A SQL boolean expression over the points table's columns.
    Where(String),
}

impl HoldOut {
    /// Parses a shortcut or takes the text as a SQL expression.
    pub fn parse(s: &str) -> Result<HoldOut, ReportError> {
        let t = s.trim();
        Ok(match t {
            "largest-size" => HoldOut::LargestSize,
            "largest-gflops" => HoldOut::LargestGflops,
            "last-half" => HoldOut::LastHalf,
            "" => {
                return Err(ReportError::Predict(
                    "the hold-out filter is empty; give largest-size, largest-gflops, last-half or a SQL \
                     expression over the points columns (e.g. \"size = 'XL'\")"
                        .into(),
                ))
            }
            _ => HoldOut::Where(t.to_string()),
        })
    }

    fn sql(&self, data: &SweepData) -> Result<String, ReportError> {
        Ok(match self {
            HoldOut::LargestSize => {
                let known = |r: &&crate::data::RunInfo| size_rank(r.size.as_deref()) < 4;
                let Some(top) = data.runs.iter().filter(known).max_by_key(|r| size_rank(r.size.as_deref())) else {
                    return Err(ReportError::Predict("largest-size: no run of the sweep has a known size (S, B, L, XL)".into()));
                };
                format!("size = '{}'", top.size.as_deref().expect("known size"))
            }
            HoldOut::LargestGflops => {
                let max = data.runs.iter().filter_map(|r| r.gflops).fold(f64::NAN, f64::max);
                if !max.is_finite() {
                    return Err(ReportError::Predict("largest-gflops: no run of the sweep has Gflops".into()));
                }
                // Gflops are stored to full precision; a relative margin keeps the one
                // largest value when it is printed and parsed back.
                format!("gflops >= {:e}", max * (1.0 - 1e-9))
            }
            HoldOut::LastHalf => "fraction > 0.5".into(),
            HoldOut::Where(w) => w.clone(),
        })
    }
}


/// What to predict and how.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// The hold-out filter as given (a shortcut or SQL).
    pub hold_out: String,
    /// The form; `None` chooses (joint when the fitted rows span several steps).
    pub form: Option<Form>,
    /// Fit settings (Huber threshold, bootstrap, level, seed).
    pub fit: FitOptions,
}

/// One row of the points table.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    pub run_id: String,
    pub gflops: f64,
    pub step: i64,
    pub images: f64,
    pub final_step: bool,
    /// The run's status is `finished`: its rows are final.
    pub finished: bool,
    pub value: Option<f64>,
}

/// The points table (see the module docs) and its rows in the same order. Runs
/// without Gflops or batch size cannot be placed on the law and are left out (named in
/// the returned notes).
pub fn points(data: &SweepData) -> Result<(DataFrame, Vec<PointRow>, Vec<String>), ReportError> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for r in &data.runs {
        let (Some(g), Some(batch)) = (r.gflops, r.batch_size) else {
            notes.push(format!("run {} has no Gflops or batch size; left out of the fit", r.id));
            continue;
        };
        let mut steps: Vec<(i64, Option<f64>)> = r.quality.iter().filter(|q| q.0 > 0 && q.1.is_finite() && q.1 > 0.0).map(|q| (q.0, Some(q.1))).collect();
        if let Some(planned) = r.steps {
            if !steps.iter().any(|s| s.0 == planned) {
                steps.push((planned, None));
            }
        }
        for (step, value) in steps {
            let images = step as f64 * batch as f64;
            rows.push(PointRow {
                run_id: r.id.clone(),
                gflops: g,
                step,
                images,
                final_step: r.steps == Some(step),
                finished: r.status == "finished",
                value,
            });
        }
    }
    // Columns from the rows (and the run each belongs to).
    let run_of = |id: &str| data.runs.iter().find(|r| r.id == id).expect("rows come from runs");
    let col_s = |name: &str, f: &dyn Fn(&PointRow) -> Option<String>| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let col_i = |name: &str, f: &dyn Fn(&PointRow) -> Option<i64>| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let col_f = |name: &str, f: &dyn Fn(&PointRow) -> Option<f64>| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let df = DataFrame::new_infer_height(vec![
        col_s("run_id", &|p| Some(p.run_id.clone())),
        col_s("model", &|p| run_of(&p.run_id).model.clone()),
        col_s("size", &|p| run_of(&p.run_id).size.clone()),
        col_i("patch", &|p| run_of(&p.run_id).patch),
        col_s("status", &|p| Some(run_of(&p.run_id).status.clone())),
        col_f("gflops", &|p| Some(p.gflops)),
        col_i("batch_size", &|p| run_of(&p.run_id).batch_size),
        col_i("steps", &|p| run_of(&p.run_id).steps),
        col_i("step", &|p| Some(p.step)),
        col_f("images", &|p| Some(p.images)),
        col_f("fraction", &|p| run_of(&p.run_id).steps.filter(|&s| s > 0).map(|s| p.step as f64 / s as f64)),
        col_f("value", &|p| p.value),
        Column::new("row".into(), (0..rows.len() as u32).collect::<Vec<u32>>()),
    ])?;
    Ok((df, rows, notes))
}

/// Indices of the points rows the filter matches.
fn matching(df: &DataFrame, where_sql: &str) -> Result<BTreeSet<usize>, ReportError> {
    if where_sql.contains(';') {
        return Err(ReportError::Predict(format!("the hold-out filter must be one SQL expression, without `;`: {where_sql}")));
    }
    let mut ctx = SQLContext::new();
    ctx.register("points", df.clone().lazy());
    let bad = |e: PolarsError| {
        ReportError::Predict(format!(
            "the hold-out filter `{where_sql}` is not a SQL boolean expression over the points columns \
             (run_id, model, size, patch, status, gflops, batch_size, steps, step, images, fraction, value): {e}"
        ))
    };
    let out = ctx.execute(&format!("SELECT row FROM points WHERE {where_sql}")).map_err(bad)?.collect().map_err(bad)?;
    Ok(out.column("row")?.u32()?.into_no_null_iter().map(|r| r as usize).collect())
}

/// Fits on the rows the hold-out leaves and predicts the held-out ones. Returns the
/// record to store and the fit. Targets of finished runs that have their row already
/// carry their [`ditbench_track::Check`] (by the store's rule: a finished run, a row at
/// the step, the same metric and fingerprint, which a [`SweepData`] guarantees).
/// `created_at` (Unix seconds) dates the record and its checks.
pub fn predict(data: &SweepData, opts: &PredictOptions, created_by: &str, created_at: f64) -> Result<(PredictionRecord, Fit), ReportError> {
    let Some(metric) = data.metric.clone() else {
        return Err(ReportError::Predict(format!("sweep {} has no quality evaluations to fit", data.sweep)));
    };
    let hold_out = HoldOut::parse(&opts.hold_out)?;
    let (df, rows, _notes) = points(data)?;
    let held = matching(&df, &hold_out.sql(data)?)?;
    let fitted: Vec<&PointRow> = rows.iter().enumerate().filter(|(i, r)| !held.contains(i) && r.value.is_some()).map(|(_, r)| r).collect();
    if fitted.is_empty() {
        return Err(ReportError::Predict(format!("the hold-out filter `{}` leaves no evaluated rows to fit on", opts.hold_out)));
    }
    let fitted_steps: BTreeSet<i64> = fitted.iter().map(|r| r.step).collect();
    let form = opts.form.unwrap_or(if fitted_steps.len() >= 2 { Form::Joint } else { Form::Power });
    // The power law over model size alone describes finished runs: its rows and targets
    // are each run's last step.
    let use_row = |r: &PointRow| form == Form::Joint || r.final_step;
    let fit_points: Vec<Point> = fitted
        .iter()
        .filter(|r| use_row(r))
        .map(|r| Point { group: r.run_id.clone(), x: r.gflops, s: (form == Form::Joint).then_some(r.images), y: r.value.expect("filtered") })
        .collect();
    let targets_rows: Vec<&PointRow> = rows.iter().enumerate().filter(|(i, r)| held.contains(i) && use_row(r)).map(|(_, r)| r).collect();
    if targets_rows.is_empty() {
        return Err(ReportError::Predict(format!(
            "the hold-out filter `{}` matches no {} of the sweep",
            opts.hold_out,
            if form == Form::Joint { "evaluation" } else { "run's last step" }
        )));
    }
    let fit = ditbench_scaling::fit(&fit_points, form, &opts.fit).map_err(|e| ReportError::Predict(format!("fit on {} points: {e}", fit_points.len())))?;
    let targets: Vec<Target> = targets_rows
        .iter()
        .map(|r| {
            let p = fit.predict(r.gflops, (form == Form::Joint).then_some(r.images));
            let mut t = Target { run_id: r.run_id.clone(), step: r.step, gflops: r.gflops, predicted: p.value, lo: p.interval.lo, hi: p.interval.hi, check: None };
            if let (Some(v), true) = (r.value, r.finished) {
                t.check = Some(Check::at(&t, v, created_at));
            }
            t
        })
        .collect();
    let fitted_on: Vec<String> = fit_points.iter().map(|p| p.group.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut params = serde_json::to_value(&fit)?;
    if let Some(obj) = params.as_object_mut() {
        // The bootstrap replicates are for intervals computed now, not for the record.
        obj.remove("replicates");
    }
    let content = format!("{}|{}|{}|{:?}", data.sweep, opts.hold_out, metric, fitted_on);
    let record = PredictionRecord {
        id: PredictionRecord::new_id(created_at, &content),
        sweep: data.sweep.clone(),
        created_at,
        created_by: created_by.to_string(),
        metric,
        fingerprint: data.fingerprint_id(),
        hold_out: opts.hold_out.clone(),
        form: form.name().to_string(),
        formula: form.formula().to_string(),
        params,
        fitted_on,
        n_points: fit_points.len(),
        level: opts.fit.level,
        targets,
    };
    Ok((record, fit))
}

/// `ditbench predict`: reads the sweep, fits, predicts the held-out rows (checking at
/// once those whose runs have finished) and saves the record into the store unless
/// `save` is false. Returns the record with its checks.
pub fn predict_and_save(
    store: &std::path::Path,
    sweep: &str,
    metric: Option<&str>,
    opts: &PredictOptions,
    save: bool,
) -> Result<(PredictionRecord, Fit), ReportError> {
    let data = crate::data::load(store, sweep, metric)?;
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let created_by = format!("ditbench {}{}{host}", env!("CARGO_PKG_VERSION"), if host.is_empty() { "" } else { " on " });
    let (record, fit) = predict(&data, opts, &created_by, ditbench_track::now())?;
    if save {
        ditbench_track::Store::open(store)?.save_prediction(&record)?;
    }
    Ok((record, fit))
}

/// 4 decimals in the range people read as plain numbers, else scientific notation.
fn short(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// A prediction as people read it: what was fitted, then one line per target with the
/// interval, what the run reached and whether it fell inside.
pub fn format_record(rec: &PredictionRecord) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "prediction {} (sweep {}, {}, hold-out: {})", rec.id, rec.sweep, rec.metric, rec.hold_out);
    let _ = writeln!(s, "  law: {} ({} form), fitted on {} runs, {} points", rec.formula, rec.form, rec.fitted_on.len(), rec.n_points);
    if let Some(p) = rec.params.get("params") {
        let field = |k: &str| p.get(k).and_then(|v| v.as_f64());
        let iv = |k: &str| {
            rec.params
                .get("param_intervals")
                .and_then(|i| i.get(k))
                .and_then(|i| Some((i.get("lo")?.as_f64()?, i.get("hi")?.as_f64()?)))
        };
        let mut parts = Vec::new();
        for (k, name) in [("e", "E"), ("a", "A"), ("alpha", "α"), ("b", "B"), ("beta", "β")] {
            if let Some(v) = field(k) {
                match iv(k) {
                    Some((lo, hi)) => parts.push(format!("{name} = {} [{}, {}]", short(v), short(lo), short(hi))),
                    None => parts.push(format!("{name} = {}", short(v))),
                }
            }
        }
        let _ = writeln!(s, "  {}", parts.join(", "));
    }
    let level = (rec.level * 100.0).round();
    let _ = writeln!(
        s,
        "  {:<28} {:>7} {:>9} {:>10} {:>21} {:>10} {:>8} {:>6}",
        "run",
        "step",
        "Gflops",
        "predicted",
        format!("{level}% interval"),
        "observed",
        "|ln err|",
        "inside"
    );
    for t in &rec.targets {
        let (obs, err, inside) = match &t.check {
            Some(c) => (format!("{:.4}", c.observed), format!("{:.3}", c.abs_log_error), if c.inside { "yes" } else { "NO" }.to_string()),
            None => ("pending".into(), "".into(), "".into()),
        };
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>9.4} {:>10.4} {:>21} {:>10} {:>8} {:>6}",
            t.run_id,
            t.step,
            t.gflops,
            t.predicted,
            format!("[{:.4}, {:.4}]", t.lo, t.hi),
            obs,
            err,
            inside
        );
    }
    let sc = rec.score();
    match sc.median_abs_log_error {
        Some(m) => {
            let _ = writeln!(
                s,
                "  median |ln error| {m:.3} over {} checked; {}/{} inside their {level}% interval; {} pending",
                sc.checked, sc.inside, sc.checked, sc.pending
            );
        }
        None => {
            let _ = writeln!(s, "  {} pending: checked when the held-out runs finish", sc.pending);
        }
    }
    s
}

/// The report's picture of a prediction: left, each held-out run's observed curve (solid,
/// points) beside the law's prediction for it (dashed, with its predictive band); right,
/// predicted against observed for every checked target, each with its interval, and the
/// diagonal where they agree.
pub fn fig_prediction(data: &SweepData, rec: &PredictionRecord, fit: &Fit) -> crate::plot::Figure {
    use crate::build::{metric_label, patch_color, patch_marker};
    use crate::plot::{Axis, Figure, LegendEntry, Panel, Series};
    let metric = metric_label(&rec.metric);
    let joint = fit.form == Form::Joint;
    let mut left = Vec::new();
    let mut legend = vec![LegendEntry::heading("held out (observed / predicted)")];
    let held: BTreeSet<&str> = rec.targets.iter().map(|t| t.run_id.as_str()).collect();
    for r in data.runs.iter().filter(|r| held.contains(r.id.as_str())) {
        let (Some(g), Some(batch)) = (r.gflops, r.batch_size) else { continue };
        let c = patch_color(r.patch);
        let m = patch_marker(r.patch);
        let obs: Vec<(f64, f64)> = r
            .quality
            .iter()
            .filter(|q| q.0 > 0 && q.1 > 0.0)
            .map(|q| (if joint { q.0 as f64 * batch as f64 } else { g }, q.1))
            .collect();
        if joint {
            let last = r.steps.map(|s| s as f64 * batch as f64).or_else(|| obs.last().map(|p| p.0));
            let first = obs.first().map(|p| p.0).or(last.map(|l| l / 10.0));
            if let (Some(lo), Some(hi)) = (first, last) {
                let xs: Vec<f64> = (0..40).map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / 39.0).exp()).collect();
                let preds: Vec<_> = xs.iter().map(|&s| (s, fit.predict(g, Some(s)))).collect();
                left.push(Series::Band { points: preds.iter().map(|(s, p)| (*s, p.interval.lo, p.interval.hi)).collect(), color: c, alpha: 0.12 });
                left.push(Series::Line { points: preds.iter().map(|(s, p)| (*s, p.value)).collect(), color: c, alpha: 0.9, width: 2, dashed: true });
            }
            left.push(Series::Line { points: obs.clone(), color: c, alpha: 0.9, width: 2, dashed: false });
        }
        left.push(Series::Points { points: obs, color: c, marker: m, filled: true, size: 4 });
        legend.push(LegendEntry::marker(r.model.clone().unwrap_or_else(|| r.id.clone()), c, m, true));
    }
    if !joint {
        // The law over model size: the fitted runs' last values, the curve and its band
        // from the smallest fitted model to the largest held-out one.
        let fitted: BTreeSet<&str> = rec.fitted_on.iter().map(String::as_str).collect();
        let pts: Vec<(f64, f64)> = data
            .runs
            .iter()
            .filter(|r| fitted.contains(r.id.as_str()))
            .filter_map(|r| Some((r.gflops?, r.quality.last()?.1)))
            .collect();
        let gs: Vec<f64> = pts.iter().map(|p| p.0).chain(rec.targets.iter().map(|t| t.gflops)).collect();
        let (lo, hi) = gs.iter().fold((f64::INFINITY, 0f64), |(a, b), &g| (a.min(g), b.max(g)));
        if lo.is_finite() && hi > lo {
            let preds: Vec<(f64, ditbench_scaling::Prediction)> =
                (0..40).map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / 39.0).exp()).map(|g| (g, fit.predict(g, None))).collect();
            left.insert(0, Series::Band { points: preds.iter().map(|(g, p)| (*g, p.interval.lo, p.interval.hi)).collect(), color: (0, 0, 0), alpha: 0.08 });
            left.insert(1, Series::Line { points: preds.iter().map(|(g, p)| (*g, p.value)).collect(), color: (0, 0, 0), alpha: 0.8, width: 2, dashed: true });
        }
        left.push(Series::Points { points: pts, color: (110, 110, 110), marker: crate::plot::Marker::Circle, filled: false, size: 4 });
        legend.push(LegendEntry::marker("fitted on", (110, 110, 110), crate::plot::Marker::Circle, false));
    }
    legend.push(LegendEntry::heading("law"));
    legend.push(LegendEntry::line(format!("prediction, {:.0}% band", rec.level * 100.0), (0, 0, 0), true));
    // Right: predicted vs observed.
    let mut right = Vec::new();
    let checked: Vec<(&Target, &Check)> = rec.targets.iter().filter_map(|t| Some((t, t.check.as_ref()?))).collect();
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for (t, c) in &checked {
        let run = data.runs.iter().find(|r| r.id == t.run_id);
        let col = patch_color(run.and_then(|r| r.patch));
        right.push(Series::Line { points: vec![(c.observed, t.lo), (c.observed, t.hi)], color: col, alpha: 0.6, width: 2, dashed: false });
        right.push(Series::Points { points: vec![(c.observed, t.predicted)], color: col, marker: patch_marker(run.and_then(|r| r.patch)), filled: c.inside, size: 4 });
        for v in [c.observed, t.lo, t.hi, t.predicted] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo.is_finite() && hi > lo {
        right.insert(0, Series::Line { points: vec![(lo, lo), (hi, hi)], color: (0, 0, 0), alpha: 0.5, width: 1, dashed: true });
    }
    legend.push(LegendEntry::heading("right: hollow = outside its interval"));
    let sc = rec.score();
    let title = match sc.median_abs_log_error {
        Some(m) => format!(
            "held out: {} — median |ln error| {m:.3}, {}/{} inside the {:.0}% interval",
            rec.hold_out,
            sc.inside,
            sc.checked,
            rec.level * 100.0
        ),
        None => format!("held out: {} — {} predictions pending", rec.hold_out, sc.pending),
    };
    Figure {
        name: "prediction".into(),
        title,
        panels: vec![
            Panel {
                title: Some(format!("{} fitted on {} runs", rec.formula, rec.fitted_on.len())),
                x: Axis { label: if joint { "images seen (step × batch)".into() } else { "model Gflops per image".into() }, log: true },
                y: Axis { label: metric.clone(), log: true },
                series: left,
            },
            Panel {
                title: Some("predicted vs observed".into()),
                x: Axis { label: format!("observed {metric}"), log: true },
                y: Axis { label: format!("predicted {metric}"), log: true },
                series: right,
            },
        ],
        columns: 2,
        legend,
        size: (1100, 480),
    }
}

/// One held-out number as the report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportTarget {
    pub run_id: String,
    pub step: i64,
    /// The run's last (planned) step.
    pub final_step: bool,
    pub gflops: f64,
    pub predicted: f64,
    pub lo: f64,
    pub hi: f64,
    /// Null while the run has not finished.
    pub observed: Option<f64>,
    pub abs_log_error: Option<f64>,
    pub inside: Option<bool>,
}

/// The report's held-out prediction: fitted on the rest of the sweep, checked against
/// the held-out runs' own numbers (nothing is stored: `ditbench predict` stores).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportPrediction {
    pub hold_out: String,
    pub metric: String,
    pub form: String,
    pub formula: String,
    /// Parameters, their intervals and the fit's diagnostics.
    pub params: serde_json::Value,
    pub fitted_on: Vec<String>,
    pub n_points: usize,
    pub level: f64,
    pub targets: Vec<ReportTarget>,
    /// Over every checked target (all held-out evaluations).
    pub score: ditbench_track::Score,
    /// Over the held-out runs' last steps only: what the held-out models reached.
    pub final_score: ditbench_track::Score,
}

/// A prediction stored in the store, as the report lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredPrediction {
    pub id: String,
    pub hold_out: String,
    pub metric: String,
    pub form: String,
    pub targets: usize,
    pub score: ditbench_track::Score,
}

/// The report's predictions section: the in-report hold-out (or why there is none) and
/// the predictions stored for the sweep, checked (in memory) against finished runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PredictionsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<ReportPrediction>,
    /// Why there is no held-out prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_made: Option<String>,
    pub stored: Vec<StoredPrediction>,
}

impl ReportPrediction {
    fn new(rec: &PredictionRecord, data: &SweepData) -> Self {
        // A target at its run's planned last step (as `points` marks `final_step`).
        let final_of = |t: &Target| data.runs.iter().any(|r| r.id == t.run_id && r.steps == Some(t.step));
        let targets = rec
            .targets
            .iter()
            .map(|t| ReportTarget {
                run_id: t.run_id.clone(),
                step: t.step,
                final_step: final_of(t),
                gflops: t.gflops,
                predicted: t.predicted,
                lo: t.lo,
                hi: t.hi,
                observed: t.check.as_ref().map(|c| c.observed),
                abs_log_error: t.check.as_ref().map(|c| c.abs_log_error),
                inside: t.check.as_ref().map(|c| c.inside),
            })
            .collect();
        let finals = PredictionRecord { targets: rec.targets.iter().filter(|t| final_of(t)).cloned().collect(), ..rec.clone() };
        ReportPrediction {
            hold_out: rec.hold_out.clone(),
            metric: rec.metric.clone(),
            form: rec.form.clone(),
            formula: rec.formula.clone(),
            params: rec.params.clone(),
            fitted_on: rec.fitted_on.clone(),
            n_points: rec.n_points,
            level: rec.level,
            targets,
            score: rec.score(),
            final_score: finals.score(),
        }
    }
}

/// The predictions section of a report on `data` and, when a held-out prediction was
/// made, its record and fit for the figure. Deterministic for a given store: the record
/// is dated 0 (it is not stored).
pub fn report_section(
    store: &std::path::Path,
    data: &SweepData,
    opts: &PredictOptions,
) -> Result<(PredictionsSection, Option<(PredictionRecord, Fit)>), ReportError> {
    let mut section = PredictionsSection::default();
    let st = ditbench_track::Store::open_read_only(store)?;
    let (stored, _warnings) = st.check_predictions(&data.sweep, false)?;
    section.stored = stored
        .iter()
        .map(|r| StoredPrediction {
            id: r.id.clone(),
            hold_out: r.hold_out.clone(),
            metric: r.metric.clone(),
            form: r.form.clone(),
            targets: r.targets.len(),
            score: r.score(),
        })
        .collect();
    let made = match predict(data, opts, "ditbench report", 0.0) {
        Ok((rec, fit)) => {
            section.held_out = Some(ReportPrediction::new(&rec, data));
            Some((rec, fit))
        }
        Err(ReportError::Predict(why)) => {
            section.not_made = Some(why);
            None
        }
        Err(e) => return Err(e),
    };
    Ok((section, made))
}
