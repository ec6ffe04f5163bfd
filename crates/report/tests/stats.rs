//! The fits and correlations against numpy/scipy (fixtures made once by
//! scripts/reference/make_report_fixtures.py).

mod common;

use ditbench_report::stats::{fit_power_law, huber_loss, pearson_loglog, spearman, FitMethod};

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: ours {a}, scipy {b}");
}

#[test]
fn correlations_and_fits_equal_scipy_on_every_fixture_set() {
    let fx = common::fixtures();
    for set in ["paper_table4", "noisy_outliers", "ties"] {
        let d = &fx[set];
        let (x, y) = (common::f64s(&d["x"]), common::f64s(&d["y"]));
        close(spearman(&x, &y).unwrap(), d["spearman"].as_f64().unwrap(), 1e-12, &format!("{set} spearman"));
        close(pearson_loglog(&x, &y).unwrap(), d["pearson_loglog"].as_f64().unwrap(), 1e-12, &format!("{set} pearson"));
        let ols = fit_power_law(&x, &y, FitMethod::Ols).unwrap();
        close(ols.a, d["ols"]["a"].as_f64().unwrap(), 1e-10, &format!("{set} ols a"));
        close(ols.b, d["ols"]["b"].as_f64().unwrap(), 1e-10, &format!("{set} ols b"));
        for h in d["huber"].as_array().unwrap() {
            let delta = h["delta"].as_f64().unwrap();
            let f = fit_power_law(&x, &y, FitMethod::Huber { delta }).unwrap();
            close(f.a, h["a"].as_f64().unwrap(), 1e-6, &format!("{set} huber({delta}) a"));
            close(f.b, h["b"].as_f64().unwrap(), 1e-6, &format!("{set} huber({delta}) b"));
            // scipy's cost is the summed Huber loss (not averaged): same objective value.
            let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
            let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
            let ours = huber_loss(&lx, &ly, f.a.ln(), f.b, delta);
            close(ours, h["loss"].as_f64().unwrap(), 1e-9, &format!("{set} huber({delta}) loss"));
        }
    }
}

#[test]
fn huber_discounts_the_outliers_that_pull_least_squares() {
    // The noisy set was made from b = −0.3 with two outliers; Huber (δ = 0.1) lands
    // nearer the generating exponent than least squares does.
    let fx = common::fixtures();
    let d = &fx["noisy_outliers"];
    let (x, y) = (common::f64s(&d["x"]), common::f64s(&d["y"]));
    let ols = fit_power_law(&x, &y, FitMethod::Ols).unwrap();
    let hub = fit_power_law(&x, &y, FitMethod::Huber { delta: 0.1 }).unwrap();
    assert!((hub.b + 0.3).abs() < (ols.b + 0.3).abs(), "huber {hub:?} ols {ols:?}");
}
