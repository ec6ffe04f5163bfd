//! The noise schedule and its derived tables, in f64 (official
//! `GaussianDiffusion.__init__`), and timestep respacing (official respace.py).

use std::collections::BTreeSet;

use crate::DiffusionError;

/// Linear β schedule of Ho et al. (2020), scaled so that any number of steps spans the
/// same range as 1000 steps: β from 1e-4 to 0.02 (official `get_named_beta_schedule`).
pub fn linear_betas(num_timesteps: usize) -> Vec<f64> {
    let scale = 1000.0 / num_timesteps as f64;
    let (start, end) = (scale * 0.0001, scale * 0.02);
    if num_timesteps == 1 {
        return vec![start];
    }
    // numpy.linspace: start + i·step, with the last point exactly `end`.
    let step = (end - start) / (num_timesteps - 1) as f64;
    (0..num_timesteps)
        .map(|i| if i == num_timesteps - 1 { end } else { start + i as f64 * step })
        .collect()
}

/// Every table the diffusion needs, indexed by (respaced) timestep.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub sqrt_alphas_cumprod: Vec<f64>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0).
    pub posterior_variance: Vec<f64>,
    /// log β̃_t with the t = 0 entry (which is 0) replaced by β̃_1.
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    pub log_betas: Vec<f64>,
}

impl Schedule {
    pub fn from_betas(betas: Vec<f64>) -> Result<Self, DiffusionError> {
        if betas.is_empty() {
            return Err(DiffusionError::InvalidSchedule("no timesteps".into()));
        }
        if let Some(b) = betas.iter().find(|b| !(**b > 0.0 && **b <= 1.0)) {
            return Err(DiffusionError::InvalidSchedule(format!("beta {b} is outside (0, 1]")));
        }
        let n = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> =
            std::iter::once(1.0).chain(alphas_cumprod[..n - 1].iter().copied()).collect();
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let ac = &alphas_cumprod;
        let acp = &alphas_cumprod_prev;
        let posterior_variance = map(&|i| betas[i] * (1.0 - acp[i]) / (1.0 - ac[i]));
        // The posterior variance is 0 at t = 0; the log is clipped to the t = 1 value.
        let posterior_log_variance_clipped = map(&|i| {
            if i == 0 && n > 1 {
                posterior_variance[1].ln()
            } else {
                posterior_variance[i].ln()
            }
        });
        Ok(Self {
            sqrt_alphas_cumprod: map(&|i| ac[i].sqrt()),
            sqrt_one_minus_alphas_cumprod: map(&|i| (1.0 - ac[i]).sqrt()),
            sqrt_recip_alphas_cumprod: map(&|i| (1.0 / ac[i]).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&|i| (1.0 / ac[i] - 1.0).sqrt()),
            posterior_mean_coef1: map(&|i| betas[i] * acp[i].sqrt() / (1.0 - ac[i])),
            posterior_mean_coef2: map(&|i| (1.0 - acp[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i])),
            log_betas: map(&|i| betas[i].ln()),
            posterior_log_variance_clipped,
            posterior_variance,
            alphas_cumprod_prev,
            alphas_cumprod,
            betas,
        })
    }

    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }
}

/// Which of the original timesteps to keep (official `space_timesteps`).
///
/// * `""` keeps all of them;
/// * `"250"` keeps 250 evenly strided steps; `"10,20,30"` splits the range into three
///   equal sections and keeps 10, 20 and 30 steps in them;
/// * `"ddim50"` keeps `range(0, T, stride)` for the integer stride that gives exactly
///   50 steps (the DDIM paper's spacing).
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>, DiffusionError> {
    let bad = |why: String| DiffusionError::InvalidRespacing { spec: spec.to_string(), why };
    let spec_t = spec.trim();
    if spec_t.is_empty() {
        return Ok((0..num_timesteps).collect());
    }
    if let Some(count) = spec_t.strip_prefix("ddim") {
        let desired: usize = count
            .parse()
            .map_err(|_| bad(format!("`{count}` is not a step count (e.g. ddim50)")))?;
        for stride in 1..num_timesteps {
            if num_timesteps.div_ceil(stride) == desired {
                return Ok((0..num_timesteps).step_by(stride).collect());
            }
        }
        return Err(bad(format!(
            "no integer stride gives exactly {desired} of {num_timesteps} steps"
        )));
    }
    let counts = spec_t
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("expected step counts like `250`, `10,20,30` or `ddim50`".into()))?;
    let sections = counts.len();
    let size_per = num_timesteps / sections;
    let extra = num_timesteps % sections;
    let mut start = 0usize;
    let mut steps = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(bad(format!("cannot take {count} steps from a section of {size}")));
        }
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            // Python's round(): halves go to the even neighbour.
            steps.insert(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    Ok(steps.into_iter().collect())
}

/// Betas of the respaced process: consecutive kept steps are joined so that the kept
/// ᾱ values are exactly the original ones (official `SpacedDiffusion`).
pub fn respaced_betas(alphas_cumprod: &[f64], kept: &[usize]) -> Vec<f64> {
    let mut last = 1.0;
    kept.iter()
        .map(|&i| {
            let b = 1.0 - alphas_cumprod[i] / last;
            last = alphas_cumprod[i];
            b
        })
        .collect()
}
