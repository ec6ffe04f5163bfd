//! `ditbench train`: a registered run (`--run ID`) or an ad-hoc one from flags.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use ditbench_common::exit;
use ditbench_track::Store;
use ditbench_train::config::adhoc::{self, AdhocOptions};
use ditbench_train::config::PrecisionSetting;
use ditbench_train::config::RunConfig;
use ditbench_train::{run, Outcome, Progress, Provenance};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Train a registered run (its config.toml in the store).
    #[arg(long, conflicts_with_all = ["model", "config"])]
    run: Option<String>,
    /// Train from a run config file (TOML, as written into run folders).
    #[arg(long, conflicts_with = "model")]
    config: Option<std::path::PathBuf>,
    /// Ad-hoc run: model size and patch (e.g. DiT-S/2) on --data (in pixel space, or on
    /// latents when --data is a latents folder).
    #[arg(long)]
    model: Option<String>,
    /// Override the depth of --model (scaled-down families).
    #[arg(long)]
    depth: Option<i64>,
    /// "builtin" (procedural, no download), a folder of class sub-folders, or a latents
    /// folder (`ditbench latents extract`; the model then takes its shape from it).
    #[arg(long, default_value_t = AdhocOptions::default().data)]
    data: String,
    /// Fail at the first unreadable image of a --data folder, naming it (default: skip
    /// it, report it and count it in the metric data/bad_images).
    #[arg(long)]
    fail_on_bad_image: bool,
    #[arg(long, default_value_t = AdhocOptions::default().image_size)]
    image_size: usize,
    #[arg(long, default_value_t = AdhocOptions::default().steps)]
    steps: u64,
    #[arg(long, default_value_t = AdhocOptions::default().batch_size)]
    batch_size: usize,
    #[arg(long)]
    micro_batch: Option<usize>,
    #[arg(long, default_value_t = AdhocOptions::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = AdhocOptions::default().ema_decay)]
    ema_decay: f64,
    #[arg(long, default_value_t = AdhocOptions::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = AdhocOptions::default().log_every)]
    log_every: u64,
    #[arg(long, default_value_t = AdhocOptions::default().ckpt_every)]
    ckpt_every: u64,
    #[arg(long, default_value_t = AdhocOptions::default().sample_every)]
    sample_every: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = AdhocOptions::default().device)]
    device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16 (autocast; fp32 weights).
    #[arg(long, value_enum, default_value_t = AdhocOptions::default().precision)]
    precision: PrecisionSetting,
    /// Recompute block activations in backward: less memory, about a third more compute.
    #[arg(long)]
    activation_checkpointing: bool,
    /// Peak dense TFLOP/s for MFU (default: the GPU's datasheet value when known).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Data-parallel ranks on this machine: spawns N processes of this command (one per
    /// GPU with NCCL, or N CPU processes with Gloo) that average gradients every step;
    /// the global batch is split between them.
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// libtorch intra-op threads on the CPU (overrides the config; not part of the run's
    /// identity). Launchers set it per run.
    #[arg(long)]
    threads: Option<usize>,
    /// Sweep to file an ad-hoc run under.
    #[arg(long, default_value_t = AdhocOptions::default().sweep)]
    sweep: String,
}

impl TrainArgs {
    /// The ad-hoc run these flags describe, of model `model`.
    fn adhoc(&self, model: &str) -> AdhocOptions {
        AdhocOptions {
            model: model.to_string(),
            depth: self.depth,
            data: self.data.clone(),
            fail_on_bad_image: self.fail_on_bad_image,
            image_size: self.image_size,
            steps: self.steps,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            lr: self.lr,
            ema_decay: self.ema_decay,
            seed: self.seed,
            log_every: self.log_every,
            ckpt_every: self.ckpt_every,
            sample_every: self.sample_every,
            device: self.device.clone(),
            precision: self.precision,
            activation_checkpointing: self.activation_checkpointing,
            peak_tflops: self.peak_tflops,
            sweep: self.sweep.clone(),
        }
    }
}

struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn start(&mut self, first: u64, total: u64) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total).with_position(first);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]")
                    .expect("valid template"),
            );
            self.bar = Some(bar);
        }
    }
    fn step(&mut self, step: u64, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step);
            b.set_message(format!("loss {loss:.4}"));
        }
    }
    fn message(&mut self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Opens the store for training. A filesystem that refuses it (read-only, full,
/// permission) is an I/O failure, not bad input: `Err(code)` after saying so.
fn open_store(path: &Path) -> Result<Result<Store, i32>> {
    match Store::open(path) {
        Ok(store) => Ok(Ok(store)),
        Err(e) => {
            let e = run::TrainError::from(e);
            if e.is_io() {
                eprintln!("error: opening the run store {}: {e}", path.display());
                return Ok(Err(exit::IO_FAILED));
            }
            Err(anyhow::Error::new(e).context(format!("opening the run store {}", path.display())))
        }
    }
}

pub fn run_train(store_path: &Path, a: &TrainArgs) -> Result<i32> {
    if a.nproc_per_node == 0 {
        bail!("--nproc-per-node 0: give the number of ranks to start on this machine (1 or more)");
    }
    // Every input is checked before the store is opened (Store::open creates the folder
    // and the registry): a refused command leaves no store, sweep or run folder behind.
    // Only a registered run (--run) is read from an existing store.
    let mut cfg = match (&a.run, &a.config, &a.model) {
        (Some(id), _, _) => {
            // Read-only: looking a run up creates nothing (an older store is
            // upgraded, as training it would anyway).
            let store = Store::open_read_only(store_path).with_context(|| format!("--run {id}"))?;
            run::registered_config(&store, id)?.0
        }
        (None, Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
            RunConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?
        }
        (None, None, Some(model)) => adhoc::config(&a.adhoc(model))?,
        (None, None, None) => bail!("say what to train: --run ID, --config FILE, or --model NAME (e.g. --model DiT-S/4)"),
    };
    if let Some(t) = a.threads {
        cfg.train.threads = t;
    }
    cfg.validate().map_err(|e| match (&a.model, adhoc::flag_of(&e)) {
        (Some(_), Some(flag)) => anyhow::anyhow!("{flag}: {e}"),
        _ => anyhow::anyhow!("{e}"),
    })?;
    if a.nproc_per_node > 1 && std::env::var_os("WORLD_SIZE").is_none() {
        return crate::ranks::launch(a.nproc_per_node);
    }
    if a.nproc_per_node == 1 && std::env::var_os("WORLD_SIZE").is_none() {
        // A device that does not exist is bad input too (ranks pick theirs from the
        // launcher's variables instead).
        run::pick_device(&cfg.train.device).map_err(run::TrainError::from)?;
    }
    let store = match open_store(store_path)? {
        Ok(store) => store,
        Err(code) => return Ok(code),
    };
    let stop = run::install_stop_flag()?;
    let provenance = Provenance {
        ditbench_version: crate::VERSION.to_string(),
        git_commit: env!("DITBENCH_GIT_COMMIT").to_string(),
        git_dirty: env!("DITBENCH_GIT_DIRTY") == "true",
    };
    let lead = ditbench_c10d::rank_from_env() == 0;
    let mut bar = Bar { bar: None };
    let mut quiet = run::Quiet;
    let progress: &mut dyn Progress = if lead { &mut bar } else { &mut quiet };
    let outcome = match run::train(&store, &cfg, &stop, progress, &provenance) {
        Ok(o) => o,
        Err(e) => {
            // Busy: another process trains the run, nothing was written. An I/O
            // failure or a lost rank: train recorded the failure when it could.
            // Anything else is reported as bad input.
            return match e.exit_code() {
                Some(code) if e.is_busy() => {
                    eprintln!("run {} not trained here: {e}", cfg.run_id);
                    Ok(code)
                }
                Some(code) => {
                    eprintln!("run {} failed: {e}", cfg.run_id);
                    Ok(code)
                }
                None => Err(e.into()),
            };
        }
    };
    let dir = store.run_dir(&cfg.sweep, &cfg.run_id);
    // One line for the user, in words (the outcome's Display, as in the run's log.txt).
    Ok(match outcome {
        Outcome::Finished { .. } => {
            println!("run {} {outcome}: {}", cfg.run_id, dir.display());
            exit::OK
        }
        Outcome::Preempted { .. } => {
            println!("run {} {outcome}: {}", cfg.run_id, dir.display());
            exit::PREEMPTED
        }
        Outcome::Failed { .. } => {
            eprintln!("run {} {outcome}", cfg.run_id);
            exit::FAILED
        }
    })
}
