//! What a report reads from the run store: one [`RunInfo`] per run of the sweep,
//! through the same Polars SQL tables as `ditbench runs query`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ditbench_family::ModelSize;
use ditbench_query::{DataFrame, RunStore};
use ditbench_track::{FieldDiff, Fingerprint};

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
    /// `params.seed`: runs equal in everything else are replicates (see
    /// [`crate::replicates`]).
    pub seed: Option<i64>,
    /// `params.lr`, part of what makes two runs the same configuration.
    pub lr: Option<f64>,
    /// The quality metric's evaluations (step, value), ascending, one per step; all
    /// made alike (the sweep's [`SweepData::fingerprint`]).
    pub quality: Vec<(i64, f64)>,
    /// Training loss (step, value), ascending, one per step (the last written wins).
    pub loss: Vec<(i64, f64)>,
    /// Held-out validation loss of the EMA weights (`val_loss_ema`), ascending.
    pub validation: Vec<(i64, f64)>,
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
    /// How every quality value used was made (see [`choose_fingerprint`]); `None`
    /// without a quality metric.
    pub fingerprint: Option<Fingerprint>,
    /// Notes about choices made (which metric, dropped rows).
    pub notes: Vec<String>,
}

impl SweepData {
    /// The id of [`SweepData::fingerprint`]: what a stored prediction records.
    pub fn fingerprint_id(&self) -> Option<String> {
        self.fingerprint.as_ref().map(Fingerprint::id)
    }
}

/// The validation losses the trainer logs (`[validation]`): lower is better, like an
/// FD, so a scaling law fits them the same way. They live in the metrics table and
/// have no eval fingerprint (the validation set is fixed by the run config).
pub const VALIDATION_METRICS: [&str; 4] = ["val_loss_ema", "val_loss", "val_mse_ema", "val_mse"];

/// The validation metric used when a sweep has no quality evaluation.
pub const DEFAULT_VALIDATION_METRIC: &str = "val_loss_ema";

/// True for a validation loss of [`VALIDATION_METRICS`].
pub fn is_validation_metric(name: &str) -> bool {
    VALIDATION_METRICS.contains(&name)
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

/// S < B < L < XL, then anything else: the order of the paper's tables.
pub(crate) fn size_rank(s: Option<&str>) -> usize {
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
            seed: None,
            lr: None,
            quality: Vec::new(),
            loss: Vec::new(),
            validation: Vec::new(),
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
            "seed" => r.seed = as_int,
            "lr" => r.lr = num[i].filter(|v| v.is_finite()),
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
    let evals = rs.sql(
        "SELECT run_id, step, wall_time, metric, value, num_samples, cfg_scale, sampler, sampling_steps, extractor, \
         extractor_hash, reference_hash, cfg_mode, weights, vae, precision FROM evals",
    )?;
    let (eid, estep, ewall, emetric, evalue) = (
        str_col(&evals, "run_id")?,
        i64_col(&evals, "step")?,
        f64_col(&evals, "wall_time")?,
        str_col(&evals, "metric")?,
        f64_col(&evals, "value")?,
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
    let chosen = if let Some(m) = metric.filter(|m| is_validation_metric(m)) {
        Some(m.to_string())
    } else if let Some(m) = metric {
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
    // Without any FID/FD evaluation the held-out validation loss is the quality series
    // (dropped again below when no run logged one either).
    let fallback = chosen.is_none();
    let mut chosen = chosen.or_else(|| Some(DEFAULT_VALIDATION_METRIC.to_string()));
    let mut fingerprint = None;
    if let Some(m) = chosen.as_ref().filter(|m| !is_validation_metric(m)) {
        // Only rows made alike go into one series or fit (see `choose_fingerprint`).
        let mut rows: Vec<QualityRow> = Vec::new();
        let prints = fingerprints(&evals)?;
        for i in 0..evals.height() {
            if emetric[i] != Some(m.as_str()) {
                continue;
            }
            let (Some(id), Some(step), Some(fp)) = (eid[i], estep[i], &prints[i]) else { continue };
            let Some(&ri) = index.get(id) else { continue };
            rows.push(QualityRow {
                run: ri,
                step,
                wall_time: ewall[i].unwrap_or(0.0),
                value: evalue[i].unwrap_or(f64::NAN),
                fingerprint: fp.clone(),
            });
        }
        let names: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        if let Some(choice) = choose_fingerprint(&rows, &names) {
            notes.extend(choice.notes);
            let mut per_run: HashMap<usize, Vec<&QualityRow>> = HashMap::new();
            for r in rows.iter().filter(|r| r.fingerprint.differences(&choice.fingerprint).is_empty()) {
                per_run.entry(r.run).or_default().push(r);
            }
            for (ri, mut v) in per_run {
                // Per step keep the latest written row.
                v.sort_by(|a, b| a.step.cmp(&b.step).then(a.wall_time.total_cmp(&b.wall_time)));
                let mut q: Vec<(i64, f64)> = Vec::new();
                for r in v {
                    match q.last_mut() {
                        Some(last) if last.0 == r.step => last.1 = r.value,
                        _ => q.push((r.step, r.value)),
                    }
                }
                runs[ri].quality = q;
            }
            if !is_unguided(choice.fingerprint.cfg_scale) {
                notes.push(format!(
                    "the {m} values used are guided (cfg scale {}), unlike the paper's Table 4 (no guidance)",
                    choice.fingerprint.cfg_scale
                ));
            }
            fingerprint = Some(choice.fingerprint);
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

    // ---- validation curves: the EMA's (what samples), and the chosen one when it is a
    // validation loss (then it is the quality series: a sweep without evaluations
    // still gets its fits)
    let wanted = chosen.as_deref().filter(|m| is_validation_metric(m)).unwrap_or(DEFAULT_VALIDATION_METRIC);
    let val = rs.sql(&format!(
        "SELECT run_id, step, name, value FROM metrics WHERE name IN ('{DEFAULT_VALIDATION_METRIC}', '{wanted}') ORDER BY run_id, step, wall_time"
    ))?;
    let (vid, vstep, vname, vval) = (str_col(&val, "run_id")?, i64_col(&val, "step")?, str_col(&val, "name")?, f64_col(&val, "value")?);
    let as_quality = chosen.as_deref().is_some_and(is_validation_metric);
    for i in 0..val.height() {
        let (Some(id), Some(step), Some(name), Some(v)) = (vid[i], vstep[i], vname[i], vval[i]) else { continue };
        let Some(&ri) = index.get(id) else { continue };
        if name == DEFAULT_VALIDATION_METRIC {
            push_step(&mut runs[ri].validation, step, v);
        }
        if as_quality && name == wanted {
            push_step(&mut runs[ri].quality, step, v);
        }
    }

    if fallback {
        if runs.iter().all(|r| r.quality.is_empty()) {
            chosen = None;
        } else {
            notes.push(format!(
                "no run has an FID or FD evaluation: the quality series is the held-out validation loss {DEFAULT_VALIDATION_METRIC} (fixed images, timesteps and noise, the same for every run)"
            ));
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
    Ok(SweepData { sweep: sweep.to_string(), runs, metric: chosen, available_metrics, fingerprint, notes })
}

/// Appends (step, v) to a series ordered by step; a step logged again (a resumed run
/// repeats it) keeps the last value written.
fn push_step(series: &mut Vec<(i64, f64)>, step: i64, v: f64) {
    match series.last_mut() {
        Some(last) if last.0 == step => last.1 = v,
        _ => series.push((step, v)),
    }
}

/// One evaluation of the chosen quality metric.
#[derive(Debug, Clone)]
pub struct QualityRow {
    /// Index of its run (in the runs' order).
    pub run: usize,
    /// Training step.
    pub step: i64,
    /// When it was written (Unix seconds).
    pub wall_time: f64,
    /// Value.
    pub value: f64,
    /// How it was made.
    pub fingerprint: Fingerprint,
}

/// The fingerprint a report keeps, and what leaving out the others means.
#[derive(Debug, Clone)]
pub struct FingerprintChoice {
    /// The fingerprint of every row kept.
    pub fingerprint: Fingerprint,
    /// One note per fingerprint left out: how many rows and runs, the fields that
    /// differ with both values, and the runs left without any value.
    pub notes: Vec<String>,
}

fn is_unguided(cfg_scale: f64) -> bool {
    (cfg_scale - 1.0).abs() < 1e-12
}

/// Which of the quality rows a report may put into one series or fit: only rows with
/// one fingerprint, since values made differently (another sample count, reference
/// statistics, guidance, weights, …) are not comparable. The fingerprint with the
/// most runs is kept; among those with as many runs, an unguided one (cfg 1, as the
/// paper's Table 4 that the report compares with), then the one with the most recent
/// row (by wall time, then step). Because a single fingerprint is kept for the whole
/// sweep, no run's curve over steps joins points made differently either. `run_names`
/// name the runs in the notes. `None` when there are no rows.
pub fn choose_fingerprint(rows: &[QualityRow], run_names: &[&str]) -> Option<FingerprintChoice> {
    struct Group<'a> {
        fingerprint: &'a Fingerprint,
        runs: BTreeSet<usize>,
        rows: usize,
        latest: (f64, i64),
    }
    let mut groups: Vec<Group> = Vec::new();
    for r in rows {
        let k = match groups.iter().position(|g| g.fingerprint.differences(&r.fingerprint).is_empty()) {
            Some(k) => k,
            None => {
                groups.push(Group { fingerprint: &r.fingerprint, runs: BTreeSet::new(), rows: 0, latest: (f64::NEG_INFINITY, i64::MIN) });
                groups.len() - 1
            }
        };
        let g = &mut groups[k];
        g.runs.insert(r.run);
        g.rows += 1;
        if (r.wall_time, r.step) > g.latest {
            g.latest = (r.wall_time, r.step);
        }
    }
    let best = (0..groups.len()).max_by(|&a, &b| {
        let key = |g: &Group| (g.runs.len(), is_unguided(g.fingerprint.cfg_scale));
        let (ga, gb) = (&groups[a], &groups[b]);
        key(ga)
            .cmp(&key(gb))
            .then(ga.latest.0.total_cmp(&gb.latest.0))
            .then(ga.latest.1.cmp(&gb.latest.1))
    })?;
    let kept = &groups[best];
    let mut notes = Vec::new();
    for (k, g) in groups.iter().enumerate() {
        if k == best {
            continue;
        }
        let lost: Vec<&str> = g.runs.difference(&kept.runs).map(|&r| run_names.get(r).copied().unwrap_or("?")).collect();
        notes.push(format!(
            "{} {} rows of {} runs left out: evaluated differently from the {} runs used (fingerprint {} vs {}: {}){}",
            g.rows,
            g.fingerprint.metric,
            g.runs.len(),
            kept.runs.len(),
            kept.fingerprint.id(),
            g.fingerprint.id(),
            FieldDiff::join(&kept.fingerprint.differences(g.fingerprint)),
            if lost.is_empty() {
                String::new()
            } else {
                format!("; runs left without a value: {}", lost.join(", "))
            }
        ));
    }
    Some(FingerprintChoice { fingerprint: kept.fingerprint.clone(), notes })
}

/// Each eval row's fingerprint (`None` where a required column is null, which a
/// stored row never is).
fn fingerprints(evals: &DataFrame) -> Result<Vec<Option<Fingerprint>>, ReportError> {
    let (metric, extractor, sampler) = (str_col(evals, "metric")?, str_col(evals, "extractor")?, str_col(evals, "sampler")?);
    let (eh, rh) = (str_col(evals, "extractor_hash")?, str_col(evals, "reference_hash")?);
    let (mode, weights, vae, precision) =
        (str_col(evals, "cfg_mode")?, str_col(evals, "weights")?, str_col(evals, "vae")?, str_col(evals, "precision")?);
    let (ns, ss, cfg) = (i64_col(evals, "num_samples")?, i64_col(evals, "sampling_steps")?, f64_col(evals, "cfg_scale")?);
    let own = |v: Option<&str>| v.map(str::to_string);
    Ok((0..evals.height())
        .map(|i| {
            Some(Fingerprint {
                metric: own(metric[i])?,
                extractor: own(extractor[i])?,
                extractor_hash: own(eh[i]),
                reference_hash: own(rh[i]),
                num_samples: ns[i]?,
                sampler: own(sampler[i])?,
                sampling_steps: ss[i]?,
                cfg_scale: cfg[i]?,
                cfg_mode: own(mode[i]),
                weights: own(weights[i]),
                vae: own(vae[i]),
                precision: own(precision[i]),
            })
        })
        .collect())
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
