//! Compute-optimal plans (issue 15 §4): the joint law of a sweep decides, for a
//! training budget, which model to train and for how long; the report draws the isoFLOP
//! profiles behind that choice and how the optimal size grows with compute, by the joint
//! law and by per-budget parabolas; an isoFLOP sweep spec can be written to test it.
//!
//! # Units
//!
//! The joint law is the one of [`crate::predict`]: `Q = E + A·G^(−α) + B·S^(−β)` with
//! G the model's forward Gflops per image and S the **images seen** (step × batch).
//! Training compute is counted as everywhere in ditbench
//! ([`ditbench_common::flops::train`]): `C = 6·10⁹ · G · S` FLOPs (2 FLOPs per
//! multiply-accumulate, a backward pass costs two forwards), the unit of the "train
//! FLOPs" column of `ditbench sweep plan` (`RunConfig::training_flops`, 6·10⁹ × Gflops ×
//! batch × steps). A budget buys a model of G Gflops `S = C / (6·10⁹·G)` images, that is
//! `S / batch` steps.
//!
//! # The exponent of the optimal size
//!
//! With `S = C/(c·G)`, c = 6·10⁹:
//! `Q(G) = E + A·G^(−α) + B·(c·G/C)^β`. Setting dQ/dG = 0 gives
//! `α·A·G^(−α) = β·B·(c/C)^β·G^β`, so
//! `G_opt = (α·A/(β·B))^(1/(α+β)) · (C/c)^(β/(α+β))` and `S_opt = C/(c·G_opt) ∝ C^(α/(α+β))`:
//! **k = β/(α+β)** in `G_opt ∝ C^k`, with β the exponent of images seen. Counting
//! training in steps at a fixed batch b instead (S = b·steps) only turns B into B·b^(−β),
//! and c only moves the prefactor, so k is the same in either unit
//! ([`ditbench_scaling::optimal_scaling`] is called with c).
//!
//! # Two estimates of k
//!
//! - The joint law's continuous optimum (Hoffmann et al. 2022's approach 3), with an
//!   interval over the bootstrap replicates.
//! - Per-budget parabolas (approach 2) through the **observed** isoFLOP slices: every
//!   run's quality interpolated (log-log, between its two evaluations around it) at the
//!   step where its training compute equals the budget, when it trained that far. The
//!   vertices are biased when a budget's sizes are not centred on its optimum; both are
//!   shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ditbench_common::flops;
use ditbench_scaling::{Candidate, Fit, FitError, FitOptions, Form, Interval, IsoFlopObservation, OptimalScaling, ParabolaScaling, ParamIntervals, Params, Point};
use serde::Serialize;
use toml::{Table, Value};

use crate::data::SweepData;
use crate::plot::{Axis, Figure, LegendEntry, Marker, Panel, Series, PALETTE};
use crate::ReportError;

/// Training FLOPs per image per forward Gflop (6·10⁹): compute = this × G × images.
pub fn flops_per_image_per_gflop() -> f64 {
    flops::train_per_image(1.0)
}

/// How budgets are counted, in words (printed and in summary.json).
pub const BUDGET_UNIT: &str = "training FLOPs: 6 × Gflops × 10⁹ × images seen (batch × steps), as the `train FLOPs` column of `ditbench sweep plan`";

/// The formula of the joint law in the plan's units.
pub const JOINT_FORMULA: &str = "Q = E + A·G^-α + B·S^-β (G: model Gflops per image, S: images seen)";

/// Why a plan or an isoFLOP spec could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IsoFlopError {
    /// Reading the store or the sweep failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The request cannot be planned; the message names the problem and what would work.
    #[error("{0}")]
    Plan(String),
}

fn plan_err(msg: impl Into<String>) -> IsoFlopError {
    IsoFlopError::Plan(msg.into())
}

/// A model the planner may choose: one (size, patch, batch) a sweep spec expands to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanCandidate {
    /// The model's name (e.g. "DiT-S/4 (d2 w32 h2)"), with the axis values that tell
    /// candidates of one name apart.
    pub label: String,
    /// Family size (S, B, L, XL).
    pub size: Option<String>,
    /// Patch size.
    pub patch: Option<i64>,
    /// Forward Gflops per image (the law's G).
    pub gflops: f64,
    /// Images per training step.
    pub batch: u64,
    /// The spec's axis values that make this model (size, patch, `model.*`,
    /// `train.batch_size`, `data.image_size` and every `[zip]` axis but `train.steps`),
    /// written back into an isoFLOP spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub axes: Vec<(String, Value)>,
}

/// Whether a spec's axis sets the model or its cost (so it is part of a candidate),
/// rather than a replicate axis (seed, learning rate) that an isoFLOP spec keeps crossed.
fn per_model_axis(key: &str, zip: &Table) -> bool {
    key != "train.steps"
        && (key == "size"
            || key == "patch"
            || key.starts_with("model.")
            || key == "train.batch_size"
            || key == "data.image_size"
            || zip.contains_key(key))
}

fn sub_table<'a>(doc: &'a Table, key: &str) -> Option<&'a Table> {
    doc.get(key).and_then(Value::as_table)
}

fn parse_spec(text: &str) -> Result<Table, IsoFlopError> {
    text.parse::<Table>().map_err(|e| plan_err(format!("the sweep spec is not valid TOML: {e}")))
}

/// The distinct models among the runs a spec expands to (`runs` carry every axis value
/// of their run): a replicate axis (seed, learning rate) does not make another
/// candidate. Labels are made unique with the axis values that differ.
pub fn distinct_candidates(spec_text: &str, runs: Vec<PlanCandidate>) -> Result<Vec<PlanCandidate>, IsoFlopError> {
    let doc = parse_spec(spec_text)?;
    let zip = sub_table(&doc, "zip").cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut out: Vec<PlanCandidate> = Vec::new();
    for mut c in runs {
        c.axes.retain(|(k, _)| per_model_axis(k, &zip));
        let key = format!("{:?}|{}|{}", c.axes, c.gflops.to_bits(), c.batch);
        if seen.insert(key) {
            out.push(c);
        }
    }
    // One name, several candidates (batch or width axes): name them by what differs.
    let mut by_label: BTreeMap<String, usize> = BTreeMap::new();
    for c in &out {
        *by_label.entry(c.label.clone()).or_default() += 1;
    }
    for c in &mut out {
        if by_label[&c.label] > 1 {
            let extra: Vec<String> = c.axes.iter().filter(|(k, _)| k != "size" && k != "patch").map(|(k, v)| format!("{k}={v}")).collect();
            let extra = if extra.is_empty() { format!("batch={}", c.batch) } else { extra.join(" ") };
            c.label = format!("{} [{extra}]", c.label);
        }
    }
    if out.is_empty() {
        return Err(plan_err("the sweep spec expands to no models to plan over"));
    }
    Ok(out)
}

/// The joint law's points of a sweep: every evaluation of every run with Gflops and a
/// batch size (x = Gflops, s = images seen), as [`crate::predict`] fits them.
pub fn joint_points(data: &SweepData) -> Result<Vec<Point>, IsoFlopError> {
    let Some(metric) = &data.metric else {
        return Err(plan_err(format!(
            "no evaluations in the store for sweep {:?} (no fid or FD_* rows): run the sweep first (`ditbench sweep run SPEC`) or pass --from-sweep NAME of a sweep that has them",
            data.sweep
        )));
    };
    let (_, rows, _) = crate::predict::points(data)?;
    let pts: Vec<Point> =
        rows.iter().filter_map(|r| Some(Point { group: r.run_id.clone(), x: r.gflops, s: Some(r.images), y: r.value? })).collect();
    if pts.is_empty() {
        return Err(plan_err(format!(
            "sweep {:?} has {metric} evaluations, but none of a run with Gflops and a batch size in the store, so none can be placed on the law",
            data.sweep
        )));
    }
    let mut steps: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for p in &pts {
        steps.entry(&p.group).or_default().insert(p.s.unwrap_or(0.0).to_bits());
    }
    if steps.values().all(|s| s.len() < 2) {
        return Err(plan_err(format!(
            "the joint law Q = E + A·G^-α + B·S^-β cannot be fitted on sweep {:?}: each of its {} runs was evaluated ({metric}) at one step only, so model size and training length cannot be told apart; set `[base.eval] every` in the spec so runs are evaluated during training, and run the sweep again",
            data.sweep,
            steps.len()
        )));
    }
    Ok(pts)
}

/// The joint law fitted on every evaluation of every run of the sweep.
pub fn joint_fit(data: &SweepData, opts: &FitOptions) -> Result<Fit, IsoFlopError> {
    let pts = joint_points(data)?;
    let runs: BTreeSet<&str> = pts.iter().map(|p| p.group.as_str()).collect();
    ditbench_scaling::fit(&pts, Form::Joint, opts).map_err(|e| {
        plan_err(format!("the joint law could not be fitted on {} evaluations of {} runs of sweep {:?}: {e}", pts.len(), runs.len(), data.sweep))
    })
}

/// One candidate trained to a budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidatePlan {
    pub label: String,
    pub size: Option<String>,
    pub patch: Option<i64>,
    pub gflops: f64,
    pub batch: u64,
    /// Images the budget buys: budget / (6·10⁹ × Gflops).
    pub images: f64,
    /// Training steps: images / batch, rounded, at least 1.
    pub steps: u64,
    /// The law's prediction after those images.
    pub predicted: f64,
    /// Predictive interval (what a new run would reach) at the fit's level.
    pub lo: f64,
    pub hi: f64,
    /// Interval of the law itself (parameter uncertainty only).
    pub mean_lo: f64,
    pub mean_hi: f64,
    /// What lies outside the fitted range: "Gflops", "images".
    pub extrapolated: Vec<&'static str>,
}

/// Every candidate at one budget (the isoFLOP row) and the best.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPlan {
    /// Training FLOPs.
    pub budget: f64,
    pub entries: Vec<CandidatePlan>,
    /// Index into `entries` of the least predicted quality.
    pub best: usize,
    /// Share of bootstrap replicates whose own best is `best` (1 without replicates).
    pub best_share: f64,
    pub replicates: usize,
    /// The joint law's continuous optimum at this budget and its interval, when the law
    /// has one.
    pub g_opt: Option<f64>,
    pub g_opt_interval: Option<Interval>,
    /// Extrapolations, in words.
    pub notes: Vec<String>,
}

impl BudgetPlan {
    /// The best candidate.
    pub fn best(&self) -> &CandidatePlan {
        &self.entries[self.best]
    }
}

/// The fitted law, as a plan or a report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitSummary {
    /// The sweep whose evaluations were fitted.
    pub sweep: String,
    pub metric: String,
    pub formula: String,
    pub n_points: usize,
    pub n_runs: usize,
    pub params: Params,
    pub intervals: ParamIntervals,
    pub level: f64,
    pub bootstrap: usize,
    /// Fitted range of model Gflops.
    pub gflops_range: Interval,
    /// Fitted range of images seen.
    pub images_range: Option<Interval>,
    /// Robust scale of the natural-log residuals.
    pub residual_scale: f64,
    pub warnings: Vec<String>,
}

impl FitSummary {
    fn new(data: &SweepData, fit: &Fit) -> Self {
        FitSummary {
            sweep: data.sweep.clone(),
            metric: data.metric.clone().unwrap_or_default(),
            formula: JOINT_FORMULA.into(),
            n_points: fit.n_points,
            n_runs: fit.n_groups,
            params: fit.params,
            intervals: fit.param_intervals.clone(),
            level: fit.level,
            bootstrap: fit.bootstrap,
            gflops_range: fit.x_range,
            images_range: fit.s_range,
            residual_scale: fit.residual_scale,
            warnings: fit.warnings.clone(),
        }
    }
}

/// A compute-optimal plan: the law, every budget's isoFLOP row, and `G_opt ∝ C^k`.
#[derive(Debug, Clone, Serialize)]
pub struct IsoFlopPlan {
    /// How budgets are counted.
    pub unit: String,
    pub fit: FitSummary,
    /// The models planned over, in the order of every budget's `entries`.
    pub candidates: Vec<PlanCandidate>,
    pub budgets: Vec<BudgetPlan>,
    /// The joint law's continuous optimum over the budgets (k = β/(α+β)).
    pub optimal: Option<OptimalScaling>,
    /// Why there is no continuous optimum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimal_missing: Option<String>,
}

/// Refuses budgets that are not positive finite FLOPs, by value.
pub fn check_budgets(budgets: &[f64]) -> Result<(), IsoFlopError> {
    if budgets.is_empty() {
        return Err(plan_err("no budget given: pass --budget FLOPS (training FLOPs, e.g. 1e15), once per budget"));
    }
    for &b in budgets {
        if !(b.is_finite() && b > 0.0) {
            return Err(plan_err(format!("budget {b} FLOPs is invalid: a budget must be a positive, finite number of training FLOPs (e.g. 1e15)")));
        }
    }
    Ok(())
}

fn outside(r: Option<&Interval>, v: f64) -> bool {
    r.is_some_and(|r| v < r.lo * (1.0 - 1e-9) || v > r.hi * (1.0 + 1e-9))
}

/// Every candidate trained to each budget under `fit` (a joint law with s = images
/// seen), the best per budget, and the continuous optimum.
pub fn plan_with_fit(fit: &Fit, summary: FitSummary, candidates: &[PlanCandidate], budgets: &[f64]) -> Result<IsoFlopPlan, IsoFlopError> {
    check_budgets(budgets)?;
    if candidates.is_empty() {
        return Err(plan_err("no candidate models to plan over"));
    }
    let c = flops_per_image_per_gflop();
    let cands: Vec<Candidate> =
        candidates.iter().map(|k| Candidate { label: k.label.clone(), gflops: k.gflops, flops_per_step: flops::train_per_image(k.gflops) }).collect();
    let (optimal, optimal_missing) = match ditbench_scaling::optimal_scaling(fit, c, budgets) {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut out = Vec::with_capacity(budgets.len());
    for (bi, &budget) in budgets.iter().enumerate() {
        // `plan` counts "steps" in the unit of its candidates' cost: images here.
        let p = ditbench_scaling::plan(fit, &cands, budget).map_err(|e| plan_err(format!("budget {budget:e}: {e}")))?;
        let mut notes = Vec::new();
        let entries: Vec<CandidatePlan> = p
            .entries
            .iter()
            .zip(candidates)
            .map(|(e, k)| {
                let images = e.steps;
                let mut extrapolated = Vec::new();
                if outside(Some(&fit.x_range), k.gflops) {
                    extrapolated.push("Gflops");
                    notes.push(format!(
                        "{}: {} Gflops lies outside the fitted range [{}, {}] Gflops: extrapolated",
                        k.label,
                        fmt_num(k.gflops),
                        fmt_num(fit.x_range.lo),
                        fmt_num(fit.x_range.hi)
                    ));
                }
                if outside(fit.s_range.as_ref(), images) {
                    extrapolated.push("images");
                    let r = fit.s_range.unwrap_or(Interval::point(f64::NAN));
                    notes.push(format!(
                        "{}: {} images lies outside the fitted range [{}, {}] images: extrapolated",
                        k.label,
                        fmt_num(images),
                        fmt_num(r.lo),
                        fmt_num(r.hi)
                    ));
                }
                CandidatePlan {
                    label: k.label.clone(),
                    size: k.size.clone(),
                    patch: k.patch,
                    gflops: k.gflops,
                    batch: k.batch,
                    images,
                    steps: (images / k.batch.max(1) as f64).round().max(1.0) as u64,
                    predicted: e.prediction.value,
                    lo: e.prediction.interval.lo,
                    hi: e.prediction.interval.hi,
                    mean_lo: e.prediction.mean_interval.lo,
                    mean_hi: e.prediction.mean_interval.hi,
                    extrapolated,
                }
            })
            .collect();
        let (g_opt, g_opt_interval) = match &optimal {
            Some(o) => (Some(o.optima[bi].1), Some(o.optima[bi].2)),
            None => (None, None),
        };
        out.push(BudgetPlan { budget, entries, best: p.best, best_share: p.best_share, replicates: p.replicates, g_opt, g_opt_interval, notes });
    }
    Ok(IsoFlopPlan { unit: BUDGET_UNIT.into(), fit: summary, candidates: candidates.to_vec(), budgets: out, optimal, optimal_missing })
}

/// `ditbench sweep plan --budget`: reads the sweep `sweep` from the store, fits the
/// joint law on all its evaluations, and plans `candidates` at every budget.
pub fn plan_sweep(
    store: &Path,
    sweep: &str,
    metric: Option<&str>,
    candidates: &[PlanCandidate],
    budgets: &[f64],
    opts: &FitOptions,
) -> Result<IsoFlopPlan, IsoFlopError> {
    check_budgets(budgets)?;
    if !store.exists() {
        return Err(plan_err(format!(
            "no evaluations in the store for sweep {sweep:?}: there is no run store at {}; run the sweep first (`ditbench sweep run SPEC`) or point --store at the store that has it",
            store.display()
        )));
    }
    let data = match crate::data::load(store, sweep, metric) {
        Ok(d) => d,
        Err(ReportError::Query(e @ ditbench_query::QueryError::UnknownSweep { .. })) => {
            return Err(plan_err(format!(
                "no evaluations in the store for sweep {sweep:?} ({e}): run the sweep first (`ditbench sweep run SPEC`) or pass --from-sweep NAME"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let fit = joint_fit(&data, opts)?;
    plan_with_fit(&fit, FitSummary::new(&data, &fit), candidates, budgets)
}

/// 4 significant digits in the range people read as plain numbers, else scientific.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        let d = if a == 0.0 { 0 } else { (3 - a.log10().floor() as i32).max(0) as usize };
        format!("{v:.d$}")
    }
}

fn fmt_iv(iv: &Interval) -> String {
    format!("[{}, {}]", fmt_num(iv.lo), fmt_num(iv.hi))
}

/// A plan as people read it: the law, then per budget the best choice and the whole
/// isoFLOP row, then `G_opt ∝ C^k`.
pub fn format_plan(plan: &IsoFlopPlan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let f = &plan.fit;
    let level = (f.level * 100.0).round();
    let _ = writeln!(
        s,
        "compute-optimal plan from sweep {} ({}): joint law fitted on {} evaluations of {} runs",
        f.sweep, f.metric, f.n_points, f.n_runs
    );
    let _ = writeln!(s, "  law: {}", f.formula);
    let p = &f.params;
    let iv = &f.intervals;
    let pair = |name: &str, v: Option<f64>, i: Option<&Interval>| match (v, i) {
        (Some(v), Some(i)) if f.bootstrap > 0 => format!("{name} = {} {}", fmt_num(v), fmt_iv(i)),
        (Some(v), _) => format!("{name} = {}", fmt_num(v)),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "  {}, {}, {}, {}, {} ({level}% intervals, {} bootstrap replicates over runs)",
        pair("E", Some(p.e), Some(&iv.e)),
        pair("A", Some(p.a), Some(&iv.a)),
        pair("α", Some(p.alpha), Some(&iv.alpha)),
        pair("B", p.b, iv.b.as_ref()),
        pair("β", p.beta, iv.beta.as_ref()),
        f.bootstrap
    );
    let _ = writeln!(
        s,
        "  fitted on Gflops {} and images {}",
        fmt_iv(&f.gflops_range),
        f.images_range.as_ref().map_or("—".into(), fmt_iv)
    );
    for w in &f.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    let _ = writeln!(s, "  budgets in {}", plan.unit);
    for b in &plan.budgets {
        let best = b.best();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "budget {:.3e} FLOPs: best {} ({} Gflops), {} steps at batch {} ({} images): predicted {} {}, {level}% interval {}; {}",
            b.budget,
            best.label,
            fmt_num(best.gflops),
            best.steps,
            best.batch,
            fmt_num(best.images),
            f.metric,
            fmt_num(best.predicted),
            fmt_iv(&Interval { lo: best.lo, hi: best.hi }),
            if b.replicates > 0 {
                format!("picked by {:.0}% of {} bootstrap replicates", b.best_share * 100.0, b.replicates)
            } else {
                "no bootstrap replicates to say how sure the choice is".into()
            }
        );
        let _ = writeln!(
            s,
            "  {:<2}{:<28} {:>9} {:>6} {:>9} {:>10} {:>10} {:>23}  extrapolated",
            "", "candidate", "Gflops", "batch", "steps", "images", "predicted", format!("{level}% interval")
        );
        for (i, e) in b.entries.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<2}{:<28} {:>9} {:>6} {:>9} {:>10} {:>10} {:>23}  {}",
                if i == b.best { "*" } else { "" },
                e.label,
                fmt_num(e.gflops),
                e.batch,
                e.steps,
                fmt_num(e.images),
                fmt_num(e.predicted),
                fmt_iv(&Interval { lo: e.lo, hi: e.hi }),
                e.extrapolated.join(", ")
            );
        }
        if let (Some(g), Some(i)) = (b.g_opt, b.g_opt_interval) {
            let _ = writeln!(s, "  continuous optimum of the law: G_opt = {} Gflops {}", fmt_num(g), fmt_iv(&i));
        }
        for n in &b.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    let _ = writeln!(s);
    match (&plan.optimal, &plan.optimal_missing) {
        (Some(o), _) => {
            let _ = writeln!(
                s,
                "compute-optimal size: G_opt ∝ C^k with k = β/(α+β) = {} {} ({:.0}% over {} replicates); images S_opt ∝ C^(1-k)",
                fmt_num(o.exponent),
                fmt_iv(&o.interval),
                o.level * 100.0,
                f.bootstrap.saturating_sub(o.degenerate_replicates)
            );
            for n in &o.notes {
                let _ = writeln!(s, "  note: {n}");
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(s, "compute-optimal size: none ({why})");
        }
        (None, None) => {}
    }
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
}

/// The candidates of each budget an isoFLOP spec trains: the `n` closest in ln G to the
/// law's continuous optimum (the best candidate's G when the law has none), by
/// increasing Gflops.
pub fn choose_models(plan: &IsoFlopPlan, n: usize) -> Vec<(f64, Vec<usize>)> {
    plan.budgets
        .iter()
        .map(|b| {
            let centre = b.g_opt.unwrap_or(b.best().gflops).ln();
            let mut idx: Vec<usize> = (0..b.entries.len()).collect();
            idx.sort_by(|&i, &j| (b.entries[i].gflops.ln() - centre).abs().total_cmp(&(b.entries[j].gflops.ln() - centre).abs()).then(i.cmp(&j)));
            idx.truncate(n);
            idx.sort_by(|&i, &j| b.entries[i].gflops.total_cmp(&b.entries[j].gflops).then(i.cmp(&j)));
            (b.budget, idx)
        })
        .collect()
}

/// How an isoFLOP spec was made, for its header.
#[derive(Debug, Clone)]
pub struct SpecMade {
    /// The command line that made it.
    pub command: String,
    /// Unix seconds.
    pub created_at: f64,
    /// The source spec's path, as given.
    pub source: String,
}

/// One run of a written isoFLOP spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecRun {
    pub budget: f64,
    pub label: String,
    pub gflops: f64,
    pub batch: u64,
    pub steps: u64,
}

/// A written isoFLOP spec.
#[derive(Debug, Clone)]
pub struct IsoFlopSpec {
    /// Its sweep name (`<source name>-isoflop`).
    pub name: String,
    /// The TOML text, header comment first.
    pub text: String,
    /// Its model points, budget by budget (each crossed with the source's replicate axes).
    pub runs: Vec<SpecRun>,
    /// What was changed from the source, in words.
    pub notes: Vec<String>,
}

/// UTC date of Unix seconds, `YYYY-MM-DD` (Howard Hinnant's `civil_from_days`).
fn utc_date(secs: f64) -> String {
    let z = (secs.max(0.0) as i64).div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}-{d:02}", yoe + era * 400 + i64::from(m <= 2))
}

/// Removes `train.steps` from an override's keys, however written (`"train.steps" = …`
/// or `train = { steps = … }`): the isoFLOP spec sets every run's steps.
fn drop_steps(t: &mut Table) -> bool {
    let mut dropped = t.remove("train.steps").is_some();
    if let Some(Value::Table(train)) = t.get_mut("train") {
        dropped |= train.remove("steps").is_some();
        if train.is_empty() {
            t.remove("train");
        }
    }
    dropped
}

fn value_matches(value: &Value, written: &str) -> bool {
    match value {
        Value::String(s) => s == written,
        other => other.to_string() == written,
    }
}

/// The isoFLOP sweep spec of a plan: the source spec's base, family, launcher and
/// overrides under the name `<name>-isoflop`, and a `[zip]` that trains, for each
/// budget, the `models_per_budget` candidates closest in ln G to the budget's optimum
/// ([`choose_models`]), each to that budget: `train.steps = round(budget / (6·10⁹ ×
/// Gflops × batch))`, at least 1. Replicate axes of the source (seed, learning rate)
/// stay crossed with it.
pub fn isoflop_spec(plan: &IsoFlopPlan, source_text: &str, models_per_budget: usize, made: &SpecMade) -> Result<IsoFlopSpec, IsoFlopError> {
    if !(4..=6).contains(&models_per_budget) {
        return Err(plan_err(format!(
            "--models-per-budget {models_per_budget}: an isoFLOP profile trains 4 to 6 models per budget (a parabola needs 3 sizes; more than 6 spends the budget far from the optimum)"
        )));
    }
    let src = parse_spec(source_text)?;
    let Some(name) = src.get("name").and_then(Value::as_str) else {
        return Err(plan_err("the sweep spec has no top-level `name = \"...\"`"));
    };
    let new_name = format!("{name}-isoflop");
    if let Some(rnd) = sub_table(&src, "random").and_then(|r| sub_table(r, "axes")) {
        let zip = Table::new();
        if let Some(k) = rnd.keys().find(|k| per_model_axis(k, &zip) || *k == "train.steps") {
            return Err(plan_err(format!(
                "[random.axes] `{k}` draws the model, its batch or its steps at random; an isoFLOP spec sets them itself: write the spec without that random axis"
            )));
        }
    }
    let mut notes = Vec::new();
    // Rows of the [zip]: (candidate index, steps), budget by budget.
    let mut runs: Vec<SpecRun> = Vec::new();
    let mut rows: Vec<(usize, u64)> = Vec::new();
    for (bi, (budget, idx)) in choose_models(plan, models_per_budget).into_iter().enumerate() {
        let b = &plan.budgets[bi];
        if idx.len() < models_per_budget {
            notes.push(format!("budget {budget:e}: only {} candidate models, all trained", idx.len()));
        }
        for i in idx {
            let e = &b.entries[i];
            // Two budgets close enough to round to the same steps would make one run twice.
            if rows.contains(&(i, e.steps)) {
                notes.push(format!("budget {budget:e}: {} at {} steps is trained for an earlier budget already", e.label, e.steps));
                continue;
            }
            rows.push((i, e.steps));
            runs.push(SpecRun { budget, label: e.label.clone(), gflops: e.gflops, batch: e.batch, steps: e.steps });
        }
    }
    if rows.is_empty() {
        return Err(plan_err("the plan has no budgets to write"));
    }
    // [zip]: the model axes of each row's candidate, then its steps.
    let mut keys: Vec<String> = Vec::new();
    for &(i, _) in &rows {
        for (k, _) in &plan.candidates[i].axes {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut zip = Table::new();
    for k in &keys {
        let mut col = Vec::with_capacity(rows.len());
        for &(i, _) in &rows {
            let c = &plan.candidates[i];
            let Some((_, v)) = c.axes.iter().find(|(a, _)| a == k) else {
                return Err(plan_err(format!("candidate {} has no value for the axis `{k}` that other candidates have", c.label)));
            };
            col.push(v.clone());
        }
        zip.insert(k.clone(), Value::Array(col));
    }
    zip.insert("train.steps".into(), Value::Array(rows.iter().map(|&(_, s)| Value::Integer(s.min(i64::MAX as u64) as i64)).collect()));
    // [axes]: the source's replicate axes, still crossed (seeds, learning rates).
    let src_zip = sub_table(&src, "zip").cloned().unwrap_or_default();
    let mut axes = Table::new();
    for (k, v) in sub_table(&src, "axes").into_iter().flatten() {
        if per_model_axis(k, &src_zip) || k == "train.steps" {
            continue;
        }
        axes.insert(k.clone(), v.clone());
    }
    if src_zip.keys().any(|k| k == "train.steps") || sub_table(&src, "axes").is_some_and(|a| a.contains_key("train.steps")) {
        notes.push("the source's `train.steps` axis is replaced by each run's budget".into());
    }
    // [overrides]: kept for the axes and values that are still there, without steps.
    let value_sets: BTreeMap<&str, Vec<&Value>> = zip
        .iter()
        .chain(axes.iter())
        .map(|(k, v)| (k.as_str(), v.as_array().map(|a| a.iter().collect()).unwrap_or_default()))
        .collect();
    let mut overrides = Table::new();
    for (axis, by_value) in sub_table(&src, "overrides").into_iter().flatten() {
        let (Some(values), Some(by_value)) = (value_sets.get(axis.as_str()), by_value.as_table()) else { continue };
        let mut kept = Table::new();
        for (written, keys) in by_value {
            if !values.iter().any(|v| value_matches(v, written)) {
                continue;
            }
            let Some(t) = keys.as_table() else { continue };
            let mut t = t.clone();
            if drop_steps(&mut t) {
                notes.push(format!("[overrides.{axis}.{written}] sets train.steps; left out (each run's steps come from its budget)"));
            }
            if !t.is_empty() {
                kept.insert(written.clone(), Value::Table(t));
            }
        }
        if !kept.is_empty() {
            overrides.insert(axis.clone(), Value::Table(kept));
        }
    }
    let mut doc = Table::new();
    doc.insert("name".into(), Value::String(new_name.clone()));
    doc.insert(
        "description".into(),
        Value::String(format!(
            "isoFLOP profiles of sweep {name}: {} models per budget at {} budgets, each trained to its budget",
            models_per_budget,
            plan.budgets.len()
        )),
    );
    for (k, v) in &src {
        if !matches!(k.as_str(), "name" | "description" | "axes" | "zip" | "overrides") {
            doc.insert(k.clone(), v.clone());
        }
    }
    if !axes.is_empty() {
        doc.insert("axes".into(), Value::Table(axes));
    }
    doc.insert("zip".into(), Value::Table(zip));
    if !overrides.is_empty() {
        doc.insert("overrides".into(), Value::Table(overrides));
    }
    let body = toml::to_string(&doc).map_err(|e| plan_err(format!("writing the isoFLOP spec as TOML: {e}")))?;

    let f = &plan.fit;
    let p = &f.params;
    let mut h = String::new();
    {
        use std::fmt::Write;
        let _ = writeln!(h, "# isoFLOP sweep written by `{}` on {} (UTC), from {}.", made.command, utc_date(made.created_at), made.source);
        let _ = writeln!(
            h,
            "# Law: {}, fitted on {} evaluations of {} runs of sweep {} ({}):",
            f.formula, f.n_points, f.n_runs, f.sweep, f.metric
        );
        let _ = writeln!(
            h,
            "#   E = {}, A = {}, α = {}, B = {}, β = {}.",
            fmt_num(p.e),
            fmt_num(p.a),
            fmt_num(p.alpha),
            p.b.map_or("—".into(), fmt_num),
            p.beta.map_or("—".into(), fmt_num)
        );
        let _ = writeln!(h, "# Budgets in {}.", plan.unit);
        let _ = writeln!(
            h,
            "# For each budget, the {models_per_budget} candidate models of {} closest in ln G to the law's optimum G_opt,",
            made.source
        );
        h.push_str("# each trained to the budget: train.steps = round(budget / (6e9 × Gflops × batch)), at least 1.
");
        for b in &plan.budgets {
            let models: Vec<String> = runs.iter().filter(|r| r.budget == b.budget).map(|r| format!("{} × {}", r.label, r.steps)).collect();
            let _ = writeln!(
                h,
                "#   {:.3e} FLOPs: G_opt {} Gflops; best predicted {}; trains {}",
                b.budget,
                b.g_opt.map_or("—".into(), fmt_num),
                b.best().label,
                models.join(", ")
            );
        }
        for n in &notes {
            let _ = writeln!(h, "# Note: {n}");
        }
        h.push('\n');
    }
    Ok(IsoFlopSpec { name: new_name, text: h + &body, runs, notes })
}

/// Writes a spec to `path`, refusing to replace an existing file unless `force`.
pub fn save_spec(path: &Path, text: &str, force: bool) -> Result<(), IsoFlopError> {
    if path.exists() && !force {
        return Err(plan_err(format!("{} exists; pass --force to overwrite it, or choose another path", path.display())));
    }
    ditbench_common::write_atomic(path, text.as_bytes()).map_err(|e| plan_err(format!("writing {}: {e}", path.display())))
}

// ------------------------------------------------------------------------ the report

/// The report's isoFLOP section (`isoflop` in summary.json): a joint law fitted on every
/// evaluation of every run, planned at budgets spanning the sweep's own computes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IsoFlopSection {
    /// Why there is no plan (no quality metric, one evaluation per run, a failed fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_made: Option<String>,
    /// How budgets are counted.
    pub unit: String,
    /// The budgets: 5 log-spaced from the smallest run's final training compute to 10×
    /// the largest.
    pub budgets: Vec<f64>,
    /// The law fitted on all runs.
    pub fit: Option<FitSummary>,
    /// Per budget, the best of the sweep's models trained to it.
    pub best: Vec<BestAtBudget>,
    /// k of `G_opt ∝ C^k` from the joint law's continuous optimum, β/(α+β).
    pub joint: Option<ExponentEstimate>,
    /// Why there is no joint estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joint_missing: Option<String>,
    /// k from per-budget parabolas through the observed isoFLOP slices.
    pub parabola: Option<ExponentEstimate>,
    /// Why there is no parabola estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parabola_missing: Option<String>,
    /// Each run's quality interpolated where its training compute equals a budget.
    pub slices: Vec<IsoFlopObservation>,
    pub notes: Vec<String>,
}

/// The best model at one budget.
#[derive(Debug, Clone, Serialize)]
pub struct BestAtBudget {
    /// Training FLOPs.
    pub budget: f64,
    pub label: String,
    pub gflops: f64,
    pub batch: u64,
    pub steps: u64,
    pub images: f64,
    pub predicted: f64,
    /// Predictive interval.
    pub lo: f64,
    pub hi: f64,
    /// Share of bootstrap replicates picking the same model.
    pub best_share: f64,
    /// The joint law's continuous optimum and its interval.
    pub g_opt: Option<f64>,
    pub g_opt_interval: Option<Interval>,
    /// The parabola vertex at this budget, when the budget has one.
    pub g_opt_parabola: Option<f64>,
    /// Runs with an observed slice at this budget.
    pub observed_runs: usize,
}

/// One estimate of k in `G_opt ∝ C^k`.
#[derive(Debug, Clone, Serialize)]
pub struct ExponentEstimate {
    /// "joint law, β/(α+β)" or "per-budget parabolas".
    pub method: String,
    pub k: f64,
    /// Bootstrap interval (none when too few replicates could be fitted).
    pub interval: Option<Interval>,
    pub level: f64,
    /// (C, G_opt) per budget.
    pub optima: Vec<(f64, f64)>,
    pub notes: Vec<String>,
}

/// The sweep's distinct models (Gflops, batch) as planning candidates.
fn sweep_candidates(data: &SweepData) -> Vec<PlanCandidate> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in &data.runs {
        let (Some(g), Some(b)) = (r.gflops, r.batch_size) else { continue };
        if !(g > 0.0 && b > 0 && seen.insert((g.to_bits(), b))) {
            continue;
        }
        out.push(PlanCandidate {
            label: r.model.clone().unwrap_or_else(|| r.id.clone()),
            size: r.size.clone(),
            patch: r.patch,
            gflops: g,
            batch: b as u64,
            axes: Vec::new(),
        });
    }
    out
}

/// A run's final training compute (FLOPs): its planned steps, else its last evaluation.
fn final_compute(r: &crate::data::RunInfo) -> Option<f64> {
    let (g, b) = (r.gflops?, r.batch_size?);
    let step = r.steps.or_else(|| r.quality.last().map(|q| q.0)).filter(|&s| s > 0)?;
    Some(flops::train(g, b as f64, step as f64)).filter(|c| c.is_finite() && *c > 0.0)
}

fn geomspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n < 2 || hi <= lo {
        return vec![lo];
    }
    let (a, b) = (lo.ln(), hi.ln());
    (0..n).map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp()).collect()
}

/// The report's budgets: 5 log-spaced from the smallest run's final training compute to
/// 10× the largest one's.
pub fn report_budgets(data: &SweepData) -> Vec<f64> {
    let finals: Vec<f64> = data.runs.iter().filter_map(final_compute).collect();
    if finals.is_empty() {
        return Vec::new();
    }
    let lo = finals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finals.iter().copied().fold(0.0, f64::max) * 10.0;
    geomspace(lo, hi, 5)
}

/// The value of a quality curve at (fractional) step `t`, interpolated linearly in
/// (ln step, ln value) between the evaluations around it; `None` outside the evaluated
/// steps (a run that did not train that far is not extrapolated).
pub fn interpolate_loglog(curve: &[(i64, f64)], t: f64) -> Option<f64> {
    let q: Vec<(f64, f64)> = curve.iter().filter(|p| p.0 > 0 && p.1.is_finite() && p.1 > 0.0).map(|p| (p.0 as f64, p.1)).collect();
    let (first, last) = (*q.first()?, *q.last()?);
    if !(t.is_finite() && t > 0.0) || t < first.0 * (1.0 - 1e-9) || t > last.0 * (1.0 + 1e-9) {
        return None;
    }
    for w in q.windows(2) {
        let ((s0, y0), (s1, y1)) = (w[0], w[1]);
        if t <= s1 {
            let u = ((t.ln() - s0.ln()) / (s1.ln() - s0.ln())).clamp(0.0, 1.0);
            return Some((y0.ln() + u * (y1.ln() - y0.ln())).exp());
        }
    }
    Some(last.1)
}

/// The observed isoFLOP slices: every run's quality where its training compute equals
/// each budget (when it trained that far).
pub fn observed_slices(data: &SweepData, budgets: &[f64]) -> Vec<IsoFlopObservation> {
    let mut out = Vec::new();
    for &c in budgets {
        for r in &data.runs {
            let (Some(g), Some(b)) = (r.gflops, r.batch_size) else { continue };
            if !(g > 0.0 && b > 0) {
                continue;
            }
            let step = c / (flops::train_per_image(g) * b as f64);
            if let Some(y) = interpolate_loglog(&r.quality, step) {
                out.push(IsoFlopObservation { budget: c, group: r.id.clone(), gflops: g, y });
            }
        }
    }
    out
}

/// Hoffmann et al.'s approach 2 on the observed slices: the budgets with at least 3
/// model sizes, leaving out (with a note) a budget whose parabola cannot be fitted.
fn parabola_of(slices: &[IsoFlopObservation], opts: &FitOptions) -> Result<(ParabolaScaling, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut sizes: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for o in slices {
        sizes.entry(o.budget.to_bits()).or_default().insert(o.gflops.to_bits());
    }
    let mut keep: BTreeSet<u64> = sizes.iter().filter(|(_, s)| s.len() >= 3).map(|(b, _)| *b).collect();
    for (b, s) in &sizes {
        if s.len() < 3 {
            notes.push(format!("budget {:.3e}: {} model size(s) observed there, a parabola needs 3", f64::from_bits(*b), s.len()));
        }
    }
    loop {
        if keep.len() < 2 {
            return Err(format!(
                "the observed isoFLOP slices give {} budget(s) whose model sizes bracket a minimum, and a line through the vertices needs 2 (train sizes whose computes overlap around their optimum, e.g. an isoFLOP sweep from `ditbench sweep plan --budget … --write-isoflop`){}",
                keep.len(),
                if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
            ));
        }
        let obs: Vec<IsoFlopObservation> = slices.iter().filter(|o| keep.contains(&o.budget.to_bits())).cloned().collect();
        match ditbench_scaling::parabola_scaling(&obs, opts) {
            Ok(p) => {
                // Approach 2 locates a minimum that a budget's sizes bracket; a vertex
                // outside them extrapolates the parabola (a slice that only rises or
                // only falls) and would decide the line on its own.
                let outside: Vec<(f64, f64)> = p
                    .per_budget
                    .iter()
                    .filter(|(c, g)| {
                        let gs = obs.iter().filter(|o| o.budget == *c).map(|o| o.gflops);
                        let (lo, hi) = gs.fold((f64::INFINITY, 0f64), |(a, b), x| (a.min(x), b.max(x)));
                        *g < lo || *g > hi
                    })
                    .copied()
                    .collect();
                if outside.is_empty() {
                    return Ok((p, notes));
                }
                for (c, g) in outside {
                    notes.push(format!(
                        "budget {c:.3e} left out: its parabola's vertex G_opt = {} Gflops lies outside the model sizes observed there, which do not bracket the optimum",
                        fmt_num(g)
                    ));
                    keep.remove(&c.to_bits());
                }
            }
            Err(e @ (FitError::DownwardParabola { budget, .. } | FitError::TooFewSizes { budget, .. })) => {
                notes.push(format!("left out: {e}"));
                keep.retain(|b| f64::from_bits(*b) != budget);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The report's isoFLOP section and figure. A sweep whose joint law cannot be fitted
/// gets the reason, not an error.
pub fn report_section(data: &SweepData, opts: &FitOptions) -> Result<(IsoFlopSection, Option<Figure>), ReportError> {
    let mut sec = IsoFlopSection { unit: BUDGET_UNIT.into(), ..Default::default() };
    if data.metric.is_none() {
        sec.not_made = Some("no quality metric: no run has an fid or FD_* evaluation".into());
        return Ok((sec, None));
    }
    let fit = match joint_fit(data, opts) {
        Ok(f) => f,
        Err(IsoFlopError::Plan(why)) => {
            sec.not_made = Some(why);
            return Ok((sec, None));
        }
        Err(IsoFlopError::Report(e)) => return Err(e),
    };
    let budgets = report_budgets(data);
    let candidates = sweep_candidates(data);
    let plan = match plan_with_fit(&fit, FitSummary::new(data, &fit), &candidates, &budgets) {
        Ok(p) => p,
        Err(IsoFlopError::Plan(why)) => {
            sec.not_made = Some(why);
            return Ok((sec, None));
        }
        Err(IsoFlopError::Report(e)) => return Err(e),
    };
    let slices = observed_slices(data, &budgets);
    let parabola = parabola_of(&slices, opts);
    sec.budgets = budgets.clone();
    sec.fit = Some(plan.fit.clone());
    sec.best = plan
        .budgets
        .iter()
        .map(|b| {
            let e = b.best();
            BestAtBudget {
                budget: b.budget,
                label: e.label.clone(),
                gflops: e.gflops,
                batch: e.batch,
                steps: e.steps,
                images: e.images,
                predicted: e.predicted,
                lo: e.lo,
                hi: e.hi,
                best_share: b.best_share,
                g_opt: b.g_opt,
                g_opt_interval: b.g_opt_interval,
                g_opt_parabola: parabola.as_ref().ok().and_then(|(p, _)| p.per_budget.iter().find(|(c, _)| *c == b.budget).map(|(_, g)| *g)),
                observed_runs: slices.iter().filter(|o| o.budget == b.budget).count(),
            }
        })
        .collect();
    match (&plan.optimal, &plan.optimal_missing) {
        (Some(o), _) => {
            sec.joint = Some(ExponentEstimate {
                method: "joint law, k = β/(α+β)".into(),
                k: o.exponent,
                interval: (fit.bootstrap > 0 && o.degenerate_replicates < fit.replicates.len()).then_some(o.interval),
                level: o.level,
                optima: o.optima.iter().map(|(c, g, _)| (*c, *g)).collect(),
                notes: o.notes.clone(),
            })
        }
        (None, why) => sec.joint_missing = Some(why.clone().unwrap_or_else(|| "no continuous optimum".into())),
    }
    match &parabola {
        Ok((p, notes)) => {
            sec.parabola = Some(ExponentEstimate {
                method: "per-budget parabolas of ln Q in ln G through the observed slices".into(),
                k: p.exponent,
                interval: p.interval,
                level: p.level,
                optima: p.per_budget.clone(),
                notes: notes.iter().chain(&p.notes).cloned().collect(),
            });
        }
        Err(why) => sec.parabola_missing = Some(why.clone()),
    }
    for b in &plan.budgets {
        sec.notes.extend(b.notes.iter().map(|n| format!("budget {:.3e}: {n}", b.budget)));
    }
    sec.slices = slices;
    let fig = fig_isoflop(data, &fit, &plan, &sec, parabola.as_ref().ok().map(|(p, _)| p));
    Ok((sec, Some(fig)))
}

fn budget_color(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

/// The report's figure `isoflop`. Left: predicted quality against model Gflops at each
/// budget (one line per budget, the sweep's models as hollow markers, the best filled,
/// the law's continuous optimum as a diamond) and the observed slices (triangles).
/// Right: G_opt against C, the joint law's optimum with its band and the parabola
/// vertices with their line.
fn fig_isoflop(data: &SweepData, fit: &Fit, plan: &IsoFlopPlan, sec: &IsoFlopSection, parabola: Option<&ParabolaScaling>) -> Figure {
    let metric = data.metric.as_deref().map(crate::build::metric_label).unwrap_or_else(|| "quality".into());
    let c = flops_per_image_per_gflop();
    let gs: Vec<f64> = plan.candidates.iter().map(|k| k.gflops).collect();
    let (gmin, gmax) = gs.iter().fold((f64::INFINITY, 0f64), |(a, b), &g| (a.min(g), b.max(g)));
    let grid = geomspace(gmin / 1.5, gmax * 1.5, 60);
    let mut left = Vec::new();
    let mut legend = vec![LegendEntry::heading("budget (training FLOPs)")];
    for (i, b) in plan.budgets.iter().enumerate() {
        let col = budget_color(i);
        let curve: Vec<(f64, f64)> = grid.iter().map(|&g| (g, fit.params.eval(g, Some(b.budget / (c * g))))).collect();
        left.push(Series::Line { points: curve, color: col, alpha: 0.85, width: 2, dashed: false });
        left.push(Series::Points { points: b.entries.iter().map(|e| (e.gflops, e.predicted)).collect(), color: col, marker: Marker::Circle, filled: false, size: 3 });
        left.push(Series::Points { points: vec![(b.best().gflops, b.best().predicted)], color: col, marker: Marker::Circle, filled: true, size: 5 });
        if let Some(g) = b.g_opt.filter(|g| *g >= gmin / 1.5 && *g <= gmax * 1.5) {
            left.push(Series::Points { points: vec![(g, fit.params.eval(g, Some(b.budget / (c * g))))], color: col, marker: Marker::Diamond, filled: false, size: 6 });
        }
        let obs: Vec<(f64, f64)> = sec.slices.iter().filter(|o| o.budget == b.budget).map(|o| (o.gflops, o.y)).collect();
        if !obs.is_empty() {
            left.push(Series::Points { points: obs, color: col, marker: Marker::Triangle, filled: true, size: 4 });
        }
        legend.push(LegendEntry::line(format!("C = {:.2e}", b.budget), col, false));
    }
    let grey = (90, 90, 90);
    legend.push(LegendEntry::heading("left"));
    legend.push(LegendEntry::marker("a model of the sweep (law)", grey, Marker::Circle, false));
    legend.push(LegendEntry::marker("best of them", grey, Marker::Circle, true));
    legend.push(LegendEntry::marker("law's optimum G_opt", grey, Marker::Diamond, false));
    legend.push(LegendEntry::marker("observed slice", grey, Marker::Triangle, true));

    let mut right = Vec::new();
    let (clo, chi) = (plan.budgets.first().map_or(1.0, |b| b.budget), plan.budgets.last().map_or(1.0, |b| b.budget));
    let dense = geomspace(clo, chi, 40);
    let black = (0, 0, 0);
    if let Ok(o) = ditbench_scaling::optimal_scaling(fit, c, &dense) {
        if fit.bootstrap > 0 {
            right.push(Series::Band { points: o.optima.iter().map(|(c, _, i)| (*c, i.lo, i.hi)).collect(), color: black, alpha: 0.1 });
        }
        right.push(Series::Line { points: o.optima.iter().map(|(c, g, _)| (*c, *g)).collect(), color: black, alpha: 0.85, width: 2, dashed: false });
        right.push(Series::Points { points: plan.budgets.iter().filter_map(|b| Some((b.budget, b.g_opt?))).collect(), color: black, marker: Marker::Circle, filled: true, size: 4 });
        legend.push(LegendEntry::heading("right"));
        legend.push(LegendEntry::line(format!("joint law, {:.0}% band", fit.level * 100.0), black, false));
    }
    let red = PALETTE[3];
    if let Some(p) = parabola {
        let line: Vec<(f64, f64)> = dense.iter().map(|&cc| (cc, (p.intercept + p.exponent * cc.ln()).exp())).collect();
        right.push(Series::Line { points: line, color: red, alpha: 0.85, width: 2, dashed: true });
        right.push(Series::Points { points: p.per_budget.clone(), color: red, marker: Marker::Diamond, filled: true, size: 5 });
        if !legend.iter().any(|l| l.heading && l.label == "right") {
            legend.push(LegendEntry::heading("right"));
        }
        legend.push(LegendEntry::marker("parabola vertex", red, Marker::Diamond, true));
        legend.push(LegendEntry::line("parabola line", red, true));
    }
    let k_text = |e: Option<&ExponentEstimate>, missing: Option<&String>| match e {
        Some(e) => match e.interval {
            Some(i) => format!("{:.3} [{:.3}, {:.3}]", e.k, i.lo, i.hi),
            None => format!("{:.3}", e.k),
        },
        None => if missing.is_some() { "none".into() } else { "—".into() },
    };
    Figure {
        name: "isoflop".into(),
        title: format!("isoFLOP profiles and the compute-optimal model size ({metric}, joint law fitted on all runs)"),
        panels: vec![
            Panel {
                title: Some(format!("{metric} at fixed training compute")),
                x: Axis { label: "model Gflops per image".into(), log: true },
                y: Axis { label: metric.clone(), log: true },
                series: left,
            },
            Panel {
                title: Some(format!(
                    // The embedded font has no ∝.
                    "G_opt ~ C^k: joint {}, parabola {}",
                    k_text(sec.joint.as_ref(), sec.joint_missing.as_ref()),
                    k_text(sec.parabola.as_ref(), sec.parabola_missing.as_ref())
                )),
                x: Axis { label: "training compute C, FLOPs (6 × Gflops × 10⁹ × images)".into(), log: true },
                y: Axis { label: "compute-optimal model Gflops".into(), log: true },
                series: right,
            },
        ],
        columns: 2,
        legend,
        size: (1100, 480),
    }
}
