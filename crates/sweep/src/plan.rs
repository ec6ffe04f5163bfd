//! `ditbench sweep plan`: what a sweep will cost, before anything runs. Changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use ditbench_track::{RunRecord, Source, Status, Store};

use crate::spec::{PlannedRun, SweepSpec};
use crate::SweepError;

/// One row of the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanRow {
    pub id: String,
    pub model: String,
    pub patch: i64,
    pub params: u64,
    /// Forward Gflops per image (the paper's Table 4 unit).
    pub gflops: f64,
    pub steps: u64,
    pub batch: usize,
    /// Training FLOPs as the paper counts them: 3 × forward FLOPs × batch × steps.
    pub train_flops: f64,
    /// Estimated wall hours, from throughput measured in the store (None: no data).
    pub est_hours: Option<f64>,
    /// Status in the store when the run is already registered.
    pub status: Option<String>,
    /// Why a launch would refuse the run (then `sweep run` starts nothing).
    pub refused: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub sweep: String,
    pub rows: Vec<PlanRow>,
    pub total_train_flops: f64,
    /// Sum of the estimates (None when any run has none).
    pub total_hours: Option<f64>,
    /// How the estimates were made, in words.
    pub estimate_basis: String,
    /// Runs a launch would refuse (see each row's `refused`).
    pub refused_runs: usize,
}

/// Measured training throughput in FLOP/s: (per run id, median over all runs).
#[derive(Debug, Default)]
struct Throughput {
    by_run: BTreeMap<String, f64>,
    median: Option<f64>,
    samples: usize,
}

/// The throughput measured by `runs` (all the store's runs), from each run's own
/// summaries: only the runs with Gflops are read.
fn measured(store: &Store, runs: &[RunRecord]) -> Result<Throughput, SweepError> {
    let mut t = Throughput::default();
    let mut all = vec![];
    for r in runs {
        let Some(g) = r.gflops else { continue };
        // A run whose summaries cannot be read measures nothing: a plan changes
        // nothing and is only an estimate (the store's own warnings name the damage).
        let Ok(summaries) = store.run_summaries(&r.id) else { continue };
        for s in summaries {
            if s.source != Source::Metric || s.metric != "images_per_s" || !s.last.is_finite() || s.last <= 0.0 {
                continue;
            }
            // Training FLOP/s (not the paper's Gflops) = images/s × 3 × 2 × forward GMACs.
            let flops = ditbench_common::flops::train_per_second(g, s.last);
            t.by_run.insert(r.id.clone(), flops);
            all.push(flops);
        }
    }
    all.sort_by(f64::total_cmp);
    t.samples = all.len();
    t.median = (!all.is_empty()).then(|| all[all.len() / 2]);
    Ok(t)
}

/// Plans a sweep against the store at `store_root` (read only; a missing store means no
/// measurements). Runs a launch would refuse are planned too, with the reason.
pub fn plan(spec: &SweepSpec, store_root: &Path) -> Result<Plan, SweepError> {
    let runs = spec.expand()?;
    let store = Store::open_read_only(store_root).ok();
    let (through, status): (Throughput, BTreeMap<String, Status>) = match &store {
        Some(s) => {
            let all = s.runs(None)?;
            let status = all.iter().filter(|r| r.sweep == spec.name).map(|r| (r.id.clone(), r.status)).collect();
            (measured(s, &all)?, status)
        }
        None => (Throughput::default(), BTreeMap::new()),
    };
    let rows: Vec<PlanRow> = runs.iter().map(|r| row(r, &through, &status)).collect();
    let total_train_flops = rows.iter().map(|r| r.train_flops).sum();
    let total_hours = rows.iter().map(|r| r.est_hours).sum::<Option<f64>>();
    let estimate_basis = match through.median {
        Some(m) => format!(
            "each run's own measured throughput when it has one, else the median of {} measured runs ({:.3} TFLOP/s training)",
            through.samples,
            m / 1e12
        ),
        None => "no throughput measured in the store yet: run a sweep (or `ditbench train`) first to get hours".into(),
    };
    let refused_runs = rows.iter().filter(|r| r.refused.is_some()).count();
    Ok(Plan { sweep: spec.name.clone(), rows, total_train_flops, total_hours, estimate_basis, refused_runs })
}

fn row(r: &PlannedRun, through: &Throughput, status: &BTreeMap<String, Status>) -> PlanRow {
    let m = &r.config.model;
    let t = &r.config.train;
    let train_flops = r.config.training_flops();
    let rate = through.by_run.get(&r.config.run_id).copied().or(through.median);
    PlanRow {
        id: r.config.run_id.clone(),
        model: m.name.clone(),
        patch: m.patch_size,
        params: m.param_count(),
        gflops: m.gflops(),
        steps: t.steps,
        batch: t.batch_size,
        train_flops,
        est_hours: rate.map(|f| train_flops / f / 3600.0),
        status: status.get(&r.config.run_id).map(|s| s.as_str().to_string()),
        refused: r.refused.clone(),
    }
}
