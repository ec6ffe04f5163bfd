//! Fits against known synthetic truths: recovery, independence of start and order,
//! robustness to an outlier, determinism, and every error.

mod common;

use common::{joint_points, logspace, power_points, rel, JOINT, POWER};
use ditbench_common::SplitMix64;
use ditbench_scaling::{
    fit, optimal_scaling, parabola_scaling, plan, Candidate, Fit, FitError, FitOptions, Form,
    IsoFlopObservation, Params, Point,
};

fn opts(bootstrap: usize) -> FitOptions {
    FitOptions {
        bootstrap,
        ..FitOptions::default()
    }
}

fn assert_params(got: &Params, want: &Params, tol: f64) {
    let pairs = [
        ("E", got.e, want.e),
        ("A", got.a, want.a),
        ("α", got.alpha, want.alpha),
        ("B", got.b.unwrap_or(0.0), want.b.unwrap_or(0.0)),
        ("β", got.beta.unwrap_or(0.0), want.beta.unwrap_or(0.0)),
    ];
    for (name, g, w) in pairs {
        let err = if w == 0.0 { g.abs() } else { rel(g, w) };
        assert!(
            err <= tol,
            "{name}: fitted {g}, truth {w} (relative error {err:e} > {tol:e}); {got:?}"
        );
    }
}

#[test]
fn recovers_a_noise_free_power_law() {
    let pts = power_points(&POWER, &logspace(1.0, 1000.0, 6), 1, 0.0, 1);
    let f = fit(&pts, Form::Power, &opts(0)).unwrap();
    assert_params(&f.params, &POWER, 1e-6);
    assert!(f.objective < 1e-12, "objective {}", f.objective);
    assert_eq!(f.params.b, None);
}

#[test]
fn recovers_a_noise_free_joint_law() {
    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 5),
        &logspace(1e3, 1.6e4, 5),
        1,
        0.0,
        1,
    );
    let f = fit(&pts, Form::Joint, &opts(0)).unwrap();
    assert_params(&f.params, &JOINT, 1e-6);
}

#[test]
fn recovers_a_noise_free_joint_law_in_flops_units() {
    // The same law with x in FLOPs (×1e18) and y in other units (×1e-3): the engine's
    // internal scaling must make the units irrelevant.
    let truth = Params {
        e: 2e-3,
        a: 30e-3 * 1e18f64.powf(0.5),
        alpha: 0.5,
        b: Some(20e-3),
        beta: Some(0.4),
    };
    let sizes: Vec<f64> = logspace(1.0, 100.0, 5).iter().map(|x| x * 1e18).collect();
    let pts = joint_points(&truth, &sizes, &logspace(1e3, 1.6e4, 5), 1, 0.0, 1);
    let f = fit(&pts, Form::Joint, &opts(0)).unwrap();
    assert_params(&f.params, &truth, 1e-6);
}

#[test]
fn noisy_joint_fit_intervals_hold_the_truth() {
    // 6 sizes × 2 seeds × 5 evaluations, 5 % log-normal noise. One data set, so use
    // 99 % intervals to keep a chance miss rare (tests/coverage.rs measures rates).
    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 6),
        &logspace(1e2, 1e4, 5),
        2,
        0.05,
        11,
    );
    let o = FitOptions {
        bootstrap: 200,
        level: 0.99,
        ..FitOptions::default()
    };
    let f = fit(&pts, Form::Joint, &o).unwrap();
    let iv = &f.param_intervals;
    println!(
        "fit {:?}\nintervals {iv:?}\nwarnings {:?}",
        f.params, f.warnings
    );
    assert_eq!(
        (
            f.n_points,
            f.n_groups,
            f.replicates.len() + f.failed_replicates
        ),
        (60, 12, 200)
    );
    for (name, i, truth) in [
        ("E", iv.e, JOINT.e),
        ("A", iv.a, JOINT.a),
        ("α", iv.alpha, JOINT.alpha),
        ("B", iv.b.unwrap(), JOINT.b.unwrap()),
        ("β", iv.beta.unwrap(), JOINT.beta.unwrap()),
    ] {
        assert!(
            i.contains(truth),
            "{name}: truth {truth} outside its 99 % interval {i:?}"
        );
        assert!(i.lo < i.hi, "{name}: empty interval {i:?}");
    }
    assert!(
        (f.params.alpha - JOINT.alpha).abs() < 0.15,
        "α = {}",
        f.params.alpha
    );
    // 5 % noise: the robust residual scale should find it.
    assert!(
        (f.residual_scale - 0.05).abs() < 0.015,
        "residual scale {}",
        f.residual_scale
    );
}

#[test]
fn shuffled_points_give_the_same_fit() {
    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 5),
        &logspace(1e3, 1.6e4, 5),
        2,
        0.05,
        5,
    );
    let mut shuffled = pts.clone();
    let mut rng = SplitMix64::new(99);
    for i in (1..shuffled.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        shuffled.swap(i, j);
    }
    let a = fit(&pts, Form::Joint, &opts(50)).unwrap();
    let b = fit(&shuffled, Form::Joint, &opts(50)).unwrap();
    assert_params(&b.params, &a.params, 1e-6);
    // Groups are resampled by name, so even the intervals agree.
    let (ia, ib) = (&a.param_intervals, &b.param_intervals);
    for (x, y) in [
        (ia.alpha, ib.alpha),
        (ia.e, ib.e),
        (ia.beta.unwrap(), ib.beta.unwrap()),
    ] {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-3);
        assert!(close(x.lo, y.lo) && close(x.hi, y.hi), "{x:?} vs {y:?}");
    }
}

#[test]
fn exponents_near_either_end_of_the_range_are_found() {
    // No starting guess: a small α over four decades of x, a large one over one decade.
    for (alpha, hi) in [(0.03, 1e4), (3.5, 10.0)] {
        let truth = Params { alpha, ..POWER };
        let pts = power_points(&truth, &logspace(1.0, hi, 8), 1, 0.0, 1);
        let f = fit(&pts, Form::Power, &opts(0)).unwrap();
        assert_params(&f.params, &truth, 1e-4);
    }
    for (alpha, beta) in [(0.05, 3.0), (3.0, 0.05)] {
        let truth = Params {
            alpha,
            beta: Some(beta),
            ..JOINT
        };
        // A large exponent is seen over one decade near 1, a small one over many.
        let span = |e: f64, lo: f64| if e > 1.0 { (1.0, 10.0) } else { (lo, lo * 1e4) };
        let ((x0, x1), (s0, s1)) = (span(alpha, 1.0), span(beta, 1e3));
        let pts = joint_points(
            &truth,
            &logspace(x0, x1, 6),
            &logspace(s0, s1, 6),
            1,
            0.0,
            1,
        );
        let f = fit(&pts, Form::Joint, &opts(0)).unwrap();
        assert_params(&f.params, &truth, 1e-4);
    }
}

#[test]
fn an_outlier_moves_the_huber_fit_much_less_than_least_squares() {
    let clean = power_points(&POWER, &logspace(1.0, 1000.0, 8), 3, 0.02, 3);
    let mut dirty = clean.clone();
    dirty[20].y *= 5.0; // one broken evaluation of a large model
    let huber = FitOptions {
        bootstrap: 0,
        ..FitOptions::default()
    };
    let ls = FitOptions {
        huber_delta: f64::INFINITY,
        ..huber.clone()
    };
    let shift = |o: &FitOptions| {
        let a = fit(&clean, Form::Power, o).unwrap();
        let b = fit(&dirty, Form::Power, o).unwrap();
        // Largest change of the predicted curve, in log units, up to 4× the largest x.
        logspace(1.0, 4000.0, 50)
            .iter()
            .map(|&x| (b.params.eval(x, None) / a.params.eval(x, None)).ln().abs())
            .fold(0.0, f64::max)
    };
    let (h, l) = (shift(&huber), shift(&ls));
    println!("curve shift from one ×5 outlier: Huber {h:.4}, least squares {l:.4} (log units)");
    assert!(l > 0.05, "least squares should feel the outlier: {l}");
    assert!(
        h < 0.25 * l,
        "Huber shift {h} is not much below least squares {l}"
    );
}

#[test]
fn same_seed_same_fit() {
    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 5),
        &logspace(1e3, 1.6e4, 5),
        2,
        0.05,
        8,
    );
    let o = FitOptions {
        bootstrap: 60,
        seed: 42,
        ..FitOptions::default()
    };
    let a = serde_json::to_string(&fit(&pts, Form::Joint, &o).unwrap()).unwrap();
    let b = serde_json::to_string(&fit(&pts, Form::Joint, &o).unwrap()).unwrap();
    assert_eq!(a, b);
    // serde_json reads floats back to within an ulp, not always exactly.
    let back: Fit = serde_json::from_str(&a).unwrap();
    assert!(
        rel(
            back.params.alpha,
            fit(&pts, Form::Joint, &o).unwrap().params.alpha
        ) < 1e-15
    );
    let c = fit(&pts, Form::Joint, &FitOptions { seed: 43, ..o }).unwrap();
    assert_ne!(
        serde_json::to_string(&c).unwrap(),
        a,
        "another seed should draw other replicates"
    );
}

#[test]
fn predictions_bracket_the_law() {
    let pts = power_points(&POWER, &logspace(1.0, 100.0, 8), 3, 0.05, 21);
    let f = fit(&pts, Form::Power, &opts(100)).unwrap();
    for x in [1.0, 10.0, 400.0] {
        let p = f.predict(x, None);
        assert!(p.mean_interval.contains(p.value), "{p:?}");
        // The predictive interval adds noise to the law's: it contains it.
        assert!(
            p.interval.lo < p.mean_interval.lo && p.interval.hi > p.mean_interval.hi,
            "{p:?}"
        );
    }
}

fn msg(e: FitError) -> String {
    e.to_string()
}

#[test]
fn every_error_names_its_problem() {
    let p = |g: &str, x: f64, s: Option<f64>, y: f64| Point {
        group: g.into(),
        x,
        s,
        y,
    };
    let three = vec![
        p("a", 1.0, None, 3.0),
        p("b", 2.0, None, 2.0),
        p("c", 4.0, None, 1.5),
    ];

    let e = fit(&three[..2], Form::Power, &opts(0)).unwrap_err();
    assert!(
        matches!(
            e,
            FitError::TooFewPoints {
                have: 2,
                need: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg(e).contains("at least 3 points"));

    let same_x = vec![
        p("a", 1.0, None, 3.0),
        p("b", 1.0, None, 2.0),
        p("c", 4.0, None, 1.5),
    ];
    let e = fit(&same_x, Form::Power, &opts(0)).unwrap_err();
    assert!(
        matches!(
            e,
            FitError::TooFewDistinct {
                what: "x",
                have: 2,
                need: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg(e).contains("distinct x"));

    let joint: Vec<Point> = (0..6)
        .map(|i| p(&format!("r{i}"), 1.0 + (i % 3) as f64, Some(100.0), 2.0))
        .collect();
    let e = fit(&joint, Form::Joint, &opts(0)).unwrap_err();
    assert!(
        matches!(
            e,
            FitError::TooFewDistinct {
                what: "s",
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg(e).contains("distinct s"));

    let one_group: Vec<Point> = three
        .iter()
        .map(|q| Point {
            group: "run".into(),
            ..q.clone()
        })
        .collect();
    let e = fit(&one_group, Form::Power, &opts(10)).unwrap_err();
    assert!(
        matches!(e, FitError::TooFewGroups { have: 1, need: 3 }),
        "{e:?}"
    );
    assert!(msg(e).contains("bootstrap = 0"));
    assert!(
        fit(&one_group, Form::Power, &opts(0)).is_ok(),
        "without a bootstrap one group is fine"
    );

    let mut bad = three.clone();
    bad[2].y = 0.0;
    let e = fit(&bad, Form::Power, &opts(0)).unwrap_err();
    assert_eq!(
        e,
        FitError::NotPositive {
            index: 2,
            field: "y",
            value: 0.0
        }
    );
    assert!(msg(e).contains("point 2: y = 0"));
    bad[2].y = 1.0;
    bad[1].x = f64::NAN;
    assert!(msg(fit(&bad, Form::Power, &opts(0)).unwrap_err()).contains("point 1: x = NaN"));

    let e = fit(&three, Form::Joint, &opts(0)).unwrap_err();
    assert!(matches!(e, FitError::MissingS { index: 0, .. }), "{e:?}");
    assert!(msg(e).contains("no s (training steps)"));

    let e = fit(
        &three,
        Form::Power,
        &FitOptions {
            huber_delta: 0.0,
            ..opts(0)
        },
    )
    .unwrap_err();
    assert!(msg(e).contains("huber_delta = 0"));
    let e = fit(
        &three,
        Form::Power,
        &FitOptions {
            level: 1.5,
            ..opts(0)
        },
    )
    .unwrap_err();
    assert!(matches!(
        e,
        FitError::BadOption {
            option: "level",
            ..
        }
    ));
    assert!(msg(e).contains("between 0 and 1"));

    // Planning errors.
    let power = fit(&three, Form::Power, &opts(0)).unwrap();
    let cand = vec![Candidate {
        label: "S/2".into(),
        gflops: 6.0,
        flops_per_step: 6.0 * 3e9 * 256.0,
    }];
    let e = plan(&power, &cand, 1e18).unwrap_err();
    assert!(matches!(
        e,
        FitError::WrongForm {
            need: Form::Joint,
            have: Form::Power,
            ..
        }
    ));
    assert!(msg(e).contains("needs a joint fit"));
    let e = optimal_scaling(&power, 3e9 * 256.0, &[1e18]).unwrap_err();
    assert!(msg(e).contains("optimal_scaling needs a joint fit"));

    let pts = joint_points(
        &JOINT,
        &logspace(1.0, 100.0, 4),
        &logspace(1e3, 1.6e4, 4),
        1,
        0.0,
        1,
    );
    let joint = fit(&pts, Form::Joint, &opts(0)).unwrap();
    assert_eq!(plan(&joint, &[], 1e18).unwrap_err(), FitError::NoCandidates);
    let bad_cand = vec![Candidate {
        label: "XL/2".into(),
        gflops: -1.0,
        flops_per_step: 1.0,
    }];
    let e = plan(&joint, &bad_cand, 1e18).unwrap_err();
    assert!(msg(e).contains("candidate 0 (XL/2): gflops = -1"));
    let e = plan(&joint, &cand, 0.0).unwrap_err();
    assert_eq!(e, FitError::BadBudget { value: 0.0 });
    assert!(msg(e).contains("budget 0 FLOPs"));
    let e = optimal_scaling(&joint, 0.0, &[1e18]).unwrap_err();
    assert!(matches!(
        e,
        FitError::BadOption {
            option: "flops_per_step_per_gflop",
            ..
        }
    ));

    let mut flat = joint.clone();
    flat.params.b = Some(0.0);
    let e = optimal_scaling(&flat, 3e9, &[1e18]).unwrap_err();
    assert!(matches!(e, FitError::NoInteriorOptimum { .. }), "{e:?}");
    assert!(msg(e).contains("no interior compute-optimal model size"));

    // Parabola errors.
    let o = |budget: f64, g: f64, y: f64| IsoFlopObservation {
        budget,
        group: format!("{budget}-{g}"),
        gflops: g,
        y,
    };
    let e = parabola_scaling(
        &[o(1e18, 1.0, 2.0), o(1e18, 2.0, 1.5), o(1e18, 4.0, 2.0)],
        &opts(0),
    )
    .unwrap_err();
    assert_eq!(e, FitError::TooFewBudgets { have: 1, need: 2 });
    assert!(msg(e).contains("at least 2 distinct budgets"));
    let two_sizes = [
        o(1e18, 1.0, 2.0),
        o(1e18, 2.0, 1.5),
        o(1e19, 1.0, 1.0),
        o(1e19, 2.0, 0.9),
        o(1e19, 4.0, 1.0),
    ];
    let e = parabola_scaling(&two_sizes, &opts(0)).unwrap_err();
    assert!(matches!(e, FitError::TooFewSizes { have: 2, .. }), "{e:?}");
    assert!(msg(e).contains("at least 3 distinct model sizes"));
    let e = parabola_scaling(&[o(-1.0, 1.0, 2.0)], &opts(0)).unwrap_err();
    assert_eq!(
        e,
        FitError::NotPositive {
            index: 0,
            field: "budget",
            value: -1.0
        }
    );
    // DownwardParabola: tests/plan.rs.

    // Form names.
    assert_eq!("joint".parse::<Form>().unwrap(), Form::Joint);
    assert_eq!(" Power ".parse::<Form>().unwrap(), Form::Power);
    let e = "chinchilla".parse::<Form>().unwrap_err();
    assert!(e.to_string().contains("valid forms: \"power\""), "{e}");
    assert_eq!(Form::Joint.formula(), "y = E + A·x^(−α) + B·s^(−β)");
}
