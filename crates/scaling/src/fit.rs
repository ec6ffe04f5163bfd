//! `fit`: validation, scaling, the full-data fit, the cluster bootstrap, predictions.

use std::collections::BTreeMap;

use ditbench_common::SplitMix64;

use crate::engine::{at_edge, Data, Eval, Profile, EXPONENT_MAX, EXPONENT_MIN};
use crate::error::{FitError, MIN_GROUPS};
use crate::law::{Fit, FitOptions, Form, Interval, ParamIntervals, Params, Point, Prediction};
use crate::util::{percentile_interval, robust_scale};

/// Domain tags of the counter-based random streams (so they never coincide).
const TAG_BOOTSTRAP: u64 = 0x5CA1_0B00_7000_0001;
const TAG_NOISE: u64 = 0x5CA1_0B00_7000_0002;

/// Draws (replicate × residual) behind one predictive interval: enough for stable
/// 2.5 % tails (about 100 draws beyond each end).
const PREDICTIVE_DRAWS: usize = 4000;

/// Scales from the caller's units to the engine's: geometric means.
#[derive(Debug, Clone, Copy)]
struct Refs {
    lx: f64,
    ls: f64,
    ly: f64,
}

pub(crate) fn check_options(opts: &FitOptions) -> Result<(), FitError> {
    if opts.huber_delta.is_nan() || opts.huber_delta <= 0.0 {
        return Err(FitError::BadOption {
            option: "huber_delta",
            value: opts.huber_delta,
            expected: "it must be > 0 (natural-log residual where the loss turns linear; f64::INFINITY is least squares)",
        });
    }
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(FitError::BadOption {
            option: "level",
            value: opts.level,
            expected: "it must lie strictly between 0 and 1 (e.g. 0.95)",
        });
    }
    Ok(())
}

fn positive(index: usize, field: &'static str, value: f64) -> Result<f64, FitError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(FitError::NotPositive {
            index,
            field,
            value,
        })
    }
}

fn count_distinct(mut v: Vec<f64>) -> usize {
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.len()
}

/// The minimum distinct x, distinct s and points a form needs.
fn minimums(form: Form) -> (usize, usize, usize) {
    match form {
        Form::Power => (3, 0, 3),
        Form::Joint => (2, 2, 5),
    }
}

/// Whether a resample can determine the form's parameters at all.
fn identifiable(form: Form, data: &Data) -> bool {
    let (nx, ns, np) = minimums(form);
    let mut pts: Vec<(u64, u64)> = (0..data.len())
        .map(|i| {
            (
                data.lx[i].to_bits(),
                data.ls.get(i).map_or(0, |v| v.to_bits()),
            )
        })
        .collect();
    pts.sort_unstable();
    pts.dedup();
    pts.len() >= np
        && count_distinct(data.lx.clone()) >= nx
        && (ns == 0 || count_distinct(data.ls.clone()) >= ns)
}

/// The points with positive multiplicity, in scaled units.
fn build_data(form: Form, points: &[Point], refs: Refs, m: &[f64]) -> Data {
    let joint = form == Form::Joint;
    let mut d = Data {
        joint,
        ..Data::default()
    };
    for (p, &mi) in points.iter().zip(m) {
        if mi <= 0.0 {
            continue;
        }
        d.lx.push(p.x.ln() - refs.lx);
        if joint {
            d.ls.push(p.s.unwrap_or(1.0).ln() - refs.ls);
        }
        let ly = p.y.ln() - refs.ly;
        d.ly.push(ly);
        d.yn.push(ly.exp());
        d.m.push(mi);
    }
    d
}

/// Engine coefficients to parameters in the caller's units: A·x^(−α) = c₁·(x/x_ref)^(−α),
/// so A = c₁·x_ref^α (and likewise B); everything times y_ref.
fn to_params(form: Form, e: &Eval, refs: Refs) -> Params {
    let [alpha, beta] = e.theta();
    let y_ref = refs.ly.exp();
    let joint = form == Form::Joint;
    Params {
        e: e.c[0] * y_ref,
        a: e.c[1] * (alpha * refs.lx + refs.ly).exp(),
        alpha,
        b: joint.then(|| e.c[2] * (beta * refs.ls + refs.ly).exp()),
        beta: joint.then_some(beta),
    }
}

/// Fits `form` to `points`: the robust variable-projection fit on all points, then
/// `opts.bootstrap` cluster-bootstrap replicates (whole groups resampled). See the
/// crate documentation for the method.
pub fn fit(points: &[Point], form: Form, opts: &FitOptions) -> Result<Fit, FitError> {
    check_options(opts)?;
    let (need_x, need_s, need_points) = minimums(form);
    for (i, p) in points.iter().enumerate() {
        positive(i, "x", p.x)?;
        positive(i, "y", p.y)?;
        if form == Form::Joint {
            match p.s {
                Some(s) => {
                    positive(i, "s", s)?;
                }
                None => {
                    return Err(FitError::MissingS {
                        index: i,
                        group: p.group.clone(),
                    })
                }
            }
        }
    }
    if points.len() < need_points {
        return Err(FitError::TooFewPoints {
            form,
            have: points.len(),
            need: need_points,
        });
    }
    let nx = count_distinct(points.iter().map(|p| p.x).collect());
    if nx < need_x {
        return Err(FitError::TooFewDistinct {
            form,
            what: "x",
            have: nx,
            need: need_x,
        });
    }
    let ns = if form == Form::Joint {
        let ns = count_distinct(points.iter().filter_map(|p| p.s).collect());
        if ns < need_s {
            return Err(FitError::TooFewDistinct {
                form,
                what: "s",
                have: ns,
                need: need_s,
            });
        }
        ns
    } else {
        0
    };
    // Groups sorted by name, so the resamples do not depend on the order of points.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        groups.entry(p.group.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    if opts.bootstrap > 0 && groups.len() < MIN_GROUPS {
        return Err(FitError::TooFewGroups {
            have: groups.len(),
            need: MIN_GROUPS,
        });
    }

    let n = points.len() as f64;
    let mean_ln = |f: &dyn Fn(&Point) -> f64| points.iter().map(|p| f(p).ln()).sum::<f64>() / n;
    let refs = Refs {
        lx: mean_ln(&|p| p.x),
        ls: if form == Form::Joint {
            mean_ln(&|p| p.s.unwrap_or(1.0))
        } else {
            0.0
        },
        ly: mean_ln(&|p| p.y),
    };
    let delta = opts.huber_delta;
    let data = build_data(form, points, refs, &vec![1.0; points.len()]);
    let mut profile = Profile::new(&data, delta);
    let best = profile.fit_global();
    let log_residuals = profile.residuals(&best);
    let params = to_params(form, &best, refs);

    let (replicates, failed) = bootstrap(form, points, &groups, refs, delta, opts, &best);

    let mut warnings = Vec::new();
    let edge_note = |name: &str, v: f64| {
        format!(
            "{name} = {v:.4} sits at the edge of the searched range [{EXPONENT_MIN}, {EXPONENT_MAX}]: the data do not determine it; read its interval as censored"
        )
    };
    if at_edge(params.alpha) {
        warnings.push(edge_note("α", params.alpha));
    }
    if let Some(beta) = params.beta.filter(|&b| at_edge(b)) {
        warnings.push(edge_note("β", beta));
    }
    if params.e == 0.0 {
        warnings.push(
            "E = 0: the fit resolves no irreducible term (quality would improve without bound)"
                .into(),
        );
    }
    if params.a == 0.0 {
        warnings.push("A = 0: the fit finds no effect of x (α is then arbitrary)".into());
    }
    if params.b == Some(0.0) {
        warnings.push(
            "B = 0: the fit finds no effect of s, training steps (β is then arbitrary)".into(),
        );
    }
    if form == Form::Joint && (nx < 3 || ns < 3) {
        warnings.push(format!(
            "{nx} distinct x and {ns} distinct s: with fewer than 3 of either, the matching coefficient and exponent are not separately determined"
        ));
    }
    if opts.bootstrap == 0 {
        warnings.push("bootstrap = 0: the intervals are the point estimates".into());
    } else {
        if failed > 0 {
            let consequence = if 2 * failed > opts.bootstrap {
                "most resamples cannot determine the law, so the intervals are not reliable (fit more runs)"
            } else {
                "they are somewhat too narrow"
            };
            warnings.push(format!(
                "{failed} of {} bootstrap replicates could not be fitted (their resample had too few distinct x or s) and are left out of the intervals; {consequence}",
                opts.bootstrap
            ));
        }
        let edge = replicates
            .iter()
            .filter(|p| at_edge(p.alpha) || p.beta.is_some_and(at_edge))
            .count();
        if !replicates.is_empty() && edge * 20 > replicates.len() {
            warnings.push(format!(
                "{:.0} % of the bootstrap replicates put an exponent at the edge of [{EXPONENT_MIN}, {EXPONENT_MAX}]: the exponents are poorly determined",
                100.0 * edge as f64 / replicates.len() as f64
            ));
        }
    }

    let level = opts.level;
    let interval = |f: &dyn Fn(&Params) -> f64, point: f64| {
        if replicates.is_empty() {
            Interval::point(point)
        } else {
            percentile_interval(replicates.iter().map(f).collect(), level)
        }
    };
    let param_intervals = ParamIntervals {
        e: interval(&|p| p.e, params.e),
        a: interval(&|p| p.a, params.a),
        alpha: interval(&|p| p.alpha, params.alpha),
        b: params.b.map(|b| interval(&|p| p.b.unwrap_or(f64::NAN), b)),
        beta: params
            .beta
            .map(|b| interval(&|p| p.beta.unwrap_or(f64::NAN), b)),
    };
    let range = |v: Vec<f64>| Interval {
        lo: v.iter().copied().fold(f64::INFINITY, f64::min),
        hi: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Ok(Fit {
        form,
        params,
        n_points: points.len(),
        n_groups: groups.len(),
        residual_scale: robust_scale(&log_residuals),
        param_intervals,
        level,
        replicates,
        bootstrap: opts.bootstrap,
        failed_replicates: failed,
        objective: best.f,
        huber_delta: delta,
        seed: opts.seed,
        exponent_range: Interval {
            lo: EXPONENT_MIN,
            hi: EXPONENT_MAX,
        },
        x_range: range(points.iter().map(|p| p.x).collect()),
        s_range: (form == Form::Joint).then(|| range(points.iter().filter_map(|p| p.s).collect())),
        log_residuals,
        warnings,
    })
}

/// The cluster bootstrap: replicate r draws `groups.len()` groups with replacement
/// from the stream keyed (tag, seed, r), so each replicate is reproducible on its
/// own and the result does not depend on the number of threads. Returns the fitted
/// replicates in replicate order and the number that could not be fitted.
fn bootstrap(
    form: Form,
    points: &[Point],
    groups: &[Vec<usize>],
    refs: Refs,
    delta: f64,
    opts: &FitOptions,
    full: &Eval,
) -> (Vec<Params>, usize) {
    let b = opts.bootstrap;
    if b == 0 {
        return (Vec::new(), 0);
    }
    let one = |r: usize| -> Option<Params> {
        let mut rng = SplitMix64::from_key(&[TAG_BOOTSTRAP, opts.seed, r as u64]);
        let mut m = vec![0.0; points.len()];
        for _ in 0..groups.len() {
            for &i in &groups[rng.below(groups.len())] {
                m[i] += 1.0;
            }
        }
        let data = build_data(form, points, refs, &m);
        if !identifiable(form, &data) {
            return None;
        }
        let e = Profile::new(&data, delta).fit_replicate(full);
        Some(to_params(form, &e, refs))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let threads = if b < 8 { 1 } else { threads.min(b) };
    let mut out: Vec<Option<Params>> = vec![None; b];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let one = &one;
                scope.spawn(move || {
                    (t..b)
                        .step_by(threads)
                        .map(|r| (r, one(r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panic in a worker is a bug; re-raise it rather than hide replicates.
            for (r, p) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                out[r] = p;
            }
        }
    });
    let failed = out.iter().filter(|p| p.is_none()).count();
    (out.into_iter().flatten().collect(), failed)
}

impl Fit {
    /// The point prediction at `(x, s)` and two intervals at the fit's level:
    ///
    /// - `mean_interval`, of the law itself: percentiles of the replicates' laws at
    ///   the point (parameter uncertainty from the cluster bootstrap);
    /// - `interval`, for a new observation: percentiles of
    ///   `ŷ_b(x, s) · exp(−κ·r_j)`, each replicate's law times a resampled log
    ///   residual `r_j` of the full-data fit, inflated by `κ = √(n/(n − p))` (fitted
    ///   residuals are smaller than fresh noise by about that factor; p = 3 or 5).
    ///   About 4,000 draws in all; which residuals pair with which replicate depends
    ///   only on the seed, not on (x, s), so intervals along a curve are smooth.
    ///
    /// A joint law with `s = None` is predicted at infinite training (the B term
    /// vanishes); a power law ignores `s`. Without replicates (bootstrap = 0) the
    /// mean interval is the point and the predictive interval is noise only.
    pub fn predict(&self, x: f64, s: Option<f64>) -> Prediction {
        let value = self.params.eval(x, s);
        let laws: Vec<f64> = if self.replicates.is_empty() {
            vec![value]
        } else {
            self.replicates.iter().map(|p| p.eval(x, s)).collect()
        };
        let mean_interval = if self.replicates.is_empty() {
            Interval::point(value)
        } else {
            percentile_interval(laws.clone(), self.level)
        };
        let n = self.log_residuals.len();
        let p = self.form.n_params();
        let kappa = if n > p {
            (n as f64 / (n - p) as f64).sqrt()
        } else {
            1.0
        };
        let per = PREDICTIVE_DRAWS.div_ceil(laws.len());
        let mut draws = Vec::with_capacity(per * laws.len());
        for (b, &law) in laws.iter().enumerate() {
            let mut rng = SplitMix64::from_key(&[TAG_NOISE, self.seed, b as u64]);
            for _ in 0..per {
                let r = if n == 0 {
                    0.0
                } else {
                    self.log_residuals[rng.below(n)]
                };
                draws.push(law * (-kappa * r).exp());
            }
        }
        Prediction {
            value,
            interval: percentile_interval(draws, self.level),
            mean_interval,
        }
    }
}
