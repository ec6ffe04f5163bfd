//! `ditbench report`: the scaling report of a sweep. Parsing and printing only; the
//! logic lives in `ditbench-report`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ditbench_report::{sweep_name_from_spec, write_report, FitChoice, ReportOptions};

/// `ditbench report SPEC | --sweep NAME`: fits, figures and a self-contained HTML
/// report of one sweep (report.html, report.md, summary.json, figures/*.svg|png,
/// data/*.parquet).
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A sweep spec (TOML); the sweep is its top-level `name`.
    #[arg(value_name = "SPEC", required_unless_present = "sweep", conflicts_with = "sweep")]
    pub spec: Option<PathBuf>,
    /// The sweep, by name, instead of a spec.
    #[arg(long, value_name = "NAME")]
    pub sweep: Option<String>,
    /// Output folder [default: reports/<sweep>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Take each run's quality at this training step instead of its last evaluation.
    #[arg(long, value_name = "N")]
    pub step: Option<i64>,
    /// Quality metric: fid or FD_<extractor> [default: fid when every evaluated run
    /// has it, else the FD metric the runs share].
    #[arg(long)]
    pub metric: Option<String>,
    /// The power-law fit drawn on the Gflops figure (both are in summary.json).
    #[arg(long, value_enum, default_value_t = FitArg::Ols)]
    pub fit: FitArg,
    /// Huber threshold on natural-log residuals.
    #[arg(long, default_value_t = 0.1, value_name = "DELTA")]
    pub huber_delta: f64,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The predictions section's hold-out: largest-size, largest-gflops, last-half, or a
    /// SQL expression over the points columns (as `ditbench predict --hold-out`).
    #[arg(long, default_value = "largest-size", value_name = "FILTER")]
    pub hold_out: String,
}

/// `--fit` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitArg {
    /// Least squares in log space.
    Ols,
    /// Huber loss in log space (robust).
    Huber,
}

/// Writes the report of the chosen sweep of the store at `store`, printing where it went
/// and the headline numbers.
pub fn run_report(store: &Path, args: &ReportArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_report_to(store, args, &mut out)
}

/// Like [`run_report`], printing to `out`.
pub fn run_report_to(store: &Path, args: &ReportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let sweep = match (&args.spec, &args.sweep) {
        (_, Some(s)) => s.clone(),
        (Some(spec), None) => sweep_name_from_spec(spec)?,
        (None, None) => anyhow::bail!("name a sweep spec (SPEC) or --sweep NAME"),
    };
    if !(args.huber_delta > 0.0 && args.huber_delta.is_finite()) {
        anyhow::bail!("--huber-delta must be a positive number, got {}", args.huber_delta);
    }
    if args.bootstrap == 0 {
        anyhow::bail!("--bootstrap must be at least 1 (1000 is the default)");
    }
    let out_dir = args.out.clone().unwrap_or_else(|| Path::new("reports").join(&sweep));
    let mut opts = ReportOptions::new(&sweep, out_dir);
    opts.step = args.step;
    opts.metric = args.metric.clone();
    opts.fit = match args.fit {
        FitArg::Ols => FitChoice::Ols,
        FitArg::Huber => FitChoice::Huber,
    };
    opts.huber_delta = args.huber_delta;
    opts.bootstrap = args.bootstrap;
    opts.seed = args.seed;
    opts.hold_out = args.hold_out.clone();
    let r = write_report(store, &opts)
        .with_context(|| format!("writing the report of sweep {sweep:?} from store {}", store.display()))?;
    let s = &r.summary;
    writeln!(out, "wrote {} ({} files in {})", r.html.display(), r.files.len(), r.out_dir.display())?;
    let metric = s.metric.as_deref().unwrap_or("(no quality metric)");
    let c = &s.correlations;
    let f = |v: Option<f64>| v.map_or("missing".to_string(), |v| format!("{v:.4}"));
    writeln!(
        out,
        "{metric} vs Gflops over {} runs: Spearman {}, Pearson (log-log) {}",
        c.n,
        f(c.spearman),
        f(c.pearson_loglog)
    )?;
    if let Some(n) = &c.note {
        writeln!(out, "  {n}")?;
    }
    for (name, fit) in [("ols", &s.fits.ols), ("huber", &s.fits.huber)] {
        match fit.fitted() {
            Some(x) => writeln!(
                out,
                "fit {name}: {metric} = {:.4} * Gflops^{:.4}  (b in [{:.4}, {:.4}], 95% bootstrap)",
                x.fit.a, x.fit.b, x.b_ci[0], x.b_ci[1]
            )?,
            None => {
                if let ditbench_report::build::FitOutcome::NotFitted { error } = fit {
                    writeln!(out, "fit {name}: none ({error})")?;
                }
            }
        }
    }
    match (&s.predictions.held_out, &s.predictions.not_made) {
        (Some(h), _) => {
            let f = |sc: &ditbench_track::Score| match sc.median_abs_log_error {
                Some(m) => format!("median |ln error| {m:.3}, {}/{} inside the {:.0}% interval", sc.inside, sc.checked, h.level * 100.0),
                None => format!("{} pending", sc.pending),
            };
            writeln!(
                out,
                "held-out prediction ({}; fitted on {} runs): last steps {}; all evaluations {}",
                h.hold_out,
                h.fitted_on.len(),
                f(&h.final_score),
                f(&h.score)
            )?;
        }
        (None, Some(why)) => writeln!(out, "held-out prediction: none ({why})")?,
        (None, None) => {}
    }
    for m in &s.missing {
        writeln!(out, "missing: {m}")?;
    }
    for n in &s.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
