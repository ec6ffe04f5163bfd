//! `ditbench predict`: fit a scaling law on part of a sweep and predict the rest, or
//! list the sweep's stored predictions with their checks. Parsing and printing only; the
//! logic lives in `ditbench-report` (fits: `ditbench-scaling`, storage: `ditbench-track`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ditbench_report::predict::{format_record, predict_and_save, PredictOptions};
use ditbench_report::sweep_name_from_spec;
use ditbench_scaling::{FitOptions, Form};

/// `ditbench predict --sweep NAME --hold-out FILTER`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A sweep spec (TOML); the sweep is its top-level `name`.
    #[arg(value_name = "SPEC", conflicts_with = "sweep")]
    pub spec: Option<PathBuf>,
    /// The sweep, by name, instead of a spec.
    #[arg(long, value_name = "NAME")]
    pub sweep: Option<String>,
    /// What to hold out: largest-size, largest-gflops, last-half, or a SQL boolean
    /// expression over the points columns (run_id, model, size, patch, status, gflops,
    /// batch_size, steps, step, images, fraction, value), e.g. "size = 'XL'".
    #[arg(long, value_name = "FILTER", required_unless_present = "list")]
    pub hold_out: Option<String>,
    /// List the sweep's stored predictions, checked against the runs that finished.
    #[arg(long, conflicts_with_all = ["hold_out", "form", "no_save"])]
    pub list: bool,
    /// Functional form: joint (Q = E + A·G^-α + B·S^-β over every evaluation) or power
    /// (Q = E + A·G^-α over each run's last evaluation) [default: joint when the fitted
    /// runs were evaluated at several steps].
    #[arg(long, value_name = "FORM")]
    pub form: Option<Form>,
    /// Quality metric: fid or FD_<extractor> [default: as the report chooses].
    #[arg(long)]
    pub metric: Option<String>,
    /// Bootstrap replicates (resampling whole runs) for the intervals.
    #[arg(long, default_value_t = FitOptions::default().bootstrap, value_name = "N")]
    pub bootstrap: usize,
    /// Coverage of the intervals.
    #[arg(long, default_value_t = FitOptions::default().level, value_name = "P")]
    pub level: f64,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the prediction without storing it.
    #[arg(long)]
    pub no_save: bool,
}

pub fn run(store: &Path, args: &PredictArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    run_to(store, args, &mut stdout.lock())
}

pub fn run_to(store: &Path, args: &PredictArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let sweep = match (&args.spec, &args.sweep) {
        (_, Some(s)) => s.clone(),
        (Some(spec), None) => sweep_name_from_spec(spec)?,
        (None, None) => anyhow::bail!("name a sweep spec (SPEC) or --sweep NAME"),
    };
    if args.list {
        let st = ditbench_track::Store::open(store)?;
        let (recs, warnings) = st.check_predictions(&sweep, true)?;
        for w in warnings {
            writeln!(out, "warning: {w}")?;
        }
        if recs.is_empty() {
            writeln!(out, "sweep {sweep} has no stored predictions; make one with --hold-out")?;
        }
        for r in &recs {
            write!(out, "{}", format_record(r))?;
        }
        return Ok(());
    }
    if args.bootstrap < 20 {
        anyhow::bail!("--bootstrap must be at least 20 for a {:.0}% interval to mean anything, got {}", args.level * 100.0, args.bootstrap);
    }
    if !(args.level > 0.0 && args.level < 1.0) {
        anyhow::bail!("--level must lie strictly between 0 and 1 (e.g. 0.95), got {}", args.level);
    }
    let hold_out = args.hold_out.clone().expect("clap requires --hold-out without --list");
    let opts = PredictOptions {
        hold_out,
        form: args.form,
        fit: FitOptions { bootstrap: args.bootstrap, level: args.level, seed: args.seed, ..FitOptions::default() },
    };
    let (record, _fit) = predict_and_save(store, &sweep, args.metric.as_deref(), &opts, !args.no_save)
        .with_context(|| format!("predicting sweep {sweep:?} of store {}", store.display()))?;
    write!(out, "{}", format_record(&record))?;
    if !args.no_save {
        let path = store.join(&sweep).join(ditbench_track::PREDICTIONS_DIR).join(format!("{}.json", record.id));
        writeln!(out, "saved {} (checked again by `ditbench predict --list` and whenever a run of the sweep ends)", path.display())?;
    }
    Ok(())
}
