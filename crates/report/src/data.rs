//! What a report reads from the run store: one [`RunInfo`] per run of the sweep,
//! through the same Polars SQL tables as `ditbench runs query`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ditbench_family::ModelSize;
use ditbench_query::{DataFrame, RunStore};

use crate::ReportError;

/// One run as the report sees it. Missing numbers stay `None`, never zero.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Run id.
    pub id: String,
    /// Full model name (`params.model`, e.g. "DiT-S/4"), else "<runs.model>/<patch>".
    pub model: Option<String>,
    /// Size (S, B, L, XL) parsed from the model name.
    pub size: Option<String>,
    /// Patch size.
    pub patch: Option<i64>,
    /// Parameter count.
    pub n_params: Option<i64>,
    /// Forward Gflops per image.
    pub gflops: Option<f64>,
    /// Registry status.
    pub status: String,
    /// `params.batch_size`.
    pub batch_size: Option<i64>,
    /// `params.steps` (the planned number of steps).
    pub steps: Option<i64>,
    /// `params.image_size`.
    pub image_size: Option<i64>,
    /// The quality metric's evaluations (step, value), ascending, one per step.
    pub quality: Vec<(i64, f64)>,
    /// Training loss (step, value), ascending, one per step (the last written wins).
    pub loss: Vec<(i64, f64)>,
    /// The newest sample grid, if any.
    pub last_samples: Option<(i64, PathBuf)>,
}

impl RunInfo {
    /// The quality value at `step` (exactly), or at the last evaluated step.
    pub fn quality_at(&self, step: Option<i64>) -> Option<(i64, f64)> {
        match step {
            Some(s) => self.quality.iter().copied().find(|q| q.0 == s),
            None => self.quality.last().copied(),
        }
        .filter(|q| q.1.is_finite())
    }

    /// Training compute at `step`: 3 × Gflops × batch × step (the paper's convention:
    /// a backward pass costs two forwards), in the paper's Figure 9 unit ("Gflops": 10^9
    /// MACs, not FLOPs), so the compute figure's axis reads like the paper's.
    pub fn training_compute(&self, step: i64) -> Option<f64> {
        Some(ditbench_common::flops::train_paper_gflops(self.gflops?, self.batch_size? as f64, step as f64))
    }
}

/// Everything read for one sweep.
#[derive(Debug, Clone)]
pub struct SweepData {
    /// Sweep name.
    pub sweep: String,
    /// Runs, ordered by size (S, B, L, XL), then patch (large to small, as Table 4), then id.
    pub runs: Vec<RunInfo>,
    /// The quality metric chosen (`fid` or `FD_<extractor>`), if any run has one.
    pub metric: Option<String>,
    /// Quality metrics seen in the evals, with how many runs have each.
    pub available_metrics: BTreeMap<String, usize>,
    /// Notes about choices made (which metric, dropped rows).
    pub notes: Vec<String>,
}

/// True for the metrics that measure sample quality by a Fréchet distance.
pub fn is_quality_metric(name: &str) -> bool {
    name == "fid" || name.len() > 3 && name[..3].eq_ignore_ascii_case("fd_")
}

/// Size letter of a model as the store records it: the registry's `model` column
/// ("DiT-XL", from the config's `model.size`) or, for runs registered without one, the
/// `model` parameter ("DiT-XL/2", "XL/2" → "XL"). The store keeps no size column, so
/// the report reads these strings.
pub fn size_of(model: &str) -> Option<String> {
    let m = model.trim();
    let m = m.strip_prefix("DiT-").or_else(|| m.strip_prefix("dit-")).unwrap_or(m);
    let size: ModelSize = m.split(['/', '-']).next()?.parse().ok()?;
    Some(size.to_string())
}

fn size_rank(s: Option<&str>) -> usize {
    match s {
        Some("S") => 0,
        Some("B") => 1,
        Some("L") => 2,
        Some("XL") => 3,
        _ => 4,
    }
}

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<Option<&'a str>>, ReportError> {
    Ok(df.column(name)?.str()?.iter().collect())
}
fn i64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<i64>>, ReportError> {
    Ok(df.column(name)?.i64()?.iter().collect())
}
fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
    Ok(df.column(name)?.f64()?.iter().collect())
}

/// Reads the sweep's runs, parameters, quality evaluations and loss curves.
///
/// `metric` forces the quality metric; otherwise `fid` when every run that has a
/// quality evaluation has FID, else the `FD_*` metric those runs share.
pub fn load(store: &Path, sweep: &str, metric: Option<&str>) -> Result<SweepData, ReportError> {
    let rs = RunStore::open(store, Some(sweep))?;
    let mut notes = Vec::new();
    let mut runs: Vec<RunInfo> = rs
        .runs()
        .iter()
        .map(|r| RunInfo {
            id: r.id.clone(),
            model: None,
            size: r.model.as_deref().and_then(size_of),
            patch: r.patch,
            n_params: r.n_params,
            gflops: r.gflops,
            status: r.status.as_str().to_string(),
            batch_size: None,
            steps: None,
            image_size: None,
            quality: Vec::new(),
            loss: Vec::new(),
            last_samples: None,
        })
        .collect();
    let index: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    let registry_model: HashMap<&str, Option<&str>> =
        rs.runs().iter().map(|r| (r.id.as_str(), r.model.as_deref())).collect();

    // ---- params (long form: one row per run × key)
    let params = rs.table("params")?.collect()?;
    let (pid, key, val, num) = (
        str_col(&params, "run_id")?,
        str_col(&params, "key")?,
        str_col(&params, "value")?,
        f64_col(&params, "value_num")?,
    );
    for i in 0..params.height() {
        let (Some(id), Some(k)) = (pid[i], key[i]) else { continue };
        let Some(&ri) = index.get(id) else { continue };
        let r = &mut runs[ri];
        let as_int = num[i].filter(|v| v.is_finite() && v.fract() == 0.0).map(|v| v as i64);
        match k {
            "model" => r.model = val[i].map(str::to_string),
            "batch_size" => r.batch_size = as_int,
            "steps" => r.steps = as_int,
            "image_size" => r.image_size = as_int,
            _ => {}
        }
    }
    for r in &mut runs {
        if r.model.is_none() {
            r.model = registry_model[r.id.as_str()].map(|m| match r.patch {
                Some(p) if !m.contains('/') => format!("{m}/{p}"),
                _ => m.to_string(),
            });
        }
        if r.size.is_none() {
            r.size = r.model.as_deref().and_then(size_of);
        }
    }

    // ---- evals: pick the quality metric, then one value per run × step
    let evals = rs
        .sql("SELECT run_id, step, wall_time, metric, value, cfg_scale FROM evals")?;
    let (eid, estep, ewall, emetric, evalue, ecfg) = (
        str_col(&evals, "run_id")?,
        i64_col(&evals, "step")?,
        f64_col(&evals, "wall_time")?,
        str_col(&evals, "metric")?,
        f64_col(&evals, "value")?,
        f64_col(&evals, "cfg_scale")?,
    );
    let mut per_metric: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for i in 0..evals.height() {
        if let (Some(id), Some(m)) = (eid[i], emetric[i]) {
            if is_quality_metric(m) {
                if let Some(&ri) = index.get(id) {
                    per_metric.entry(m.to_string()).or_default().insert(ri);
                }
            }
        }
    }
    let available_metrics: BTreeMap<String, usize> =
        per_metric.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let with_any: BTreeSet<usize> = per_metric.values().flatten().copied().collect();
    let chosen = if let Some(m) = metric {
        if !per_metric.contains_key(m) {
            let all: BTreeSet<&str> = emetric.iter().flatten().copied().collect();
            return Err(ReportError::UnknownMetric {
                metric: m.to_string(),
                sweep: sweep.to_string(),
                available: if all.is_empty() {
                    "(no evaluations)".into()
                } else {
                    all.into_iter().collect::<Vec<_>>().join(", ")
                },
            });
        }
        Some(m.to_string())
    } else if per_metric.get("fid").is_some_and(|s| s.len() == with_any.len()) {
        Some("fid".to_string())
    } else {
        // FD metrics shared by every run with a quality evaluation; else the most common.
        let shared: Vec<&String> = per_metric
            .iter()
            .filter(|(k, v)| k.as_str() != "fid" && v.len() == with_any.len())
            .map(|(k, _)| k)
            .collect();
        if let Some(m) = shared.first() {
            if shared.len() > 1 {
                notes.push(format!(
                    "several quality metrics are shared by all runs ({}); using {m} (choose with --metric)",
                    shared.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            Some((*m).clone())
        } else if let Some((m, n)) = per_metric.iter().max_by_key(|(_, v)| v.len()) {
            notes.push(format!(
                "no quality metric is shared by all {} evaluated runs; using {m}, which {} of them have (the others are shown as missing)",
                with_any.len(),
                n.len()
            ));
            Some(m.clone())
        } else {
            None
        }
    };
    if let Some(m) = &chosen {
        // Per run: prefer unguided rows (cfg 1, as Table 4) when the run has any; per
        // step keep the latest written row.
        let mut rows: HashMap<usize, Vec<(i64, f64, f64, bool)>> = HashMap::new();
        for i in 0..evals.height() {
            if emetric[i] != Some(m.as_str()) {
                continue;
            }
            let (Some(id), Some(step)) = (eid[i], estep[i]) else { continue };
            let Some(&ri) = index.get(id) else { continue };
            let unguided = ecfg[i].is_none_or(|c| (c - 1.0).abs() < 1e-12);
            rows.entry(ri).or_default().push((
                step,
                ewall[i].unwrap_or(0.0),
                evalue[i].unwrap_or(f64::NAN),
                unguided,
            ));
        }
        let mut guided_only = Vec::new();
        for (ri, mut v) in rows {
            if v.iter().any(|r| r.3) {
                v.retain(|r| r.3);
            } else {
                guided_only.push(runs[ri].id.clone());
            }
            v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut q: Vec<(i64, f64)> = Vec::new();
            for (step, _, value, _) in v {
                match q.last_mut() {
                    Some(last) if last.0 == step => last.1 = value,
                    _ => q.push((step, value)),
                }
            }
            runs[ri].quality = q;
        }
        if !guided_only.is_empty() {
            guided_only.sort();
            notes.push(format!(
                "runs with only guided (cfg ≠ 1) {m} evaluations, used as they are: {}",
                guided_only.join(", ")
            ));
        }
    }

    // ---- loss curves (full resolution; downsampled only when drawn)
    let loss = rs.sql(
        "SELECT run_id, step, value FROM metrics WHERE name = 'loss' ORDER BY run_id, step, wall_time",
    )?;
    let (lid, lstep, lval) = (str_col(&loss, "run_id")?, i64_col(&loss, "step")?, f64_col(&loss, "value")?);
    for i in 0..loss.height() {
        let (Some(id), Some(step), Some(v)) = (lid[i], lstep[i], lval[i]) else { continue };
        let Some(&ri) = index.get(id) else { continue };
        let l = &mut runs[ri].loss;
        match l.last_mut() {
            Some(last) if last.0 == step => last.1 = v, // a resumed run logged the step again
            _ => l.push((step, v)),
        }
    }

    // ---- sample grids: <store>/<sweep>/<run>/samples/NNNNNNN.png
    for r in &mut runs {
        let dir = store.join(sweep).join(&r.id).join("samples");
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let step = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".png"))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(step) = step {
                if r.last_samples.as_ref().is_none_or(|(s, _)| step > *s) {
                    r.last_samples = Some((step, p));
                }
            }
        }
    }
    for w in rs.take_warnings() {
        notes.push(format!("store: {w}"));
    }

    runs.sort_by(|a, b| {
        size_rank(a.size.as_deref())
            .cmp(&size_rank(b.size.as_deref()))
            .then(b.patch.cmp(&a.patch))
            .then(a.id.cmp(&b.id))
    });
    Ok(SweepData { sweep: sweep.to_string(), runs, metric: chosen, available_metrics, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_quality_names() {
        assert_eq!(size_of("DiT-XL/2").as_deref(), Some("XL"));
        assert_eq!(size_of("DiT-S").as_deref(), Some("S"));
        assert_eq!(size_of("b/4").as_deref(), Some("B"));
        assert_eq!(size_of("my-model"), None);
        assert!(is_quality_metric("fid"));
        assert!(is_quality_metric("FD_builtin-cnn-32px-s0"));
        assert!(!is_quality_metric("sfid"));
        assert!(!is_quality_metric("is"));
    }
}
