//! Compute-optimal planning against brute force on a known joint law, and the
//! parabola method against exact isoFLOP data.

mod common;

use common::{joint_points, logspace, rel, JOINT};
use ditbench_scaling::{
    fit, optimal_scaling, parabola_scaling, plan, Candidate, FitError, FitOptions, Form,
    IsoFlopObservation, Params,
};

/// Training FLOPs per step per forward Gflop at batch 256 (3 × 1e9 × 256).
const K: f64 = 3e9 * 256.0;

/// The law along an isoFLOP curve: size G trained for C/(K·G) steps.
fn iso(p: &Params, g: f64, c: f64) -> f64 {
    p.eval(g, Some(c / (K * g)))
}

/// argmin over G of `iso` by brute force: a dense log grid over eight decades, then
/// golden-section refinement inside the best cell.
fn brute_force_g_opt(p: &Params, c: f64) -> f64 {
    let (lo, hi, n) = (1e-4f64.ln(), 1e4f64.ln(), 200_000);
    let at = |i: usize| lo + (hi - lo) * i as f64 / n as f64;
    let f = |u: f64| iso(p, u.exp(), c);
    let best = (0..=n)
        .min_by(|&a, &b| f(at(a)).total_cmp(&f(at(b))))
        .unwrap();
    assert!(
        best > 0 && best < n,
        "optimum outside the brute-force range"
    );
    let (mut a, mut b) = (at(best - 1), at(best + 1));
    let r = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let (x1, x2) = (b - r * (b - a), a + r * (b - a));
        if f(x1) < f(x2) {
            b = x2;
        } else {
            a = x1;
        }
    }
    (0.5 * (a + b)).exp()
}

fn joint_fit(bootstrap: usize) -> ditbench_scaling::Fit {
    // Steps 1..1000 and sizes 1..100 keep the optimum of the budgets below in range.
    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 6),
        &logspace(1.0, 1000.0, 6),
        1,
        0.0,
        1,
    );
    fit(
        &pts,
        Form::Joint,
        &FitOptions {
            bootstrap,
            ..FitOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn plan_picks_the_true_optimum() {
    let f = joint_fit(50);
    let sizes = logspace(1.0, 100.0, 9);
    let candidates: Vec<Candidate> = sizes
        .iter()
        .enumerate()
        .map(|(i, &g)| Candidate {
            label: format!("m{i}"),
            gflops: g,
            flops_per_step: K * g,
        })
        .collect();
    let mut bests = Vec::new();
    for c in [K * 5.0, K * 40.0, K * 300.0, K * 3000.0] {
        let p = plan(&f, &candidates, c).unwrap();
        // Independent truth: the true law at every candidate.
        let truth = (0..sizes.len())
            .min_by(|&a, &b| iso(&JOINT, sizes[a], c).total_cmp(&iso(&JOINT, sizes[b], c)))
            .unwrap();
        println!(
            "budget {c:e}: plan picks {} ({} Gflops), truth {}; share {}",
            p.best, sizes[p.best], truth, p.best_share
        );
        assert_eq!(p.best, truth, "budget {c:e}");
        assert_eq!(p.entries.len(), candidates.len());
        for e in &p.entries {
            assert!(rel(e.steps, c / e.candidate.flops_per_step) < 1e-12);
            assert!(
                rel(e.prediction.value, iso(&JOINT, e.candidate.gflops, c)) < 1e-5,
                "{e:?}"
            );
        }
        assert_eq!(p.replicates, 50);
        assert!(
            p.best_share > 0.9,
            "noise-free replicates agree: {}",
            p.best_share
        );
        bests.push(p.best);
    }
    // The budgets were chosen to span the candidates: the optimum moves.
    assert!(bests.windows(2).all(|w| w[0] < w[1]), "{bests:?}");
}

#[test]
fn optimal_scaling_matches_closed_form_and_brute_force() {
    let f = joint_fit(30);
    let budgets = [K * 5.0, K * 50.0, K * 500.0, K * 5000.0];
    let o = optimal_scaling(&f, K, &budgets).unwrap();
    let (a, b) = (JOINT.alpha, JOINT.beta.unwrap());
    assert!(
        (o.exponent - b / (a + b)).abs() < 1e-6,
        "{} vs β/(α+β) = {}",
        o.exponent,
        b / (a + b)
    );
    assert!(o.interval.contains(o.exponent) || rel(o.interval.lo, o.exponent) < 1e-6);
    for (c, g, iv) in &o.optima {
        // Against brute force on the fitted law (the method) and on the truth.
        let g_fit = brute_force_g_opt(&f.params, *c);
        let g_true = brute_force_g_opt(&JOINT, *c);
        println!(
            "C = {c:e}: G_opt {g:.6}, brute force {g_fit:.6} (truth {g_true:.6}), interval {iv:?}"
        );
        assert!(rel(*g, g_fit) < 1e-6, "G_opt {g} vs brute force {g_fit}");
        assert!(rel(*g, g_true) < 1e-4, "G_opt {g} vs truth {g_true}");
    }
    // The slope between budgets is the exponent.
    let (c0, g0, _) = o.optima[0];
    let (c3, g3, _) = o.optima[3];
    assert!(((g3 / g0).ln() / (c3 / c0).ln() - o.exponent).abs() < 1e-9);
    // The closed form's exponent on arbitrary parameters, against brute force.
    let p = Params {
        e: 0.5,
        a: 7.0,
        alpha: 0.3,
        b: Some(900.0),
        beta: Some(0.9),
    };
    let k_bf = (brute_force_g_opt(&p, 1e16).ln() - brute_force_g_opt(&p, 1e14).ln()) / 100f64.ln();
    assert!(
        (k_bf - 0.9 / 1.2).abs() < 1e-6,
        "brute-force exponent {k_bf} vs β/(α+β) = 0.75"
    );
}

fn obs(budget: f64, gflops: f64, y: f64) -> IsoFlopObservation {
    IsoFlopObservation {
        budget,
        group: format!("{budget:e}-{gflops}"),
        gflops,
        y,
    }
}

/// Exact parabolas in ln G with vertices G*(C) = 2·(C/1e17)^0.6, sampled off-centre.
fn exact_isoflop(curvature: f64) -> (Vec<IsoFlopObservation>, Vec<(f64, f64)>) {
    let mut out = Vec::new();
    let mut vertices = Vec::new();
    for (i, c) in [1e17, 1e18, 1e19, 1e20].into_iter().enumerate() {
        let g_star = 2.0 * (c / 1e17f64).powf(0.6);
        vertices.push((c, g_star));
        for f in [0.3, 0.6, 1.4, 2.5, 5.0] {
            let g = g_star * f;
            let ln_y = 10f64.ln() - 0.1 * i as f64 + curvature * (g / g_star).ln().powi(2);
            out.push(obs(c, g, ln_y.exp()));
        }
    }
    (out, vertices)
}

#[test]
fn parabola_method_recovers_exact_vertices_and_exponent() {
    let (o, vertices) = exact_isoflop(0.3);
    let r = parabola_scaling(
        &o,
        &FitOptions {
            bootstrap: 200,
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.per_budget.len(), 4);
    for ((c, g), (c0, g0)) in r.per_budget.iter().zip(&vertices) {
        assert_eq!(c, c0);
        assert!(rel(*g, *g0) < 1e-9, "vertex {g} vs {g0}");
    }
    assert!((r.exponent - 0.6).abs() < 1e-9, "exponent {}", r.exponent);
    assert!((r.intercept - (2f64.ln() - 0.6 * 1e17f64.ln())).abs() < 1e-7);
    // Exact data: every replicate that can fit finds the same line.
    let iv = r.interval.expect("interval");
    assert!(
        (iv.lo - 0.6).abs() < 1e-9 && (iv.hi - 0.6).abs() < 1e-9,
        "{iv:?}"
    );
    // 5 runs per budget: some resamples draw fewer than 3 sizes somewhere; counted.
    assert!(
        r.failed_replicates > 0 && r.failed_replicates < 100,
        "{}",
        r.failed_replicates
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("could not fit every budget")),
        "{:?}",
        r.notes
    );
}

#[test]
fn parabola_method_refuses_a_downward_parabola() {
    let (o, _) = exact_isoflop(-0.3);
    let e = parabola_scaling(&o, &FitOptions::default()).unwrap_err();
    match &e {
        FitError::DownwardParabola { budget, curvature } => {
            assert_eq!(*budget, 1e17);
            assert!((curvature + 0.3).abs() < 1e-9, "{curvature}");
        }
        other => panic!("expected DownwardParabola, got {other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains("budget 1e17") && m.contains("opens downward") && m.contains("maximum"),
        "{m}"
    );
}

#[test]
fn both_methods_agree_on_a_joint_law() {
    // IsoFLOP runs from the true joint law, sizes spread evenly (in ln G) around each
    // budget's optimum: the parabola's exponent should be near β/(α+β).
    let mut o = Vec::new();
    let budgets = [K * 10.0, K * 100.0, K * 1000.0, K * 10000.0];
    for &c in &budgets {
        let g_opt = brute_force_g_opt(&JOINT, c);
        for f in [0.25, 0.5, 1.0, 2.0, 4.0] {
            o.push(obs(c, g_opt * f, iso(&JOINT, g_opt * f, c)));
        }
    }
    let r = parabola_scaling(
        &o,
        &FitOptions {
            bootstrap: 0,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let k = 0.4 / 0.9;
    println!(
        "parabola exponent {:.4} vs joint-law β/(α+β) {k:.4}; notes {:?}",
        r.exponent, r.notes
    );
    assert!((r.exponent - k).abs() < 0.02, "{} vs {k}", r.exponent);
    assert!(r.interval.is_none());
}
