//! # ditbench-report: scaling reports of a sweep
//!
//! Reads one sweep from the run store (through `ditbench-query`'s SQL tables), fits
//! the scaling law quality ≈ a · Gflops^b, predicts held-out runs with the saturating
//! laws of `ditbench-scaling` (`predict`), plans compute-optimal budgets (`isoflop`), and
//! writes a report folder:
//!
//! ```text
//! <out>/report.html        self-contained: figures inline as SVG, sample grids as data URIs,
//!                          no scripts, no network (a Content-Security-Policy forbids both)
//! <out>/report.md          the same numbers, figures linked as PNG
//! <out>/summary.json       fits with bootstrap intervals, correlations, per-run numbers
//! <out>/figures/*.svg|png  gflops, compute, steps_by_size, steps_by_patch, loss, validation,
//!                          prediction, isoflop
//! <out>/data/*.parquet     the plotted points (loss at full resolution)
//! <out>/samples/*.png      each run's last sample grid
//! ```
//!
//! The quality metric is `fid` when every evaluated run has it, else the `FD_<extractor>`
//! metric the runs share; figures and tables name it as it is (an FD is never called
//! FID). Missing evaluations are shown as missing, never as zero. The paper's Table 4
//! is drawn beside the sweep as a reference series.
//!
//! ```no_run
//! let opts = ditbench_report::ReportOptions::new("demo", "reports/demo");
//! let out = ditbench_report::write_report("experiments".as_ref(), &opts)?;
//! println!("{}", out.html.display());
//! # Ok::<(), ditbench_report::ReportError>(())
//! ```
//!
//! This crate links no libtorch.

pub mod build;
pub mod data;
mod html;
pub mod isoflop;
pub mod plot;
pub mod predict;
pub mod replicates;
pub mod stats;

use std::path::{Path, PathBuf};

use polars::prelude::*;

pub use build::Summary;
pub use data::{RunInfo, SweepData};

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store could not be read (unknown sweep, damaged registry, SQL).
    #[error(transparent)]
    Query(#[from] ditbench_query::QueryError),
    /// A Polars failure.
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sweep spec could not be used.
    #[error("sweep spec {path}: {message}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// The sweep is registered but has no runs.
    #[error("sweep {sweep:?} has no runs in the store {store}; start it with `ditbench sweep run`")]
    NoRuns {
        /// The sweep.
        sweep: String,
        /// The store.
        store: PathBuf,
    },
    /// `--metric` named a metric the sweep's evaluations do not have.
    #[error("quality metric {metric:?} is not among the evaluations of sweep {sweep:?}; metrics there: {available}")]
    UnknownMetric {
        /// The requested metric.
        metric: String,
        /// The sweep.
        sweep: String,
        /// The metrics present.
        available: String,
    },
    /// `--step` named a step at which no run was evaluated.
    #[error("--step {step}: no run of sweep {sweep:?} has a {metric} evaluation at that step; evaluated steps: {available}")]
    StepNotEvaluated {
        /// The requested step.
        step: i64,
        /// The sweep.
        sweep: String,
        /// The metric.
        metric: String,
        /// Steps that were evaluated.
        available: String,
    },
    /// A prediction could not be made (hold-out filter, too few points to fit).
    #[error("predict: {0}")]
    Predict(String),
    /// The prediction store failed.
    #[error(transparent)]
    Store(#[from] ditbench_track::Error),
    /// Drawing failed.
    #[error("plotting: {0}")]
    Plot(String),
    /// summary.json could not be written.
    #[error("summary.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result with [`ReportError`].
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ReportError + 'a {
    move |source| ReportError::Io { op, path: path.to_path_buf(), source }
}

/// Which fit the Gflops figure draws (both are always in `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FitChoice {
    /// Least squares in log space.
    #[default]
    Ols,
    /// Huber loss in log space (robust to outlying runs).
    Huber,
}

impl FitChoice {
    /// "ols" or "huber".
    pub fn name(self) -> &'static str {
        match self {
            FitChoice::Ols => "ols",
            FitChoice::Huber => "huber",
        }
    }
}

/// What to report and how.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The sweep.
    pub sweep: String,
    /// Output folder (created).
    pub out_dir: PathBuf,
    /// Take each run's quality at this step instead of its last evaluation.
    pub step: Option<i64>,
    /// Force the quality metric (`fid`, `FD_<extractor>`).
    pub metric: Option<String>,
    /// The fit drawn in the Gflops figure.
    pub fit: FitChoice,
    /// Huber threshold on natural-log residuals.
    pub huber_delta: f64,
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// PNG pixels per SVG unit.
    pub png_scale: f64,
    /// The predictions section's hold-out (see [`predict::HoldOut`]): the law is fitted
    /// on the other runs and checked against these.
    pub hold_out: String,
}

impl ReportOptions {
    /// Defaults: last evaluation, automatic metric, OLS drawn, Huber delta 0.1,
    /// 1000 bootstrap resamples with seed 0, PNGs at 2× the SVG size, the largest
    /// model size held out for the predictions section.
    pub fn new(sweep: impl Into<String>, out_dir: impl Into<PathBuf>) -> Self {
        ReportOptions {
            sweep: sweep.into(),
            out_dir: out_dir.into(),
            step: None,
            metric: None,
            fit: FitChoice::Ols,
            huber_delta: 0.1,
            bootstrap: 1000,
            seed: 0,
            png_scale: 2.0,
            hold_out: "largest-size".into(),
        }
    }
}

/// What [`write_report`] wrote.
#[derive(Debug)]
pub struct ReportOutput {
    /// The report folder.
    pub out_dir: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `summary.json`.
    pub summary_json: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The summary.
    pub summary: Summary,
}

/// The sweep name of a sweep spec: its top-level `name = "..."`.
pub fn sweep_name_from_spec(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    let spec_err = |message: String| ReportError::Spec { path: path.to_path_buf(), message };
    let value: toml::Table = text.parse().map_err(|e| spec_err(format!("not valid TOML: {e}")))?;
    match value.get("name") {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(spec_err(format!(
            "top-level `name` must be a non-empty string, found {other}"
        ))),
        None => Err(spec_err(
            "no top-level `name = \"...\"` key (the sweep's name, as registered in the store)".into(),
        )),
    }
}

fn write_parquet(path: &Path, mut df: DataFrame) -> Result<()> {
    let f = std::fs::File::create(path).map_err(io("creating", path))?;
    ParquetWriter::new(f).finish(&mut df)?;
    Ok(())
}

fn col_f(name: &str, v: Vec<Option<f64>>) -> Column {
    Series::new(name.into(), v).into_column()
}
fn col_i(name: &str, v: Vec<Option<i64>>) -> Column {
    Series::new(name.into(), v).into_column()
}
fn col_s(name: &str, v: Vec<Option<String>>) -> Column {
    Series::new(name.into(), v).into_column()
}

/// Reads the sweep from the store at `store` and writes the report folder.
pub fn write_report(store: &Path, opts: &ReportOptions) -> Result<ReportOutput> {
    let data = data::load(store, &opts.sweep, opts.metric.as_deref())?;
    if data.runs.is_empty() {
        return Err(ReportError::NoRuns { sweep: opts.sweep.clone(), store: store.to_path_buf() });
    }
    if let (Some(step), Some(metric)) = (opts.step, &data.metric) {
        if !data.runs.iter().any(|r| r.quality.iter().any(|q| q.0 == step)) {
            let steps: std::collections::BTreeSet<i64> =
                data.runs.iter().flat_map(|r| r.quality.iter().map(|q| q.0)).collect();
            return Err(ReportError::StepNotEvaluated {
                step,
                sweep: opts.sweep.clone(),
                metric: metric.clone(),
                available: steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    let mut summary = build::summarize(&data, opts);
    let popts = predict::PredictOptions {
        hold_out: opts.hold_out.clone(),
        form: None,
        fit: ditbench_scaling::FitOptions { bootstrap: opts.bootstrap, seed: opts.seed, ..Default::default() },
    };
    let (section, made) = predict::report_section(store, &data, &popts)?;
    summary.predictions = section;
    // The isoFLOP plan: a joint law on every run (not the held-out fit), at budgets
    // spanning the sweep's own computes.
    let (isoflop_section, isoflop_figure) = isoflop::report_section(&data, &popts.fit)?;
    summary.isoflop = isoflop_section;
    let out = &opts.out_dir;
    let figdir = out.join("figures");
    let datadir = out.join("data");
    let sampledir = out.join("samples");
    for d in [out, &figdir, &datadir, &sampledir] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    let mut files = Vec::new();

    // ---- figures
    let gflops = build::fig_gflops(&data, &summary);
    let (compute, front) = build::fig_compute(&data);
    let (by_size, by_patch) = build::fig_steps(&data);
    let loss = build::fig_loss(&data);
    let mut figures = vec![gflops, compute, by_size, by_patch, loss];
    figures.extend(build::fig_validation(&data));
    if let Some((rec, fit)) = &made {
        figures.push(predict::fig_prediction(&data, rec, fit));
    }
    if let Some(f) = isoflop_figure {
        figures.push(f);
    }
    let mut svgs = Vec::new();
    for f in &figures {
        let svg = plot::render_svg(f)?;
        let p = figdir.join(format!("{}.svg", f.name));
        std::fs::write(&p, &svg).map_err(io("writing", &p))?;
        files.push(p);
        let p = figdir.join(format!("{}.png", f.name));
        plot::render_png(f, &p, opts.png_scale)?;
        files.push(p);
        svgs.push(svg);
    }

    // ---- plotted points
    let metric = data.metric.clone();
    let p = datadir.join("quality_vs_gflops.parquet");
    write_parquet(
        &p,
        DataFrame::new_infer_height(vec![
            col_s("run_id", summary.runs.iter().map(|r| Some(r.run_id.clone())).collect()),
            col_s("model", summary.runs.iter().map(|r| r.model.clone()).collect()),
            col_s("size", summary.runs.iter().map(|r| r.size.clone()).collect()),
            col_i("patch", summary.runs.iter().map(|r| r.patch).collect()),
            col_f("gflops", summary.runs.iter().map(|r| r.gflops).collect()),
            col_s("metric", summary.runs.iter().map(|_| metric.clone()).collect()),
            col_i("step", summary.runs.iter().map(|r| r.quality_step).collect()),
            col_f("value", summary.runs.iter().map(|r| r.quality).collect()),
        ])?,
    )?;
    files.push(p);
    let (mut rid, mut step, mut comp, mut val, mut onf) = (vec![], vec![], vec![], vec![], vec![]);
    for r in &data.runs {
        for q in &r.quality {
            let c = r.training_compute(q.0);
            rid.push(Some(r.id.clone()));
            step.push(Some(q.0));
            comp.push(c);
            val.push(Some(q.1));
            onf.push(Some(c.is_some_and(|c| front.iter().any(|f| f.0 == c && f.1 == q.1))));
        }
    }
    let p = datadir.join("quality_vs_steps.parquet");
    write_parquet(
        &p,
        DataFrame::new_infer_height(vec![
            col_s("run_id", rid),
            col_i("step", step),
            col_f("training_compute", comp),
            col_f("value", val),
            Series::new("on_frontier".into(), onf).into_column(),
        ])?,
    )?;
    files.push(p);
    let (mut rid, mut step, mut raw, mut sm) = (vec![], vec![], vec![], vec![]);
    for r in &data.runs {
        let s = build::smooth(&r.loss);
        for (l, s) in r.loss.iter().zip(s) {
            rid.push(Some(r.id.clone()));
            step.push(Some(l.0));
            raw.push(Some(l.1));
            sm.push(Some(s));
        }
    }
    let p = datadir.join("loss.parquet");
    write_parquet(
        &p,
        DataFrame::new_infer_height(vec![
            col_s("run_id", rid),
            col_i("step", step),
            col_f("loss", raw),
            col_f("loss_smoothed", sm),
        ])?,
    )?;
    files.push(p);
    if let Some(f) = match opts.fit {
        FitChoice::Ols => summary.fits.ols.fitted(),
        FitChoice::Huber => summary.fits.huber.fitted(),
    } {
        let p = datadir.join("fit_band.parquet");
        write_parquet(
            &p,
            DataFrame::new_infer_height(vec![
                col_f("gflops", f.band.iter().map(|b| Some(b.0)).collect()),
                col_f("fit", f.band.iter().map(|b| Some(f.fit.eval(b.0))).collect()),
                col_f("lower", f.band.iter().map(|b| Some(b.1)).collect()),
                col_f("upper", f.band.iter().map(|b| Some(b.2)).collect()),
            ])?,
        )?;
        files.push(p);
    }

    // ---- sample grids
    let mut samples = Vec::new();
    for (i, r) in data.runs.iter().enumerate() {
        let Some((step, src)) = &r.last_samples else { continue };
        let bytes = std::fs::read(src).map_err(io("reading", src))?;
        let safe: String = r
            .id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let name = format!("{i:02}-{safe}.png");
        let p = sampledir.join(&name);
        std::fs::write(&p, &bytes).map_err(io("writing", &p))?;
        files.push(p);
        samples.push(html::SampleGrid { run_id: r.id.clone(), model: r.model.clone(), step: *step, file: format!("samples/{name}"), png: bytes });
    }

    // ---- summary, HTML, Markdown
    let p = out.join("summary.json");
    std::fs::write(&p, serde_json::to_string_pretty(&summary)? + "\n").map_err(io("writing", &p))?;
    files.push(p.clone());
    let summary_json = p;
    let page = html::Page { data: &data, summary: &summary, figures: &figures, svgs: &svgs, samples: &samples, opts };
    let html_path = out.join("report.html");
    std::fs::write(&html_path, page.html()).map_err(io("writing", &html_path))?;
    files.push(html_path.clone());
    let md_path = out.join("report.md");
    std::fs::write(&md_path, page.markdown()).map_err(io("writing", &md_path))?;
    files.push(md_path.clone());
    Ok(ReportOutput { out_dir: out.clone(), html: html_path, markdown: md_path, summary_json, files, summary })
}
