//! The numerical core: variable projection of `ŷ = c₀ + c₁·x̃^(−α) [+ c₂·s̃^(−β)]`
//! under the Huber loss of log residuals.
//!
//! Everything here works in scaled units (`x̃ = x / x_ref`, `s̃ = s / s_ref`,
//! `ỹ = y / y_ref` with geometric-mean references) so that the basis columns are of
//! order one whatever the units of the caller (Gflops, FLOPs, steps, FID, nats).
//!
//! For fixed exponents θ = (α[, β]) the model is linear in c ≥ 0. [`Data::solve_linear`]
//! minimises `Σ mᵢ·huber_δ(ln ŷᵢ − ln yᵢ)` over c ≥ 0 by Gauss–Newton on the log
//! residual with iteratively reweighted (Huber) weights: each step is a weighted
//! non-negative least-squares problem in 2 or 3 variables, solved exactly by
//! enumerating active sets, followed by a backtracking line search on the true
//! objective. Its fixed points satisfy the KKT conditions of the Huber problem. The
//! profile objective F(θ) = min_c … is then searched over a log-spaced grid of θ and
//! polished in ln θ (Golub & Pereyra's variable projection): by Nelder–Mead on the
//! full data (no derivatives, so no trust in smoothness where the Huber weights
//! switch), by Levenberg–Marquardt with the projected Jacobian on bootstrap
//! replicates (a few evaluations from the nearby full-data optimum).

// Small dense linear algebra reads best with indices.
#![allow(clippy::needless_range_loop)]

/// Smallest exponent searched.
pub(crate) const EXPONENT_MIN: f64 = 0.01;
/// Largest exponent searched.
pub(crate) const EXPONENT_MAX: f64 = 4.0;

/// Grid points per exponent on the full-data fit (power form).
const GRID_1D: usize = 48;
/// Grid points per exponent on the full-data fit (joint form: 24 × 24).
const GRID_2D: usize = 24;
/// Coarse grid per exponent for bootstrap replicates.
const COARSE_1D: usize = 12;
const COARSE_2D: usize = 8;
/// Local minima of the full grid that are polished.
const POLISH_STARTS: usize = 3;
/// Nelder–Mead stops when the simplex spans less than this in ln θ.
const NM_TOL: f64 = 1e-7;
/// Replicates only feed percentiles: 1e-5 in ln θ is far below their spread.
const POLISH_TOL_REPLICATE: f64 = 1e-5;
const NM_MAX_EVALS: usize = 400;

fn u_min() -> f64 {
    EXPONENT_MIN.ln()
}

fn u_max() -> f64 {
    EXPONENT_MAX.ln()
}

/// Linear coefficients (c₀, c₁, c₂) in scaled units; c₂ = 0 for the power form.
pub(crate) type Coef = [f64; 3];

/// Points in scaled units, each with a multiplicity (its group's count in a bootstrap
/// resample; 1 on the full data).
#[derive(Debug, Clone, Default)]
pub(crate) struct Data {
    pub joint: bool,
    /// ln x̃.
    pub lx: Vec<f64>,
    /// ln s̃ (empty for the power form).
    pub ls: Vec<f64>,
    /// ỹ.
    pub yn: Vec<f64>,
    /// ln ỹ.
    pub ly: Vec<f64>,
    /// Multiplicity.
    pub m: Vec<f64>,
}

/// Buffers reused across evaluations.
#[derive(Debug, Default)]
pub(crate) struct Work {
    phi1: Vec<f64>,
    phi2: Vec<f64>,
    yhat: Vec<f64>,
    r: Vec<f64>,
}

/// Normal equations `G c = h` of a weighted least-squares problem, with `tt = Σ v t²`.
#[derive(Debug, Clone, Copy)]
struct Normal {
    k: usize,
    g: [[f64; 3]; 3],
    h: [f64; 3],
    tt: f64,
}

/// The Huber loss: ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond.
pub(crate) fn huber(r: f64, delta: f64) -> f64 {
    let a = r.abs();
    if a <= delta {
        0.5 * a * a
    } else {
        delta * (a - 0.5 * delta)
    }
}

/// ψ(r)/r: the IRLS weight whose weighted square majorises the Huber loss.
fn huber_weight(r: f64, delta: f64) -> f64 {
    let a = r.abs();
    if a <= delta {
        1.0
    } else {
        delta / a
    }
}

/// Solves the n×n system (n ≤ 3) by Gaussian elimination with partial pivoting;
/// `None` when a pivot is below 1e-12 (the system is equilibrated, so that means the
/// columns are collinear to working precision).
pub(crate) fn solve_small(mut a: [[f64; 3]; 3], mut b: [f64; 3], n: usize) -> Option<[f64; 3]> {
    for col in 0..n {
        let p = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        let pivot = a[p][col].abs();
        if pivot.is_nan() || pivot <= 1e-12 {
            return None;
        }
        a.swap(col, p);
        b.swap(col, p);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..n).rev() {
        let mut s = b[row];
        for k in row + 1..n {
            s -= a[row][k] * x[k];
        }
        x[row] = s / a[row][row];
    }
    Some(x)
}

/// Non-negative least squares in k ≤ 3 variables by enumerating the 2^k − 1 non-empty
/// supports: the NNLS optimum is the unconstrained solution on its own support, so
/// the feasible support solution with the least residual sum of squares is it.
fn nnls(nm: &Normal) -> Option<Coef> {
    let k = nm.k;
    // Equilibrate (unit diagonal) so the pivot threshold is relative.
    let mut d = [0.0; 3];
    for j in 0..k {
        let gjj = nm.g[j][j];
        if gjj > 0.0 && gjj.is_finite() {
            d[j] = 1.0 / gjj.sqrt();
        }
    }
    let mut best: Option<(f64, Coef)> = None;
    for mask in 1u32..(1 << k) {
        let mut idx = [0usize; 3];
        let mut s = 0;
        for j in 0..k {
            if mask & (1 << j) != 0 {
                idx[s] = j;
                s += 1;
            }
        }
        if idx[..s].iter().any(|&j| d[j] == 0.0) {
            continue;
        }
        let mut a = [[0.0; 3]; 3];
        let mut b = [0.0; 3];
        for p in 0..s {
            let i = idx[p];
            b[p] = d[i] * nm.h[i];
            for q in 0..s {
                let j = idx[q];
                a[p][q] = d[i] * nm.g[i][j] * d[j];
            }
        }
        let Some(x) = solve_small(a, b, s) else {
            continue;
        };
        if x[..s].iter().any(|&v| !v.is_finite() || v < 0.0) {
            continue;
        }
        // At the support's solution, SSE = tt − h·c.
        let sse = nm.tt - (0..s).map(|p| b[p] * x[p]).sum::<f64>();
        let mut c = [0.0; 3];
        for p in 0..s {
            c[idx[p]] = d[idx[p]] * x[p];
        }
        if best.is_none_or(|(bs, _)| sse < bs) {
            best = Some((sse, c));
        }
    }
    best.map(|(_, c)| c)
}

impl Data {
    pub fn len(&self) -> usize {
        self.ly.len()
    }

    fn k(&self) -> usize {
        if self.joint {
            3
        } else {
            2
        }
    }

    /// Fills the basis columns for exponents θ.
    fn basis(&self, theta: [f64; 2], w: &mut Work) {
        let n = self.len();
        w.phi1.clear();
        w.phi1
            .extend(self.lx.iter().map(|&l| (-theta[0] * l).exp()));
        w.phi2.clear();
        if self.joint {
            w.phi2
                .extend(self.ls.iter().map(|&l| (-theta[1] * l).exp()));
        }
        w.yhat.resize(n, 0.0);
        w.r.resize(n, 0.0);
    }

    /// Σ mᵢ·huber(ln ŷᵢ − ln yᵢ) at c (basis already filled); stores ŷ and the
    /// residuals in `w`. Infinite when some ŷ is not positive.
    fn objective(&self, c: &Coef, w: &mut Work, delta: f64) -> f64 {
        let mut f = 0.0;
        for i in 0..self.len() {
            let mut yh = c[0] + c[1] * w.phi1[i];
            if self.joint {
                yh += c[2] * w.phi2[i];
            }
            if !(yh > 0.0 && yh.is_finite()) {
                return f64::INFINITY;
            }
            let r = yh.ln() - self.ly[i];
            w.yhat[i] = yh;
            w.r[i] = r;
            f += self.m[i] * huber(r, delta);
        }
        f
    }

    /// Normal equations of one step. `gn = None`: the relative-residual start,
    /// `Σ m((ŷ − y)/y)²` (the log residual to first order). `gn = Some(δ)`: the
    /// Gauss–Newton step of the log residual at the current ŷ with Huber weights,
    /// `Σ m·w(r)·(r + (φ·c' − ŷ)/ŷ)²`, i.e. weights m·w/ŷ² and targets ŷ(1 − r).
    fn normal(&self, w: &Work, gn: Option<f64>) -> Normal {
        let k = self.k();
        let mut nm = Normal {
            k,
            g: [[0.0; 3]; 3],
            h: [0.0; 3],
            tt: 0.0,
        };
        for i in 0..self.len() {
            let (v, t) = match gn {
                None => {
                    let y = self.yn[i];
                    (self.m[i] / (y * y), y)
                }
                Some(delta) => {
                    let (yh, r) = (w.yhat[i], w.r[i]);
                    (
                        self.m[i] * huber_weight(r, delta) / (yh * yh),
                        yh * (1.0 - r),
                    )
                }
            };
            let p = [1.0, w.phi1[i], if self.joint { w.phi2[i] } else { 0.0 }];
            for a in 0..k {
                let vp = v * p[a];
                nm.h[a] += vp * t;
                for b in 0..=a {
                    nm.g[a][b] += vp * p[b];
                }
            }
            nm.tt += v * t * t;
        }
        for a in 0..k {
            for b in a + 1..k {
                nm.g[a][b] = nm.g[b][a];
            }
        }
        nm
    }

    /// The gradient and the Gauss–Newton matrix of the profile objective F(u) in
    /// u = ln θ at the solution `c` (ŷ and r already in `w`). By the envelope
    /// theorem the gradient is the partial derivative at fixed c; the matrix is the
    /// Schur complement `Jᵤᵀ W Jᵤ − Jᵤᵀ W J_c (J_cᵀ W J_c)⁻¹ J_cᵀ W Jᵤ` over the free
    /// (positive) coefficients: Golub & Pereyra's projected Jacobian.
    fn reduced_gn(
        &self,
        w: &Work,
        theta: [f64; 2],
        c: &Coef,
        delta: f64,
    ) -> ([f64; 2], [[f64; 2]; 2]) {
        let k = self.k();
        let d = if self.joint { 2 } else { 1 };
        let free: Vec<usize> = (0..k).filter(|&j| c[j] > 0.0).collect();
        let nf = free.len();
        let mut acc = [[0.0; 3]; 3];
        let mut bct = [[0.0; 2]; 3];
        let mut ctt = [[0.0; 2]; 2];
        let mut g = [0.0; 2];
        for i in 0..self.len() {
            let (yh, r) = (w.yhat[i], w.r[i]);
            let wt = self.m[i] * huber_weight(r, delta);
            let phi = [1.0, w.phi1[i], if self.joint { w.phi2[i] } else { 0.0 }];
            let mut jc = [0.0; 3];
            for (p, &j) in free.iter().enumerate() {
                jc[p] = phi[j] / yh;
            }
            let mut ju = [-c[1] * self.lx[i] * w.phi1[i] * theta[0] / yh, 0.0];
            if self.joint {
                ju[1] = -c[2] * self.ls[i] * w.phi2[i] * theta[1] / yh;
            }
            for a in 0..d {
                g[a] += wt * r * ju[a];
                for b in 0..d {
                    ctt[a][b] += wt * ju[a] * ju[b];
                }
                for p in 0..nf {
                    bct[p][a] += wt * jc[p] * ju[a];
                }
            }
            for p in 0..nf {
                for q in 0..nf {
                    acc[p][q] += wt * jc[p] * jc[q];
                }
            }
        }
        // Equilibrate J_cᵀWJ_c and solve it against each column of J_cᵀWJᵤ.
        let mut dg = [0.0; 3];
        for p in 0..nf {
            dg[p] = if acc[p][p] > 0.0 {
                1.0 / acc[p][p].sqrt()
            } else {
                0.0
            };
        }
        let mut a = [[0.0; 3]; 3];
        for p in 0..nf {
            for q in 0..nf {
                a[p][q] = dg[p] * acc[p][q] * dg[q];
            }
        }
        let mut h = ctt;
        let mut sol = [[0.0; 3]; 2];
        for col in 0..d {
            let b = [
                dg[0] * bct[0][col],
                dg[1] * bct[1][col],
                dg[2] * bct[2][col],
            ];
            if let Some(x) = solve_small(a, b, nf) {
                sol[col] = x;
            }
        }
        for r in 0..d {
            for col in 0..d {
                let proj: f64 = (0..nf).map(|p| dg[p] * bct[p][r] * sol[col][p]).sum();
                h[r][col] -= proj;
            }
        }
        (g, h)
    }

    /// The relative-residual least-squares start and its objective.
    fn start(&self, w: &mut Work, delta: f64) -> (Coef, f64) {
        // The constant column has h₀ = Σ m/y > 0, so some support is feasible.
        let c = nnls(&self.normal(w, None)).unwrap_or([1.0, 0.0, 0.0]);
        let f = self.objective(&c, w, delta);
        (c, f)
    }

    /// min over c ≥ 0 of the objective at the basis in `w`, from `warm` (or the
    /// relative-residual start), with at most `max_iter` Gauss–Newton steps
    /// (0: the start alone, a cheap upper bound of the profile objective).
    fn solve_linear(
        &self,
        w: &mut Work,
        warm: Option<Coef>,
        delta: f64,
        max_iter: usize,
    ) -> (Coef, f64) {
        let warm = warm
            .filter(|c| c.iter().all(|v| v.is_finite() && *v >= 0.0) && c.iter().any(|&v| v > 0.0));
        let (mut c, mut f) = match warm {
            Some(c0) => {
                let f0 = self.objective(&c0, w, delta);
                if f0.is_finite() {
                    (c0, f0)
                } else {
                    self.start(w, delta)
                }
            }
            None => self.start(w, delta),
        };
        let total_m: f64 = self.m.iter().sum();
        for _ in 0..max_iter {
            if f <= 1e-30 * total_m {
                break; // an exact fit
            }
            let Some(cn) = nnls(&self.normal(w, Some(delta))) else {
                break;
            };
            // Near the solution the objective changes by about the squared relative
            // step: below 1e-9 that is under rounding, and a line search would only
            // chase it.
            let scale = c.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            if (0..3).all(|j| (cn[j] - c[j]).abs() <= 1e-9 * scale) {
                break;
            }
            let mut t = 1.0;
            let mut next = None;
            for _ in 0..10 {
                let ct = [
                    c[0] + t * (cn[0] - c[0]),
                    c[1] + t * (cn[1] - c[1]),
                    c[2] + t * (cn[2] - c[2]),
                ];
                let ft = self.objective(&ct, w, delta);
                if ft <= f {
                    next = Some((ct, ft));
                    break;
                }
                t *= 0.5;
            }
            let Some((ct, ft)) = next else {
                // No descent along the step: converged to working precision.
                self.objective(&c, w, delta);
                break;
            };
            let scale = c.iter().chain(&ct).fold(0.0f64, |a, v| a.max(v.abs()));
            let step = (0..3).map(|j| (ct[j] - c[j]).abs()).fold(0.0, f64::max);
            let decrease = f - ft;
            c = ct;
            f = ft;
            if step <= 1e-12 * scale || decrease <= 1e-14 * f {
                break;
            }
        }
        (c, f)
    }
}

/// One evaluation of the profile objective: exponents (as ln θ), the linear
/// coefficients there, and the objective.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Eval {
    pub u: [f64; 2],
    pub c: Coef,
    pub f: f64,
}

impl Eval {
    pub fn theta(&self) -> [f64; 2] {
        [self.u[0].exp(), self.u[1].exp()]
    }
}

/// The profile objective F(θ) = min_c objective, over one data set.
pub(crate) struct Profile<'a> {
    data: &'a Data,
    work: Work,
    delta: f64,
}

impl<'a> Profile<'a> {
    pub fn new(data: &'a Data, delta: f64) -> Self {
        Profile {
            data,
            work: Work::default(),
            delta,
        }
    }

    fn dims(&self) -> usize {
        if self.data.joint {
            2
        } else {
            1
        }
    }

    /// F at ln θ = u (clamped into the exponent range).
    pub fn eval(&mut self, u: [f64; 2], warm: Option<Coef>, max_iter: usize) -> Eval {
        let u = [u[0].clamp(u_min(), u_max()), u[1].clamp(u_min(), u_max())];
        self.data.basis([u[0].exp(), u[1].exp()], &mut self.work);
        let (c, f) = self
            .data
            .solve_linear(&mut self.work, warm, self.delta, max_iter);
        Eval { u, c, f }
    }

    /// ln ŷ − ln y at an evaluation, per point.
    pub fn residuals(&mut self, e: &Eval) -> Vec<f64> {
        self.data.basis(e.theta(), &mut self.work);
        self.data.objective(&e.c, &mut self.work, self.delta);
        self.work.r.clone()
    }

    /// Levenberg–Marquardt on u = ln θ over the profile objective, with the reduced
    /// gradient and Gauss–Newton matrix of [`Data::reduced_gn`]; exponents on an edge
    /// whose gradient points outwards are held there. Converges in a handful of
    /// evaluations from a nearby start (a bootstrap replicate from the full-data
    /// optimum), where Nelder–Mead needs dozens.
    fn gn_polish(&mut self, start: Eval, tol: f64) -> Eval {
        let d = self.dims();
        let mut cur = start;
        let mut lambda = 1e-3;
        for _ in 0..60 {
            let theta = cur.theta();
            self.data.basis(theta, &mut self.work);
            self.data.objective(&cur.c, &mut self.work, self.delta);
            let (g, h) = self.data.reduced_gn(&self.work, theta, &cur.c, self.delta);
            // Coordinates held on an edge, and directions the data do not see.
            let free: Vec<usize> = (0..d)
                .filter(|&j| {
                    let at_lo = cur.u[j] <= u_min() + 1e-12 && g[j] > 0.0;
                    let at_hi = cur.u[j] >= u_max() - 1e-12 && g[j] < 0.0;
                    !(at_lo || at_hi) && h[j][j] > 0.0
                })
                .collect();
            if free.is_empty() {
                break;
            }
            let mut accepted = false;
            for _ in 0..12 {
                let mut a = [[0.0; 3]; 3];
                let mut b = [0.0; 3];
                for (p, &i) in free.iter().enumerate() {
                    b[p] = -g[i] / h[i][i].sqrt();
                    for (q, &j) in free.iter().enumerate() {
                        a[p][q] = h[i][j] / (h[i][i].sqrt() * h[j][j].sqrt());
                    }
                    a[p][p] += lambda;
                }
                let Some(x) = solve_small(a, b, free.len()) else {
                    lambda *= 10.0;
                    continue;
                };
                let mut u = cur.u;
                for (p, &i) in free.iter().enumerate() {
                    u[i] = (u[i] + x[p] / h[i][i].sqrt()).clamp(u_min(), u_max());
                }
                let step = (0..d).map(|j| (u[j] - cur.u[j]).abs()).fold(0.0, f64::max);
                if step < tol {
                    return cur;
                }
                let e = self.eval(u, Some(cur.c), 30);
                if e.f < cur.f {
                    let decrease = cur.f - e.f;
                    cur = e;
                    lambda = (lambda * 0.1).max(1e-12);
                    accepted = true;
                    if decrease <= 1e-15 * cur.f {
                        return cur;
                    }
                    break;
                }
                lambda *= 10.0;
            }
            if !accepted {
                break;
            }
        }
        cur
    }

    /// Nelder–Mead in ln θ (standard coefficients 1, 2, ½, ½), clamped to the range;
    /// each evaluation warm-starts the linear solve from the best vertex so far.
    fn nelder_mead(&mut self, start: Eval, step: f64, tol: f64) -> Eval {
        let d = self.dims();
        let iters = 30;
        let mut s: Vec<Eval> = vec![start];
        for j in 0..d {
            let mut u = start.u;
            // Step inwards when the start sits on the upper edge.
            u[j] += if u[j] + step > u_max() { -step } else { step };
            s.push(self.eval(u, Some(start.c), iters));
        }
        let mut evals = d;
        loop {
            s.sort_by(|a, b| a.f.total_cmp(&b.f));
            let size = s[1..]
                .iter()
                .map(|v| {
                    (0..d)
                        .map(|j| (v.u[j] - s[0].u[j]).abs())
                        .fold(0.0, f64::max)
                })
                .fold(0.0, f64::max);
            if size < tol || evals >= NM_MAX_EVALS {
                break;
            }
            let warm = Some(s[0].c);
            let worst = s[d];
            let mut centroid = [0.0, start.u[1]];
            for j in 0..d {
                centroid[j] = s[..d].iter().map(|v| v.u[j]).sum::<f64>() / d as f64;
            }
            let at = |t: f64| {
                let mut u = centroid;
                for j in 0..d {
                    u[j] = centroid[j] + t * (worst.u[j] - centroid[j]);
                }
                u
            };
            let r = self.eval(at(-1.0), warm, iters);
            evals += 1;
            if r.f < s[0].f {
                let e = self.eval(at(-2.0), warm, iters);
                evals += 1;
                s[d] = if e.f < r.f { e } else { r };
            } else if r.f < s[d - 1].f {
                s[d] = r;
            } else {
                let outside = r.f < worst.f;
                let c = self.eval(at(if outside { -0.5 } else { 0.5 }), warm, iters);
                evals += 1;
                if (outside && c.f <= r.f) || (!outside && c.f < worst.f) {
                    s[d] = c;
                } else {
                    for i in 1..=d {
                        let mut u = s[i].u;
                        for j in 0..d {
                            u[j] = s[0].u[j] + 0.5 * (s[i].u[j] - s[0].u[j]);
                        }
                        s[i] = self.eval(u, warm, iters);
                        evals += 1;
                    }
                }
            }
        }
        s.sort_by(|a, b| a.f.total_cmp(&b.f));
        s[0]
    }

    /// Log-spaced grid coordinates (ln θ) with `n` points over the range.
    fn axis(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| u_min() + (u_max() - u_min()) * i as f64 / (n - 1) as f64)
            .collect()
    }

    /// The full-data fit: every grid point solved (warm-started along a snake path),
    /// the best local minima of the grid polished, the best polished point returned.
    pub fn fit_global(&mut self) -> Eval {
        let d = self.dims();
        let n = if d == 1 { GRID_1D } else { GRID_2D };
        let axis = Self::axis(n);
        let h = axis[1] - axis[0];
        let rows = if d == 1 { 1 } else { n };
        let mut grid: Vec<Eval> = Vec::with_capacity(n * rows);
        let mut warm = None;
        for i in 0..rows {
            for jj in 0..n {
                // Snake order: neighbours in the path are neighbours in the grid.
                let j = if i % 2 == 0 { jj } else { n - 1 - jj };
                let u = if d == 1 {
                    [axis[j], 0.0]
                } else {
                    [axis[i], axis[j]]
                };
                let e = self.eval(u, warm, 8);
                warm = Some(e.c);
                grid.push(e);
            }
        }
        // Grid index of (i, j): row i, column j (reversed on odd rows).
        let at = |i: usize, j: usize| -> usize {
            if i % 2 == 0 {
                i * n + j
            } else {
                i * n + (n - 1 - j)
            }
        };
        let mut minima: Vec<usize> = Vec::new();
        for i in 0..rows {
            for j in 0..n {
                let f = grid[at(i, j)].f;
                let mut is_min = true;
                for di in -1i64..=1 {
                    for dj in -1i64..=1 {
                        let (ii, jj) = (i as i64 + di, j as i64 + dj);
                        if (di, dj) == (0, 0)
                            || ii < 0
                            || jj < 0
                            || ii >= rows as i64
                            || jj >= n as i64
                        {
                            continue;
                        }
                        if grid[at(ii as usize, jj as usize)].f < f {
                            is_min = false;
                        }
                    }
                }
                if is_min && f.is_finite() {
                    minima.push(at(i, j));
                }
            }
        }
        minima.sort_by(|&a, &b| grid[a].f.total_cmp(&grid[b].f));
        if minima.is_empty() {
            // Every point finite by construction; keep a start regardless.
            minima.push(
                (0..grid.len())
                    .min_by(|&a, &b| grid[a].f.total_cmp(&grid[b].f))
                    .unwrap_or(0),
            );
        }
        let mut best: Option<Eval> = None;
        for &m in minima.iter().take(POLISH_STARTS) {
            let start = self.eval(grid[m].u, Some(grid[m].c), 50);
            let e = self.nelder_mead(start, h, NM_TOL);
            if best.is_none_or(|b| e.f < b.f) {
                best = Some(e);
            }
        }
        let b = best.unwrap_or(grid[minima[0]]);
        self.eval(b.u, Some(b.c), 200)
    }

    /// A bootstrap replicate's fit. The coarse grid (screened by the cheap
    /// relative-residual solve, an upper bound of F) guards against a replicate whose
    /// optimum lies in another basin; the Levenberg–Marquardt polish starts from the
    /// full-data optimum and, when the coarse grid's best lies elsewhere, from there
    /// too. (Nelder–Mead from the same starts gives the same percentiles to about
    /// 1e-6 for three to four times the work.)
    pub fn fit_replicate(&mut self, full: &Eval) -> Eval {
        let d = self.dims();
        let n = if d == 1 { COARSE_1D } else { COARSE_2D };
        let axis = Self::axis(n);
        let h = axis[1] - axis[0];
        let mut coarse: Option<Eval> = None;
        for i in 0..(if d == 1 { 1 } else { n }) {
            for &uj in &axis {
                let u = if d == 1 { [uj, 0.0] } else { [axis[i], uj] };
                let e = self.eval(u, None, 0);
                if coarse.is_none_or(|c| e.f < c.f) {
                    coarse = Some(e);
                }
            }
        }
        let start = self.eval(full.u, Some(full.c), 50);
        let mut best = self.gn_polish(start, POLISH_TOL_REPLICATE);
        if let Some(c) = coarse {
            let far = (0..d).any(|j| (c.u[j] - full.u[j]).abs() > 1.5 * h);
            if far {
                let start = self.eval(c.u, Some(c.c), 50);
                let e = self.gn_polish(start, POLISH_TOL_REPLICATE);
                if e.f < best.f {
                    best = e;
                }
            }
        }
        self.eval(best.u, Some(best.c), 100)
    }
}

/// Whether an exponent lies on the edge of the searched range.
pub(crate) fn at_edge(theta: f64) -> bool {
    theta <= EXPONENT_MIN * (1.0 + 1e-6) || theta >= EXPONENT_MAX * (1.0 - 1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_matches_constrained_solution() {
        // Unconstrained LS of t = 2 − 1·φ would give a negative coefficient; NNLS
        // must drop it and fit the constant alone (the mean of t with weights 1).
        let phi = [1.0, 2.0, 3.0, 4.0];
        let t: Vec<f64> = phi.iter().map(|p| 2.0 + 0.5 * (1.0 - p)).collect();
        let mut nm = Normal {
            k: 2,
            g: [[0.0; 3]; 3],
            h: [0.0; 3],
            tt: 0.0,
        };
        for (p, ti) in phi.iter().zip(&t) {
            let v = [1.0, *p];
            for a in 0..2 {
                nm.h[a] += v[a] * ti;
                for b in 0..2 {
                    nm.g[a][b] += v[a] * v[b];
                }
            }
            nm.tt += ti * ti;
        }
        let c = nnls(&nm).unwrap();
        let mean = t.iter().sum::<f64>() / 4.0;
        assert!((c[0] - mean).abs() < 1e-12 && c[1] == 0.0, "{c:?}");
    }

    #[test]
    fn huber_is_quadratic_then_linear() {
        assert_eq!(huber(0.05, 0.1), 0.5 * 0.05 * 0.05);
        assert!((huber(1.0, 0.1) - 0.1 * 0.95).abs() < 1e-15);
    }
}
