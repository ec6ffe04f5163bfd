//! `ditbench train`: a registered run (`--run ID`) or an ad-hoc one from flags.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use ditbench_data::Dataset;
use ditbench_model::DiTConfig;
use ditbench_track::Store;
use ditbench_train::config::{derive_run_id, AdamWConfigSerde, DataConfig, RunConfig, TrainConfig};
use ditbench_train::{run, Outcome, Progress, Provenance};
use indicatif::{ProgressBar, ProgressStyle};

/// Exit code of a run stopped by a signal after checkpointing: launchers requeue it
/// (EX_TEMPFAIL).
pub const EXIT_PREEMPTED: i32 = 75;
/// Exit code of a run that failed (non-finite loss).
pub const EXIT_FAILED: i32 = 1;

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
    #[arg(long, default_value = "builtin")]
    data: String,
    /// Fail at the first unreadable image of a --data folder, naming it (default: skip
    /// it, report it and count it in the metric data/bad_images).
    #[arg(long)]
    fail_on_bad_image: bool,
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    micro_batch: Option<usize>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 100)]
    log_every: u64,
    #[arg(long, default_value_t = 0)]
    ckpt_every: u64,
    #[arg(long, default_value_t = 0)]
    sample_every: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16 (autocast; fp32 weights).
    #[arg(long, default_value = "auto")]
    precision: String,
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
    #[arg(long, default_value = "adhoc")]
    sweep: String,
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

fn adhoc_config(a: &TrainArgs, model: &str) -> Result<RunConfig> {
    let lower = model.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("dit-").unwrap_or(&lower);
    let Some((size, patch)) = rest.split_once(['/', '-']) else {
        bail!("--model `{model}`: expected SIZE/PATCH such as DiT-S/2")
    };
    let patch: i64 = patch.parse().with_context(|| format!("--model `{model}`: patch is not a number"))?;
    let latents = (a.data != "builtin" && Path::new(&a.data).join(ditbench_data::latents::HEADER_FILE).exists())
        .then(|| ditbench_data::LatentFolder::open(Path::new(&a.data)))
        .transpose()?;
    let (kind, path) = match (&latents, a.data.as_str()) {
        (Some(_), _) => ("latents", Some(a.data.clone().into())),
        (None, "builtin") => ("builtin", None),
        (None, _) => ("imagefolder", Some(a.data.clone().into())),
    };
    let classes = if kind == "builtin" { ditbench_data::BUILTIN_CLASSES.len() as i64 } else { 0 };
    let mut m = DiTConfig::from_size(size, patch, a.image_size as i64, 3, classes.max(1))
        .map_err(|e| anyhow::anyhow!("--model `{model}`: {e}"))?;
    let mut image_size = a.image_size;
    if let Some(l) = &latents {
        // The model's input is what the latents folder holds.
        let h = l.header();
        m = DiTConfig::from_size(size, patch, h.latent_size as i64, h.latent_channels as i64, h.classes.len() as i64)?;
        image_size = h.image_size;
    }
    if let Some(d) = a.depth {
        m.depth = d;
        m.name = format!("{} (depth {d})", m.name);
    }
    if kind == "imagefolder" {
        // Class count comes from the folder.
        let f = ditbench_data::ImageFolder::open(
            Path::new(&a.data),
            ditbench_data::ImageFolderOptions::new(a.image_size as u32),
        )?;
        m.num_classes = f.class_names().len() as i64;
    }
    let data = DataConfig {
        kind: kind.into(),
        path,
        image_size,
        builtin_len: 10_000,
        workers: 1,
        random_flip: true,
        vae: None,
        fail_on_bad_image: a.fail_on_bad_image,
    };
    let train = TrainConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        micro_batch: a.micro_batch,
        optimizer: AdamWConfigSerde { lr: a.lr, ..Default::default() },
        warmup_steps: 0,
        grad_clip: None,
        decay_matrices_only: false,
        ema_decay: a.ema_decay,
        seed: a.seed,
        log_every: a.log_every,
        ckpt_every: a.ckpt_every,
        keep_last: 2,
        sample_every: a.sample_every,
        grid_sampling: "ddim25".into(),
        device: a.device.clone(),
        peak_tflops: a.peak_tflops,
        precision: a.precision.clone(),
        tf32: true,
        activation_checkpointing: a.activation_checkpointing,
        threads: 0,
    };
    let mut cfg = RunConfig { run_id: String::new(), sweep: a.sweep.clone(), model: m, data, train, eval: None };
    // The same flags name the same run, so rerunning a command resumes it.
    cfg.run_id = derive_run_id(&cfg);
    Ok(cfg)
}

fn open_store(path: &Path) -> Result<Store> {
    Store::open(path).with_context(|| format!("opening the run store {}", path.display()))
}

/// The flag that sets a config key in an ad-hoc run, for an error about that key.
fn flag_of(error: &str) -> Option<&'static str> {
    const FLAGS: [(&str, &str); 15] = [
        ("train.steps", "--steps"),
        ("train.batch_size", "--batch-size"),
        ("train.micro_batch", "--micro-batch"),
        ("train.optimizer.lr", "--lr"),
        ("train.ema_decay", "--ema-decay"),
        ("train.seed", "--seed"),
        ("train.log_every", "--log-every"),
        ("train.ckpt_every", "--ckpt-every"),
        ("train.sample_every", "--sample-every"),
        ("train.device", "--device"),
        ("train.precision", "--precision"),
        ("train.peak_tflops", "--peak-tflops"),
        ("train.threads", "--threads"),
        ("data.image_size", "--image-size"),
        ("sweep `", "--sweep"),
    ];
    FLAGS.iter().find(|(key, _)| error.starts_with(key)).map(|(_, flag)| *flag)
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
            // Read-only: looking a run up creates nothing (an older registry is
            // upgraded, as training it would anyway).
            let store = match Store::open_read_only(store_path) {
                Err(ditbench_track::Error::SchemaOutdated { .. }) => open_store(store_path)?,
                r => r.with_context(|| format!("--run {id}"))?,
            };
            run::registered_config(&store, id)?.0
        }
        (None, Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
            RunConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?
        }
        (None, None, Some(model)) => adhoc_config(a, model)?,
        (None, None, None) => bail!("say what to train: --run ID, --config FILE, or --model NAME (e.g. --model DiT-S/4)"),
    };
    if let Some(t) = a.threads {
        cfg.train.threads = t;
    }
    cfg.validate().map_err(|e| match (&a.model, flag_of(&e)) {
        (Some(_), Some(flag)) => anyhow::anyhow!("{flag}: {e}"),
        _ => anyhow::anyhow!("{e}"),
    })?;
    if a.nproc_per_node > 1 && std::env::var_os("WORLD_SIZE").is_none() {
        return crate::ranks::launch(a.nproc_per_node);
    }
    if a.nproc_per_node == 1 && std::env::var_os("WORLD_SIZE").is_none() {
        // A device that does not exist is bad input too (ranks pick theirs from the
        // launcher's variables instead).
        run::pick_device(&cfg.train.device)?;
    }
    let store = open_store(store_path)?;
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
            // (train marked the run failed.) Losing a rank is a failure of the run, not bad input.
            if matches!(e, run::TrainError::Dist(_)) {
                eprintln!("run {} failed: {e}", cfg.run_id);
                return Ok(EXIT_FAILED);
            }
            return Err(e.into());
        }
    };
    let dir = store.run_dir(&cfg.sweep, &cfg.run_id);
    // One line for the user, in words (the outcome's Display, as in the run's log.txt).
    Ok(match outcome {
        Outcome::Finished { .. } => {
            println!("run {} {outcome}: {}", cfg.run_id, dir.display());
            0
        }
        Outcome::Preempted { .. } => {
            println!("run {} {outcome}: {}", cfg.run_id, dir.display());
            EXIT_PREEMPTED
        }
        Outcome::Failed { .. } => {
            eprintln!("run {} {outcome}", cfg.run_id);
            EXIT_FAILED
        }
    })
}
