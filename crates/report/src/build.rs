//! From the sweep's data to figures and the summary: which points go where, the fits
//! and correlations, the paper's reference series.

use std::collections::BTreeSet;

use ditbench_family::PAPER_TABLE4;
use serde::Serialize;

use crate::data::{RunInfo, SweepData};
use crate::plot::{Axis, Figure, LegendEntry, Marker, Panel, Series, PALETTE};
use crate::stats::{self, FitMethod, FitWithCi};
use crate::ReportOptions;

/// Sizes in the paper's order.
pub const SIZES: [&str; 4] = ["S", "B", "L", "XL"];

/// Colour of a model size (Tableau blue, orange, green, red; grey for others).
pub fn size_color(size: Option<&str>) -> (u8, u8, u8) {
    match size {
        Some("S") => PALETTE[0],
        Some("B") => PALETTE[1],
        Some("L") => PALETTE[2],
        Some("XL") => PALETTE[3],
        _ => PALETTE[7],
    }
}

/// Colour of a patch size, for figures where colour encodes the patch.
pub fn patch_color(patch: Option<i64>) -> (u8, u8, u8) {
    match patch {
        Some(2) => PALETTE[4],
        Some(4) => PALETTE[5],
        Some(8) => PALETTE[9],
        _ => PALETTE[7],
    }
}

/// Marker of a patch size.
pub fn patch_marker(patch: Option<i64>) -> Marker {
    match patch {
        Some(2) => Marker::Circle,
        Some(4) => Marker::Triangle,
        Some(8) => Marker::Square,
        _ => Marker::Diamond,
    }
}

/// Display name of a quality metric for axis labels: `fid` → "FID"; an FD metric
/// keeps its name (it is not an FID).
pub fn metric_label(metric: &str) -> String {
    match metric {
        "fid" => "FID".into(),
        "val_loss_ema" => "validation loss (EMA)".into(),
        "val_loss" => "validation loss (raw weights)".into(),
        "val_mse_ema" => "validation ε-MSE (EMA)".into(),
        "val_mse" => "validation ε-MSE (raw weights)".into(),
        _ => metric.to_string(),
    }
}

/// A fit, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FitOutcome {
    /// The fit with its intervals.
    Fitted(Box<FitWithCi>),
    /// Why not.
    NotFitted {
        /// The reason, for people.
        error: String,
    },
}

impl FitOutcome {
    /// The fit, if any.
    pub fn fitted(&self) -> Option<&FitWithCi> {
        match self {
            FitOutcome::Fitted(f) => Some(f),
            FitOutcome::NotFitted { .. } => None,
        }
    }
}

/// Correlations between Gflops and the quality metric over runs.
#[derive(Debug, Clone, Serialize)]
pub struct Correlations {
    /// Runs with both numbers.
    pub n: usize,
    /// Spearman's rank correlation of Gflops and the metric.
    pub spearman: Option<f64>,
    /// Pearson's correlation of ln Gflops and ln metric.
    pub pearson_loglog: Option<f64>,
    /// Why a value is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn correlations(x: &[f64], y: &[f64]) -> Correlations {
    if x.len() < stats::MIN_POINTS {
        return Correlations {
            n: x.len(),
            spearman: None,
            pearson_loglog: None,
            note: Some(format!(
                "correlations need at least {} runs with Gflops and a quality value; have {}",
                stats::MIN_POINTS,
                x.len()
            )),
        };
    }
    Correlations {
        n: x.len(),
        spearman: stats::spearman(x, y),
        pearson_loglog: stats::pearson_loglog(x, y),
        note: None,
    }
}

/// The final (or chosen-step) numbers of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub model: Option<String>,
    pub size: Option<String>,
    pub patch: Option<i64>,
    pub status: String,
    pub n_params: Option<i64>,
    pub gflops: Option<f64>,
    pub batch_size: Option<i64>,
    pub steps: Option<i64>,
    pub image_size: Option<i64>,
    /// Step of the quality value shown (the last evaluation, or `--step`).
    pub quality_step: Option<i64>,
    /// The quality value (null when missing: never zero).
    pub quality: Option<f64>,
    /// 3 × Gflops × batch × quality_step.
    pub training_compute: Option<f64>,
    pub final_loss: Option<f64>,
    pub final_loss_step: Option<i64>,
    pub loss_points: usize,
    pub quality_evaluations: usize,
    /// The paper's Gflops (256 px) of the same preset, when the model is one.
    pub paper_gflops: Option<f64>,
    /// The paper's FID-50K at 400K steps of the same preset.
    pub paper_fid_50k_400k: Option<f64>,
}

/// The paper's Table 4 numbers, analysed like the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct PaperSummary {
    pub source: &'static str,
    pub correlations: Correlations,
    /// What the paper states for its Gflops–FID correlation.
    pub stated_correlation: f64,
    pub ols: FitOutcome,
}

/// The fits of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Fits {
    pub ols: FitOutcome,
    pub huber: FitOutcome,
    /// The fit drawn in the Gflops figure.
    pub drawn: &'static str,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub sweep: String,
    pub generated_by: String,
    /// The quality metric (`fid` or `FD_<extractor>`); null when no run was evaluated.
    pub metric: Option<String>,
    /// How every quality value of the report was made (with its `id`); rows made
    /// otherwise are left out, with a note. Null when no run was evaluated.
    pub fingerprint: Option<ditbench_track::Fingerprint>,
    /// The step the per-run values are taken at (null: each run's last evaluation).
    pub step: Option<i64>,
    pub runs: Vec<RunSummary>,
    pub correlations: Correlations,
    pub fits: Fits,
    pub paper: PaperSummary,
    /// Runs not in the Gflops figure, with the reason.
    pub missing: Vec<String>,
    pub notes: Vec<String>,
    /// The held-out prediction and the stored ones (filled by `write_report`).
    pub predictions: crate::predict::PredictionsSection,
    /// The compute-optimal plan: isoFLOP profiles and `G_opt ∝ C^k` (filled by
    /// `write_report`).
    pub isoflop: crate::isoflop::IsoFlopSection,
    /// Seed replicates: per configuration mean ± 95 % interval, and the seed noise
    /// beside the size and patch effects.
    pub replicates: crate::replicates::ReplicatesSection,
}

fn paper_entry(model: Option<&str>) -> Option<&'static ditbench_family::PaperEntry> {
    let m = model?;
    PAPER_TABLE4.iter().find(|e| e.name.eq_ignore_ascii_case(m))
}

fn fit_outcome(x: &[f64], y: &[f64], method: FitMethod, opts: &ReportOptions, grid: &[f64]) -> FitOutcome {
    match stats::fit_with_bootstrap(x, y, method, opts.bootstrap, opts.seed, 0.95, grid) {
        Ok(f) => FitOutcome::Fitted(Box::new(f)),
        Err(e) => FitOutcome::NotFitted { error: e.to_string() },
    }
}

fn geomspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n).map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp()).collect()
}

/// The summary and the points of the Gflops figure.
pub fn summarize(data: &SweepData, opts: &ReportOptions) -> Summary {
    let mut missing = Vec::new();
    let mut runs = Vec::new();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for r in &data.runs {
        let q = data.metric.as_ref().and_then(|_| r.quality_at(opts.step));
        let paper = paper_entry(r.model.as_deref());
        if data.metric.is_some() {
            match (r.gflops, q) {
                (Some(g), Some((_, v))) if g > 0.0 && v > 0.0 => {
                    xs.push(g);
                    ys.push(v);
                }
                (None, _) => missing.push(format!("{}: no Gflops in the registry", r.id)),
                (_, None) => missing.push(format!(
                    "{} ({}): {}",
                    r.id,
                    r.status,
                    match opts.step {
                        Some(s) if !r.quality.is_empty() => format!("no evaluation at step {s}"),
                        _ => "no quality evaluation".to_string(),
                    }
                )),
                (Some(g), Some((_, v))) => missing.push(format!("{}: Gflops {g} or value {v} is not positive", r.id)),
            }
        }
        runs.push(RunSummary {
            run_id: r.id.clone(),
            model: r.model.clone(),
            size: r.size.clone(),
            patch: r.patch,
            status: r.status.clone(),
            n_params: r.n_params,
            gflops: r.gflops,
            batch_size: r.batch_size,
            steps: r.steps,
            image_size: r.image_size,
            quality_step: q.map(|q| q.0),
            quality: q.map(|q| q.1),
            training_compute: q.and_then(|q| r.training_compute(q.0)),
            final_loss: r.loss.last().map(|l| l.1),
            final_loss_step: r.loss.last().map(|l| l.0),
            loss_points: r.loss.len(),
            quality_evaluations: r.quality.len(),
            paper_gflops: paper.map(|p| p.gflops),
            paper_fid_50k_400k: paper.map(|p| p.fid_50k_400k),
        });
    }
    let grid = if xs.is_empty() {
        vec![]
    } else {
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(0.0, f64::max);
        geomspace(lo, hi, 60)
    };
    let huber = FitMethod::Huber { delta: opts.huber_delta };
    let no_metric = || FitOutcome::NotFitted { error: "no run of this sweep has a quality evaluation".into() };
    let (ols, hub) = if data.metric.is_some() {
        (fit_outcome(&xs, &ys, FitMethod::Ols, opts, &grid), fit_outcome(&xs, &ys, huber, opts, &grid))
    } else {
        (no_metric(), no_metric())
    };
    let px: Vec<f64> = PAPER_TABLE4.iter().map(|e| e.gflops).collect();
    let py: Vec<f64> = PAPER_TABLE4.iter().map(|e| e.fid_50k_400k).collect();
    let pgrid = geomspace(0.3, 130.0, 40);
    let mut notes = data.notes.clone();
    if data.metric.is_none() {
        notes.push("no run of this sweep has a quality evaluation (fid or FD_*): the quality figures are empty".into());
    }
    Summary {
        sweep: data.sweep.clone(),
        generated_by: format!("ditbench-report {}", env!("CARGO_PKG_VERSION")),
        metric: data.metric.clone(),
        fingerprint: data.fingerprint.clone(),
        step: opts.step,
        runs,
        correlations: if data.metric.is_some() {
            correlations(&xs, &ys)
        } else {
            Correlations { n: 0, spearman: None, pearson_loglog: None, note: Some("no quality metric".into()) }
        },
        fits: Fits { ols, huber: hub, drawn: opts.fit.name() },
        paper: PaperSummary {
            source: "Peebles & Xie 2023, Table 4: Gflops and FID-50K after 400K steps (256 px, no guidance)",
            correlations: correlations(&px, &py),
            stated_correlation: -0.93,
            ols: fit_outcome(&px, &py, FitMethod::Ols, opts, &pgrid),
        },
        missing,
        notes,
        predictions: Default::default(),
        isoflop: Default::default(),
        replicates: crate::replicates::replicates(data, opts.step),
    }
}

fn size_patch_legend(runs: &[&RunInfo], with_patch_heading: bool) -> Vec<LegendEntry> {
    let sizes: BTreeSet<usize> = runs
        .iter()
        .map(|r| SIZES.iter().position(|s| Some(*s) == r.size.as_deref()).unwrap_or(4))
        .collect();
    let patches: BTreeSet<i64> = runs.iter().map(|r| r.patch.unwrap_or(0)).collect();
    let mut l = vec![LegendEntry::heading("model size (colour)")];
    for s in sizes {
        let name = SIZES.get(s).copied();
        l.push(LegendEntry::marker(
            name.map_or("other".to_string(), |n| format!("DiT-{n}")),
            size_color(name),
            Marker::Circle,
            true,
        ));
    }
    if with_patch_heading {
        l.push(LegendEntry::heading("patch (marker)"));
        for p in patches.into_iter().rev() {
            let pp = (p > 0).then_some(p);
            l.push(LegendEntry::marker(
                pp.map_or("other".to_string(), |p| format!("p = {p}")),
                (60, 60, 60),
                patch_marker(pp),
                true,
            ));
        }
    }
    l
}

/// A figure's width and height (SVG px).
pub const FIG_SIZE: (u32, u32) = (980, 600);

/// Figure: quality vs transformer Gflops, with the fit, its band and the paper's Table 4.
pub fn fig_gflops(data: &SweepData, summary: &Summary) -> Figure {
    let metric = data.metric.as_deref().map(metric_label).unwrap_or_else(|| "quality".into());
    let mut series = Vec::new();
    let drawn = match summary.fits.drawn {
        "huber" => summary.fits.huber.fitted(),
        _ => summary.fits.ols.fitted(),
    };
    if let Some(f) = summary.paper.ols.fitted() {
        let pts = f.band.iter().map(|b| (b.0, f.fit.eval(b.0))).collect();
        series.push(Series::Line { points: pts, color: (150, 150, 150), alpha: 1.0, width: 2, dashed: true });
    }
    for e in PAPER_TABLE4 {
        series.push(Series::Points {
            points: vec![(e.gflops, e.fid_50k_400k)],
            color: (150, 150, 150),
            marker: patch_marker(Some(e.patch)),
            filled: false,
            size: 5,
        });
    }
    if let Some(f) = drawn {
        series.push(Series::Band { points: f.band.clone(), color: (31, 119, 180), alpha: 0.15 });
        let pts = f.band.iter().map(|b| (b.0, f.fit.eval(b.0))).collect();
        series.push(Series::Line { points: pts, color: (20, 20, 20), alpha: 1.0, width: 2, dashed: false });
    }
    let in_fig: Vec<&RunInfo> = data.runs.iter().collect();
    for (r, s) in data.runs.iter().zip(&summary.runs) {
        if let (Some(g), Some(v)) = (r.gflops, s.quality) {
            series.push(Series::Points {
                points: vec![(g, v)],
                color: size_color(r.size.as_deref()),
                marker: patch_marker(r.patch),
                filled: true,
                size: 6,
            });
        }
    }
    let mut legend = size_patch_legend(&in_fig, true);
    let name = if summary.fits.drawn == "huber" { "Huber" } else { "least squares" };
    legend.push(LegendEntry::heading(format!("fit ({name}, log space)")));
    if let Some(f) = drawn {
        legend.push(LegendEntry::line("a·Gflops^b", (20, 20, 20), false));
        legend.push(LegendEntry::heading(format!("  a = {}, b = {}", sig4(f.fit.a), signed(f.fit.b))));
        legend.push(LegendEntry::marker("95% bootstrap band", (190, 214, 234), Marker::Square, true));
    } else {
        legend.push(LegendEntry::line("no fit (see report)", (200, 200, 200), false));
    }
    if let Some(s) = summary.correlations.spearman {
        legend.push(LegendEntry::heading(format!("Spearman ρ = {}", signed(s))));
    }
    if let Some(p) = summary.correlations.pearson_loglog {
        legend.push(LegendEntry::heading(format!("Pearson log-log = {}", signed(p))));
    }
    legend.push(LegendEntry::heading("paper Table 4 (256 px)"));
    legend.push(LegendEntry::marker("FID-50K @400K", (150, 150, 150), Marker::Circle, false));
    legend.push(LegendEntry::line("its power-law fit", (150, 150, 150), true));
    let at = match summary.step {
        Some(s) => format!("at step {s}"),
        None => "at each run's last evaluation".into(),
    };
    Figure {
        name: "gflops".into(),
        title: format!("{metric} vs transformer Gflops {at}"),
        panels: vec![Panel {
            title: None,
            x: Axis { label: "transformer Gflops per image (forward)".into(), log: true },
            y: Axis { label: metric.clone(), log: true },
            series,
        }],
        columns: 1,
        legend,
        size: FIG_SIZE,
    }
}

/// Four significant digits, plain or in e-notation for very large/small values.
fn sig4(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    let d = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.d$}").replace('-', "−")
}

fn signed(v: f64) -> String {
    format!("{v:.3}").replace('-', "−")
}

/// The compute-efficient frontier: points no cheaper point beats (running minimum
/// of the metric over increasing compute).
pub fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points.iter().copied().filter(|q| q.0 > 0.0 && q.1.is_finite()).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for q in p {
        if out.last().is_none_or(|l| q.1 < l.1) {
            out.push(q);
        }
    }
    out
}

/// Figure: quality vs training compute, one curve per run, and the frontier.
pub fn fig_compute(data: &SweepData) -> (Figure, Vec<(f64, f64)>) {
    let metric = data.metric.as_deref().map(metric_label).unwrap_or_else(|| "quality".into());
    let mut series = Vec::new();
    let mut all = Vec::new();
    for r in &data.runs {
        let pts: Vec<(f64, f64)> = r
            .quality
            .iter()
            .filter(|q| q.0 > 0)
            .filter_map(|q| Some((r.training_compute(q.0)?, q.1)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        all.extend(pts.iter().copied());
        let c = size_color(r.size.as_deref());
        series.push(Series::Line { points: pts.clone(), color: c, alpha: 0.85, width: 2, dashed: false });
        series.push(Series::Points { points: pts, color: c, marker: patch_marker(r.patch), filled: true, size: 4 });
    }
    let front = frontier(&all);
    series.push(Series::Line { points: front.clone(), color: (0, 0, 0), alpha: 0.9, width: 3, dashed: true });
    let runs: Vec<&RunInfo> = data.runs.iter().collect();
    let mut legend = size_patch_legend(&runs, true);
    legend.push(LegendEntry::heading("frontier"));
    legend.push(LegendEntry::line("compute-efficient", (0, 0, 0), true));
    let fig = Figure {
        name: "compute".into(),
        title: format!("{metric} vs training compute (one curve per run)"),
        panels: vec![Panel {
            title: None,
            x: Axis { label: "training compute, Gflops (3 × Gflops × batch × steps)".into(), log: true },
            y: Axis { label: metric, log: true },
            series,
        }],
        columns: 1,
        legend,
        size: FIG_SIZE,
    };
    (fig, front)
}

/// Figures: quality vs training steps, by size at each patch and by patch at each size.
pub fn fig_steps(data: &SweepData) -> (Figure, Figure) {
    let metric = data.metric.as_deref().map(metric_label).unwrap_or_else(|| "quality".into());
    let mut patches: Vec<Option<i64>> = data.runs.iter().map(|r| r.patch).collect::<BTreeSet<_>>().into_iter().collect();
    patches.reverse(); // 8, 4, 2: the paper's left-to-right order of growing compute
    let mut sizes: Vec<Option<String>> = Vec::new();
    for s in SIZES {
        if data.runs.iter().any(|r| r.size.as_deref() == Some(s)) {
            sizes.push(Some(s.to_string()));
        }
    }
    if data.runs.iter().any(|r| r.size.is_none()) {
        sizes.push(None);
    }
    let curve = |r: &RunInfo, color| {
        let pts: Vec<(f64, f64)> = r.quality.iter().map(|q| (q.0 as f64, q.1)).collect();
        vec![
            Series::Line { points: pts.clone(), color, alpha: 0.9, width: 2, dashed: false },
            Series::Points { points: pts, color, marker: patch_marker(r.patch), filled: true, size: 4 },
        ]
    };
    let axis = |m: &str| (Axis { label: "training steps".into(), log: false }, Axis { label: m.to_string(), log: true });
    let by_size_panels: Vec<Panel> = patches
        .iter()
        .map(|p| {
            let mut series = Vec::new();
            for r in data.runs.iter().filter(|r| r.patch == *p) {
                series.extend(curve(r, size_color(r.size.as_deref())));
            }
            let (x, y) = axis(&metric);
            Panel { title: Some(p.map_or("patch: other".into(), |p| format!("patch {p}"))), x, y, series }
        })
        .collect();
    let by_patch_panels: Vec<Panel> = sizes
        .iter()
        .map(|s| {
            let mut series = Vec::new();
            for r in data.runs.iter().filter(|r| r.size == *s) {
                series.extend(curve(r, patch_color(r.patch)));
            }
            let (x, y) = axis(&metric);
            Panel { title: Some(s.as_ref().map_or("other models".into(), |s| format!("DiT-{s}"))), x, y, series }
        })
        .collect();
    let runs: Vec<&RunInfo> = data.runs.iter().collect();
    let mut patch_legend = vec![LegendEntry::heading("patch")];
    for p in &patches {
        patch_legend.push(LegendEntry::marker(
            p.map_or("other".into(), |p| format!("p = {p}")),
            patch_color(*p),
            patch_marker(*p),
            true,
        ));
    }
    // Three panels side by side (as the paper's patch/size rows), four as 2 × 2.
    let grid = |n: usize| {
        let cols = if n == 3 { 3 } else { n.clamp(1, 2) };
        (cols, n.div_ceil(cols).max(1))
    };
    let (c1, r1) = grid(by_size_panels.len());
    let (c2, r2) = grid(by_patch_panels.len());
    let h = |rows: usize| 60 + 360 * rows as u32;
    let w = |cols: usize| if cols == 3 { 1280 } else { FIG_SIZE.0 };
    (
        Figure {
            name: "steps_by_size".into(),
            title: format!("{metric} over training: model size at fixed patch"),
            panels: by_size_panels,
            columns: c1,
            legend: size_patch_legend(&runs, false),
            size: (w(c1), h(r1)),
        },
        Figure {
            name: "steps_by_patch".into(),
            title: format!("{metric} over training: patch size at fixed model size"),
            panels: by_patch_panels,
            columns: c2,
            legend: patch_legend,
            size: (w(c2), h(r2)),
        },
    )
}

/// Exponential moving average, started at the first value; the time constant is
/// `n / 40` points (at least 1), so curves of any length smooth alike.
pub fn smooth(values: &[(i64, f64)]) -> Vec<f64> {
    let tau = (values.len() as f64 / 40.0).max(1.0);
    let alpha = 1.0 / tau;
    let mut out = Vec::with_capacity(values.len());
    let mut s = f64::NAN;
    for &(_, v) in values {
        if !v.is_finite() {
            out.push(s);
            continue;
        }
        s = if s.is_nan() { v } else { s + alpha * (v - s) };
        out.push(s);
    }
    out
}

/// Downsampling for drawing only: per bucket, the minimum and the maximum in step
/// order, so spikes survive.
pub fn downsample_minmax(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if points.len() <= buckets * 2 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for chunk in points.chunks(per) {
        let finite = chunk.iter().filter(|p| p.1.is_finite());
        let (mut lo, mut hi) = (None::<(f64, f64)>, None::<(f64, f64)>);
        for &p in finite {
            if lo.is_none_or(|l| p.1 < l.1) {
                lo = Some(p);
            }
            if hi.is_none_or(|h| p.1 > h.1) {
                hi = Some(p);
            }
        }
        if let (Some(a), Some(b)) = (lo, hi) {
            if a.0 <= b.0 {
                out.push(a);
                out.push(b);
            } else {
                out.push(b);
                out.push(a);
            }
        }
    }
    out
}

/// Figure: training loss, one panel per size, raw faint and smoothed solid.
pub fn fig_loss(data: &SweepData) -> Figure {
    let mut panels = Vec::new();
    let mut groups: Vec<Option<&str>> = SIZES.iter().map(|s| Some(*s)).collect();
    groups.push(None);
    let mut patches = BTreeSet::new();
    for g in groups {
        let runs: Vec<&RunInfo> = data.runs.iter().filter(|r| r.size.as_deref() == g && !r.loss.is_empty()).collect();
        if runs.is_empty() {
            continue;
        }
        let mut series = Vec::new();
        let all_positive = runs.iter().all(|r| r.loss.iter().all(|l| l.1 > 0.0 || !l.1.is_finite()));
        for r in &runs {
            patches.insert(r.patch);
            let c = patch_color(r.patch);
            let raw: Vec<(f64, f64)> = r.loss.iter().map(|l| (l.0 as f64, l.1)).collect();
            let sm: Vec<(f64, f64)> = r.loss.iter().zip(smooth(&r.loss)).map(|(l, s)| (l.0 as f64, s)).collect();
            let stride = sm.len().div_ceil(500).max(1);
            let sm_drawn: Vec<(f64, f64)> = sm.iter().copied().step_by(stride).chain(sm.last().copied()).collect();
            series.push(Series::Line { points: downsample_minmax(&raw, 400), color: c, alpha: 0.22, width: 1, dashed: false });
            series.push(Series::Line { points: sm_drawn, color: c, alpha: 1.0, width: 2, dashed: false });
        }
        panels.push(Panel {
            title: Some(g.map_or("other models".into(), |s| format!("DiT-{s}"))),
            x: Axis { label: "training steps".into(), log: false },
            y: Axis { label: "training loss".into(), log: all_positive },
            series,
        });
    }
    let mut legend = vec![LegendEntry::heading("patch")];
    for p in patches.iter().rev() {
        legend.push(LegendEntry::line(p.map_or("other".into(), |p| format!("p = {p}")), patch_color(*p), false));
    }
    legend.push(LegendEntry::heading("faint: raw; solid: EMA"));
    let cols = if panels.len() == 3 { 3 } else { panels.len().clamp(1, 2) };
    let rows = panels.len().div_ceil(cols).max(1);
    Figure {
        name: "loss".into(),
        title: "Training loss".into(),
        panels,
        columns: cols,
        legend,
        size: (if cols == 3 { 1280 } else { FIG_SIZE.0 }, 60 + 340 * rows as u32),
    }
}

/// Figure: the held-out validation loss (EMA weights) over training steps, one curve per
/// run; `None` when no run logged one.
pub fn fig_validation(data: &SweepData) -> Option<Figure> {
    let mut series = Vec::new();
    for r in &data.runs {
        let pts: Vec<(f64, f64)> = r.validation.iter().filter(|v| v.0 > 0 && v.1 > 0.0).map(|v| (v.0 as f64, v.1)).collect();
        if pts.is_empty() {
            continue;
        }
        let c = size_color(r.size.as_deref());
        series.push(Series::Line { points: pts.clone(), color: c, alpha: 0.85, width: 2, dashed: false });
        series.push(Series::Points { points: pts, color: c, marker: patch_marker(r.patch), filled: true, size: 4 });
    }
    if series.is_empty() {
        return None;
    }
    let runs: Vec<&RunInfo> = data.runs.iter().filter(|r| !r.validation.is_empty()).collect();
    Some(Figure {
        name: "validation".into(),
        title: "held-out validation loss over training (EMA weights)".into(),
        panels: vec![Panel {
            title: None,
            x: Axis { label: "training step".into(), log: true },
            y: Axis { label: metric_label(crate::data::DEFAULT_VALIDATION_METRIC), log: true },
            series,
        }],
        columns: 1,
        legend: size_patch_legend(&runs, true),
        size: FIG_SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_keeps_only_unbeaten_points() {
        let f = frontier(&[(10.0, 50.0), (1.0, 100.0), (5.0, 120.0), (20.0, 60.0), (30.0, 40.0)]);
        assert_eq!(f, vec![(1.0, 100.0), (10.0, 50.0), (30.0, 40.0)]);
    }

    #[test]
    fn downsampling_keeps_extremes() {
        let pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, if i == 4321 { 99.0 } else { 1.0 })).collect();
        let d = downsample_minmax(&pts, 100);
        assert!(d.len() <= 200);
        assert!(d.contains(&(4321.0, 99.0)));
    }

    #[test]
    fn smoothing_converges_to_a_constant_and_skips_nan() {
        let v: Vec<(i64, f64)> = (0..100).map(|i| (i, if i == 50 { f64::NAN } else { 2.0 })).collect();
        let s = smooth(&v);
        assert!(s.iter().all(|x| (x - 2.0).abs() < 1e-12));
    }
}

