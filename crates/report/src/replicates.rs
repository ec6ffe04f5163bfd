//! Seed replicates: runs that differ only in their seed (a sweep axis `seed = [0, 1, 2]`)
//! form one configuration; per configuration the mean quality with a Student-t 95 %
//! interval, and the seed noise in log space set beside the size and patch effects, so
//! a reader can tell a real difference from seed luck.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::{RunInfo, SweepData};

/// Two-sided 95 % quantiles of Student's t, t(0.975, ν) for ν = 1..=30 (the standard
/// table, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, `dof`): the table for 1..=30, beyond it the Cornish–Fisher expansion around
/// the normal quantile 1.96 (error below 1e-4 there). `None` for 0 degrees of freedom.
pub fn t_quantile_975(dof: usize) -> Option<f64> {
    match dof {
        0 => None,
        1..=30 => Some(T975[dof - 1]),
        _ => {
            let (z, v) = (1.959_963_984_540_054_f64, dof as f64);
            Some(z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v))
        }
    }
}

/// Mean and sample standard deviation (n − 1); the sd is `None` below two values.
pub fn mean_sd(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.len() >= 2).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// One configuration: runs equal in model, patch, batch size, steps, image size and
/// learning rate, with a quality value.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicateGroup {
    /// For people: "DiT-S/4 · batch 256 · 400000 steps · 256 px · lr 0.0001".
    pub configuration: String,
    pub model: Option<String>,
    pub size: Option<String>,
    pub patch: Option<i64>,
    /// The runs with a quality value, and their seeds.
    pub run_ids: Vec<String>,
    pub seeds: Vec<Option<i64>>,
    /// Their quality values (as `summarize` takes them: `--step` or the last evaluation).
    pub values: Vec<f64>,
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); null for one run.
    pub sd: Option<f64>,
    /// 95 % interval of the mean: mean ± t(0.975, n − 1) · sd / √n.
    pub interval: Option<[f64; 2]>,
    /// Sample sd of ln quality: the seed noise in log space, comparable across
    /// configurations and with the size/patch effects.
    pub sd_ln: Option<f64>,
}

/// How much one step along an axis (a size, or a patch) changes ln quality.
#[derive(Debug, Clone, Serialize)]
pub struct Effect {
    /// Median of |ln mean(a) − ln mean(next)| over adjacent pairs, the rest fixed.
    pub median_abs_ln: Option<f64>,
    /// Pairs compared.
    pub pairs: usize,
    /// `median_abs_ln` / the pooled seed noise.
    pub ratio_to_noise: Option<f64>,
}

/// The seeds section of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicatesSection {
    /// Configurations with at least two seeds (with a quality value).
    pub groups: Vec<ReplicateGroup>,
    /// Pooled sd of ln quality: √(Σ (n−1) s² / Σ (n−1)) over `groups`.
    pub pooled_sd_ln: Option<f64>,
    /// Adjacent model sizes at fixed patch (and everything else).
    pub size_effect: Effect,
    /// Adjacent patch sizes at fixed model size (and everything else).
    pub patch_effect: Effect,
    /// The comparison in one sentence.
    pub statement: String,
}

impl Default for ReplicatesSection {
    fn default() -> Self {
        let none = Effect { median_abs_ln: None, pairs: 0, ratio_to_noise: None };
        ReplicatesSection {
            groups: vec![],
            pooled_sd_ln: None,
            size_effect: none.clone(),
            patch_effect: none,
            statement: NO_SEEDS.into(),
        }
    }
}

const NO_SEEDS: &str =
    "no configuration has two seeds: the seed noise is unknown; add `seed = [0, 1, 2]` to the spec's axes";

/// What makes two runs the same configuration, in an orderable form (lr by its bits:
/// equal params are equal floats).
type Key = (Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<u64>);

fn key(r: &RunInfo) -> Key {
    (r.model.clone(), r.patch, r.batch_size, r.steps, r.image_size, r.lr.map(f64::to_bits))
}

fn label(r: &RunInfo) -> String {
    let mut parts = vec![r.model.clone().unwrap_or_else(|| "unknown model".into())];
    if let Some(b) = r.batch_size {
        parts.push(format!("batch {b}"));
    }
    if let Some(s) = r.steps {
        parts.push(format!("{s} steps"));
    }
    if let Some(i) = r.image_size {
        parts.push(format!("{i} px"));
    }
    if let Some(lr) = r.lr {
        parts.push(format!("lr {lr}"));
    }
    parts.join(" · ")
}

fn size_rank(s: Option<&str>) -> usize {
    crate::build::SIZES.iter().position(|x| Some(*x) == s).unwrap_or(crate::build::SIZES.len())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) })
}

/// Median |Δ ln mean| between neighbours along one axis: `rest` keys what is held
/// fixed, `rank` orders the axis.
fn effect<R: Ord, K: Ord>(groups: &[ReplicateGroup], rest: impl Fn(&ReplicateGroup) -> Option<R>, rank: impl Fn(&ReplicateGroup) -> Option<K>) -> (Option<f64>, usize) {
    let mut lines: BTreeMap<R, Vec<(K, f64)>> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.mean > 0.0) {
        if let (Some(r), Some(k)) = (rest(g), rank(g)) {
            lines.entry(r).or_default().push((k, g.mean.ln()));
        }
    }
    let mut d = Vec::new();
    for mut line in lines.into_values() {
        line.sort_by(|a, b| a.0.cmp(&b.0));
        d.extend(line.windows(2).map(|w| (w[1].1 - w[0].1).abs()));
    }
    let n = d.len();
    (median(d), n)
}

/// Groups the sweep's runs into configurations and sets the seed noise beside the size
/// and patch effects. `step` as in [`RunInfo::quality_at`].
pub fn replicates(data: &SweepData, step: Option<i64>) -> ReplicatesSection {
    if data.metric.is_none() {
        return ReplicatesSection::default();
    }
    let mut by_key: BTreeMap<Key, Vec<(&RunInfo, f64)>> = BTreeMap::new();
    for r in &data.runs {
        if let Some((_, v)) = r.quality_at(step) {
            by_key.entry(key(r)).or_default().push((r, v));
        }
    }
    let all: Vec<ReplicateGroup> = by_key
        .into_values()
        .map(|runs| {
            let first = runs[0].0;
            let values: Vec<f64> = runs.iter().map(|x| x.1).collect();
            let n = values.len();
            let (mean, sd) = mean_sd(&values);
            let interval = sd.zip(t_quantile_975(n - 1)).map(|(s, t)| {
                let h = t * s / (n as f64).sqrt();
                [mean - h, mean + h]
            });
            let sd_ln = if values.iter().all(|v| *v > 0.0) {
                mean_sd(&values.iter().map(|v| v.ln()).collect::<Vec<_>>()).1
            } else {
                None
            };
            ReplicateGroup {
                configuration: label(first),
                model: first.model.clone(),
                size: first.size.clone(),
                patch: first.patch,
                run_ids: runs.iter().map(|x| x.0.id.clone()).collect(),
                seeds: runs.iter().map(|x| x.0.seed).collect(),
                values,
                n,
                mean,
                sd,
                interval,
                sd_ln,
            }
        })
        .collect();

    // Effects use every configuration's mean (one seed is still a configuration).
    let rest = |g: &ReplicateGroup| {
        let r = data.runs.iter().find(|r| r.id == g.run_ids[0])?;
        Some((r.batch_size, r.steps, r.image_size, r.lr.map(f64::to_bits)))
    };
    let (size_d, size_n) = effect(&all, |g| Some((g.patch?, rest(g)?)), |g| g.size.as_deref().map(|s| size_rank(Some(s))));
    let (patch_d, patch_n) = effect(&all, |g| Some((g.size.clone()?, rest(g)?)), |g| g.patch);

    let groups: Vec<ReplicateGroup> = all.into_iter().filter(|g| g.n >= 2).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for g in &groups {
        if let Some(s) = g.sd_ln {
            num += (g.n - 1) as f64 * s * s;
            den += (g.n - 1) as f64;
        }
    }
    let pooled = (den > 0.0).then(|| (num / den).sqrt());
    let ratio = |d: Option<f64>| d.zip(pooled).filter(|(_, p)| *p > 0.0).map(|(d, p)| d / p);
    let size_effect = Effect { median_abs_ln: size_d, pairs: size_n, ratio_to_noise: ratio(size_d) };
    let patch_effect = Effect { median_abs_ln: patch_d, pairs: patch_n, ratio_to_noise: ratio(patch_d) };
    let statement = match pooled {
        None => NO_SEEDS.to_string(),
        Some(p) => {
            let f = |v: Option<f64>| v.map_or("(no adjacent pair)".to_string(), |v| format!("{v:.3}"));
            let r = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1}"));
            format!(
                "seed noise (sd of ln quality) {p:.3} over {} configurations with ≥ 2 seeds; size steps change ln quality by a median {}, patch steps by {}: the size and patch effects are {}× / {}× the seed noise",
                groups.len(),
                f(size_d),
                f(patch_d),
                r(size_effect.ratio_to_noise),
                r(patch_effect.ratio_to_noise)
            )
        }
    };
    ReplicatesSection { groups, pooled_sd_ln: pooled, size_effect, patch_effect, statement }
}
