//! `ditbench sweep …`: plan, run, status, resume, cancel. Parsing and printing only; the
//! logic lives in `ditbench-sweep`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ditbench_common::exit;
use ditbench_sweep::launcher::{Events, RunExit};
use ditbench_sweep::state::{self, Registration, Select};
use ditbench_sweep::{plan, slurm, LaunchReport, LaunchRequest, LauncherKind, Overrides, PlannedRun, SweepSpec};
use ditbench_track::Store;

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SweepCommand {
    /// The runs a spec expands to, with parameters, Gflops, training FLOPs
    /// (3 × forward FLOPs × batch × steps) and hours estimated from throughput measured
    /// in the store. Changes nothing.
    ///
    /// With --budget: a compute-optimal plan instead. The joint law
    /// Q = E + A·G^-α + B·S^-β (G: model Gflops, S: images seen) is fitted on every
    /// evaluation of the sweep in the store, and every model the spec expands to is
    /// trained to each budget; the best (size, patch, steps) per budget is printed with
    /// its predicted quality, interval and bootstrap agreement, then G_opt ∝ C^k.
    Plan {
        spec: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        budget: BudgetArgs,
    },
    /// Register the sweep and train its unfinished runs, each as its own
    /// `ditbench train --run ID` process. Ctrl-C stops gracefully (runs checkpoint and
    /// are marked preempted; `sweep resume` continues).
    Run(LaunchArgs),
    /// Relaunch the runs of a registered sweep that did not finish (by default queued,
    /// preempted, failed, and running ones whose process is gone).
    Resume {
        #[command(flatten)]
        launch: LaunchArgs,
        /// Only these statuses (comma-separated: queued,preempted,failed,running,cancelled).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// A table of the sweep's runs: status, step/total, loss, last FID/FD, images/s, ETA.
    Status {
        spec: PathBuf,
        /// Refresh every 2 s until every run has ended.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop the sweep: its launcher (local: SIGTERM; Slurm: scancel), then mark every
    /// unfinished run cancelled.
    Cancel { spec: PathBuf },
}

/// `sweep plan --budget …`: compute-optimal plans from the sweep's evaluations.
#[derive(clap::Args, Debug)]
pub struct BudgetArgs {
    /// A training compute budget in FLOPs, the unit of the `train FLOPs` column
    /// (6 × Gflops × 10⁹ × batch × steps), e.g. 1e15; repeat for several budgets.
    #[arg(long = "budget", value_name = "FLOPS", value_parser = parse_budget)]
    budgets: Vec<f64>,
    /// Fit on the evaluations of this sweep instead of the spec's own.
    #[arg(long, value_name = "NAME", requires = "budgets")]
    from_sweep: Option<String>,
    /// Also write an isoFLOP sweep spec (TOML) there: for each budget, the models
    /// closest in ln G to its optimum, each trained to the budget.
    #[arg(long, value_name = "PATH", requires = "budgets")]
    write_isoflop: Option<PathBuf>,
    /// Models per budget in the isoFLOP spec (4 to 6).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(4..=6), requires = "write_isoflop")]
    models_per_budget: u64,
    /// Overwrite an existing --write-isoflop file.
    #[arg(long, requires = "write_isoflop")]
    force: bool,
    /// Bootstrap replicates (resampling whole runs) for the intervals.
    #[arg(long, value_name = "N", default_value_t = 400, requires = "budgets")]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0, requires = "budgets")]
    seed: u64,
}

/// A budget as written (`1e15`, `3.5e17`): a positive, finite number of FLOPs.
fn parse_budget(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of FLOPs; give a positive number such as 1e15"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} FLOPs: a budget must be a positive, finite number of training FLOPs (e.g. 1e15)"))
    }
}

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    pub spec: PathBuf,
    /// local or slurm (default: the spec's launcher.kind).
    #[arg(long)]
    launcher: Option<LauncherKind>,
    /// Runs at once (local).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// GPU indices for local runs, one run per GPU: --gpus 0,1.
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<u32>,
    /// libtorch threads per CPU run (default: the spec's, else cores / max-parallel).
    #[arg(long)]
    threads: Option<usize>,
    /// Register a changed spec under a new sweep name instead of refusing.
    #[arg(long)]
    new: bool,
    /// Slurm: partition, account, time limit (override the spec).
    #[arg(long)]
    partition: Option<String>,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    time: Option<String>,
}

pub fn run(store: &Path, args: SweepArgs) -> Result<i32> {
    match args.command {
        SweepCommand::Plan { spec, json, budget } if !budget.budgets.is_empty() => run_budget_plan(store, &spec, json, &budget),
        SweepCommand::Plan { spec, json, .. } => run_plan(store, &spec, json),
        SweepCommand::Run(l) => launch(store, &l, Select::UNFINISHED, false),
        SweepCommand::Resume { launch: l, only } => {
            let select = if only.is_empty() { Select::UNFINISHED } else { parse_select(&only)? };
            launch(store, &l, select, true)
        }
        SweepCommand::Status { spec, watch, json } => run_status(store, &spec, watch, json).map(|()| exit::OK),
        SweepCommand::Cancel { spec } => run_cancel(store, &spec).map(|()| exit::OK),
    }
}

fn parse_select(only: &[String]) -> Result<Select> {
    let mut s = Select { queued: false, preempted: false, failed: false, running: false, cancelled: false };
    for o in only {
        match o.as_str() {
            "queued" => s.queued = true,
            "preempted" => s.preempted = true,
            "failed" => s.failed = true,
            "running" => s.running = true,
            "cancelled" => s.cancelled = true,
            x => bail!("--only `{x}`: valid statuses are queued, preempted, failed, running, cancelled"),
        }
    }
    Ok(s)
}

fn human_flops(f: f64) -> String {
    let e = ["", "K", "M", "G", "T", "P", "E", "Z"];
    let mut v = f;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < e.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", e[i])
}

fn human_hours(h: Option<f64>) -> String {
    match h {
        None => "—".into(),
        Some(h) if h < 1.0 / 60.0 => format!("{:.0} s", h * 3600.0),
        Some(h) if h < 1.0 => format!("{:.1} min", h * 60.0),
        Some(h) => format!("{h:.2} h"),
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(header.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

/// Exit code 2 when a launch would refuse any run (`sweep run` would start nothing).
fn run_plan(store: &Path, spec: &Path, json: bool) -> Result<i32> {
    let spec = SweepSpec::load(spec)?;
    let p = plan(&spec, store)?;
    let code = if p.refused_runs > 0 { exit::BAD_INPUT } else { exit::OK };
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!("sweep {}: {} runs", p.sweep, p.rows.len());
        let rows: Vec<Vec<String>> = p
            .rows
            .iter()
            .map(|r| {
                let status = if r.refused.is_some() { "refused".to_string() } else { r.status.clone().unwrap_or_else(|| "new".into()) };
                vec![
                    r.id.clone(),
                    r.model.clone(),
                    r.params.to_string(),
                    format!("{:.4}", r.gflops),
                    r.steps.to_string(),
                    r.batch.to_string(),
                    human_flops(r.train_flops),
                    human_hours(r.est_hours),
                    status,
                ]
            })
            .collect();
        print_table(&["run", "model", "params", "Gflops", "steps", "batch", "train FLOPs", "est. time", "status"], &rows);
        println!("total: {} training FLOPs, {}", human_flops(p.total_train_flops), human_hours(p.total_hours));
        println!("estimates: {}", p.estimate_basis);
        for r in p.rows.iter().filter(|r| r.refused.is_some()) {
            println!("refused {}: {}", r.id, r.refused.as_deref().unwrap_or_default());
        }
    }
    if p.refused_runs > 0 {
        eprintln!(
            "error: {} of {} runs would be refused at launch; `ditbench sweep run` starts nothing until they are fixed",
            p.refused_runs,
            p.rows.len()
        );
    }
    Ok(code)
}

/// `sweep plan SPEC --budget …`: the fit and the plan live in ditbench-report.
#[cfg(feature = "query")]
fn run_budget_plan(store: &Path, spec_path: &Path, json: bool, a: &BudgetArgs) -> Result<i32> {
    use ditbench_report::isoflop::{self, PlanCandidate, SpecMade};
    let spec = SweepSpec::load(spec_path)?;
    let runs = spec.expand()?;
    let candidates: Vec<PlanCandidate> = runs
        .iter()
        .map(|r| PlanCandidate {
            label: r.config.model.name.clone(),
            size: r.config.model.size.map(|s| s.to_string()),
            patch: Some(r.config.model.patch_size),
            gflops: r.config.model.gflops(),
            batch: r.config.train.batch_size as u64,
            axes: r.axes.clone(),
        })
        .collect();
    let candidates = isoflop::distinct_candidates(&spec.text, candidates)?;
    let sweep = a.from_sweep.clone().unwrap_or_else(|| spec.name.clone());
    let opts = ditbench_scaling::FitOptions { bootstrap: a.bootstrap, seed: a.seed, ..Default::default() };
    let plan = isoflop::plan_sweep(store, &sweep, None, &candidates, &a.budgets, &opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", isoflop::format_plan(&plan));
    }
    if let Some(path) = &a.write_isoflop {
        let mut command = format!("ditbench sweep plan {}", spec_path.display());
        for b in &a.budgets {
            command.push_str(&format!(" --budget {b:e}"));
        }
        if let Some(f) = &a.from_sweep {
            command.push_str(&format!(" --from-sweep {f}"));
        }
        command.push_str(&format!(" --write-isoflop {} --models-per-budget {}", path.display(), a.models_per_budget));
        let made = SpecMade { command, created_at: ditbench_track::now(), source: spec_path.display().to_string() };
        let out = isoflop::isoflop_spec(&plan, &spec.text, a.models_per_budget as usize, &made)?;
        // What is written must be a spec `sweep plan` and `sweep run` accept.
        let written = SweepSpec::parse(&out.text, path).context("the isoFLOP spec made from the plan does not parse (a bug); nothing was written")?;
        let runs = written.expand()?;
        isoflop::save_spec(path, &out.text, a.force)?;
        eprintln!(
            "wrote {}: sweep {}, {} runs ({} models at {} budgets); see it with `ditbench sweep plan {}`",
            path.display(),
            out.name,
            runs.len(),
            out.runs.len(),
            a.budgets.len(),
            path.display()
        );
        for n in &out.notes {
            eprintln!("note: {n}");
        }
        let refused: Vec<String> = runs.iter().filter_map(|r| Some(format!("  {}: {}", r.config.run_id, r.refused.as_deref()?))).collect();
        if !refused.is_empty() {
            eprintln!("warning: {} of its runs would be refused at launch as the source's would:\n{}", refused.len(), refused.join("\n"));
        }
    }
    Ok(exit::OK)
}

#[cfg(not(feature = "query"))]
fn run_budget_plan(_store: &Path, _spec: &Path, _json: bool, _a: &BudgetArgs) -> Result<i32> {
    bail!("sweep plan --budget fits a scaling law with polars and needs the `query` feature; this ditbench was built without it (cargo build -p ditbench)")
}

struct Printer<'a> {
    store: &'a Path,
    total: usize,
    done: usize,
}

impl Events for Printer<'_> {
    fn renamed(&mut self, spec_name: &str, registered: &str) {
        eprintln!("the spec changed since sweep `{spec_name}` was registered: registered it as `{registered}`");
    }
    fn registered(&mut self, reg: &Registration, to_launch: usize, launcher: LauncherKind) {
        self.total = to_launch;
        eprintln!(
            "sweep {}: {} runs ({} new), {to_launch} to launch with the {launcher} launcher; store {}",
            reg.sweep,
            reg.runs.len(),
            reg.new_runs,
            self.store.display()
        );
    }
    fn started(&mut self, run: &PlannedRun, attempt: u32, slot: &str) {
        let again = if attempt > 1 { format!(" (launch {attempt})") } else { String::new() };
        eprintln!("[{}/{}] start  {} {}{again} on {slot}", self.done, self.total, run.config.run_id, run.config.model.name);
    }
    fn adopted(&mut self, run: &PlannedRun, holder: &str) {
        eprintln!("[{}/{}] adopt  {} {}: another process trains it ({holder}); watching it", self.done, self.total, run.config.run_id, run.config.model.name);
    }
    fn ended(&mut self, run: &PlannedRun, exit: &RunExit, will_retry: bool) {
        if !will_retry {
            self.done += 1;
        }
        let what = match exit {
            RunExit::Finished => "finished".to_string(),
            RunExit::Preempted => "preempted (checkpointed)".to_string(),
            RunExit::Failed(w) => format!("FAILED: {w}"),
            RunExit::Crashed(w) => format!("CRASHED: {w}"),
            RunExit::IoFailed(w) => format!("I/O FAILURE: {w}"),
        };
        let retry = if will_retry { ", relaunching" } else { "" };
        eprintln!("[{}/{}] end    {} {what}{retry}", self.done, self.total, run.config.run_id);
    }
    fn stopping(&mut self, active: usize) {
        eprintln!("stopping: asking {active} running run(s) to checkpoint and exit (Ctrl-C again does not kill them)");
    }
}

fn launch(store_path: &Path, a: &LaunchArgs, select: Select, resume: bool) -> Result<i32> {
    let req = LaunchRequest {
        spec: a.spec.clone(),
        launcher: a.launcher,
        overrides: Overrides {
            max_parallel: a.max_parallel,
            gpus: a.gpus.clone(),
            threads: a.threads,
            partition: a.partition.clone(),
            account: a.account.clone(),
            time: a.time.clone(),
        },
        select,
        resume,
        new: a.new,
        git: (Some(env!("DITBENCH_GIT_COMMIT").to_string()), Some(env!("DITBENCH_GIT_DIRTY") == "true")),
        exe: std::env::current_exe().context("locating the ditbench executable")?,
        catch_signals: true,
    };
    let mut printer = Printer { store: store_path, total: 0, done: 0 };
    let outcome = ditbench_sweep::launch(store_path, &req, &mut printer)?;
    match &outcome.report {
        None => println!("nothing to do: every run of sweep {} is finished or cancelled", outcome.sweep),
        Some(LaunchReport::Submitted(sub)) => {
            println!("submitted array job {} ({} tasks); script {}", sub.job_id, sub.runs.len(), sub.script.display());
            println!("watch it with: ditbench sweep status {} --watch", a.spec.display());
        }
        Some(LaunchReport::Ran { summary, stopped, seconds }) => {
            println!(
                "sweep {}: {} finished, {} preempted, {} failed, {} not started ({seconds:.0} s)",
                outcome.sweep,
                summary.finished.len(),
                summary.preempted.len(),
                summary.failed.len(),
                summary.not_started.len(),
            );
            if !summary.still_running.is_empty() {
                println!(
                    "still training in processes this launcher did not start: {} (see `ditbench sweep status {}`)",
                    summary.still_running.join(", "),
                    a.spec.display()
                );
            }
            if *stopped {
                println!("stopped; continue with: ditbench sweep resume {}", a.spec.display());
            }
        }
    }
    Ok(outcome.exit_code())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "—".into())
}

fn run_status(store_path: &Path, spec_path: &Path, watch: bool, json: bool) -> Result<()> {
    let spec = SweepSpec::load(spec_path)?;
    let store = Store::open_read_only(store_path).with_context(|| format!("opening the run store {}", store_path.display()))?;
    let runs = spec.expand()?;
    loop {
        let rows = state::status(&store, &spec.name, &runs)?;
        let queue = if spec.launcher.kind == LauncherKind::Slurm || slurm::submissions(store_path, &spec.name).map(|s| !s.is_empty()).unwrap_or(false) {
            slurm::queue_state(store_path, &spec.name).unwrap_or_default()
        } else {
            Default::default()
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            if watch && std::io::stdout().is_terminal() {
                print!("\x1b[2J\x1b[H");
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let slurm = queue.get(&r.id).map(|(j, s, _)| format!(" [{j} {s}]")).unwrap_or_default();
                    vec![
                        r.id.clone(),
                        format!("{}{slurm}", r.status),
                        r.attempt.to_string(),
                        format!("{}/{}", r.step.map(|s| s.to_string()).unwrap_or_else(|| "—".into()), r.steps),
                        fmt_opt(r.loss, 4),
                        r.quality.as_ref().map(|(m, v)| format!("{m} {v:.2}")).unwrap_or_else(|| "—".into()),
                        fmt_opt(r.images_per_s, 1),
                        r.eta_s.map(|s| human_hours(Some(s / 3600.0))).unwrap_or_else(|| "—".into()),
                    ]
                })
                .collect();
            println!("sweep {} ({} runs)", spec.name, rows.len());
            print_table(&["run", "status", "attempt", "step", "loss", "quality", "img/s", "ETA"], &table);
            let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
            println!(
                "finished {}, running {}, queued {}, preempted {}, failed {}, cancelled {}",
                count("finished"),
                count("running"),
                count("queued"),
                count("preempted"),
                count("failed"),
                count("cancelled")
            );
        }
        let live = rows.iter().any(|r| r.status == "running" || r.status == "queued") || !queue.is_empty();
        if !watch || !live {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn run_cancel(store_path: &Path, spec_path: &Path) -> Result<()> {
    let spec = SweepSpec::load(spec_path)?;
    let store = Store::open(store_path).with_context(|| format!("opening the run store {}", store_path.display()))?;
    if !slurm::submissions(store_path, &spec.name)?.is_empty() {
        let n = slurm::cancel(store_path, &spec.name)?;
        eprintln!("scancel: {n} array job(s); waiting for running tasks to checkpoint and leave the queue");
        // Otherwise the runs, still finishing their step, mark themselves preempted
        // after we marked them cancelled, and the sweep looks resumable.
        let left = slurm::wait_until_gone(store_path, &spec.name, std::time::Duration::from_secs(600))?;
        if !left.is_empty() {
            eprintln!("still in the queue after 600 s: {}; their runs may end as preempted", left.join(", "));
        }
    }
    eprintln!("stopping the local launcher, if one runs; its runs checkpoint first");
    if let Some(pid) = ditbench_sweep::local::stop_launcher(store_path, &spec.name, std::time::Duration::from_secs(600)) {
        eprintln!("local launcher (pid {pid}) stopped");
    }
    let runs = spec.expand()?;
    let done = state::cancel(&store, &runs)?;
    println!("sweep {}: cancelled {} run(s); finished runs are kept", spec.name, done.len());
    Ok(())
}
