//! `ditbench sample`: an ADM-format sample archive from a run's EMA weights. Parsing and
//! printing only; the work is in `ditbench_generate`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ditbench_model::CfgMode;
use ditbench_track::Store;
use ditbench_c10d::Ranks;
use ditbench_generate::{find_checkpoint, load_ema, pick_device, sample_to_archive, Decoder, SampleSpec, SamplerKind, Sampling};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// The run whose EMA weights to sample.
    #[arg(long)]
    run: String,
    /// Checkpoint step (default: the latest).
    #[arg(long)]
    step: Option<u64>,
    /// Number of samples (the paper's FID-50K: 50000).
    #[arg(long, default_value_t = 50_000)]
    num: usize,
    /// Classifier-free guidance scale (1.0: none, the paper's Table 4; 1.5: its best FID).
    #[arg(long, default_value_t = 1.0)]
    cfg_scale: f64,
    /// paper: guidance on the first 3 channels of ε (the official code); all: every channel.
    #[arg(long, default_value = "paper")]
    cfg_mode: CfgMode,
    /// Sampling steps (the paper: 250 DDPM steps).
    #[arg(long, default_value_t = 250)]
    sampling_steps: usize,
    /// ddpm or ddim (η = 0).
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddpm)]
    sampler: SamplerKind,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch intra-op threads on the CPU (default: libtorch's).
    #[arg(long)]
    threads: Option<usize>,
    /// Shard the sampling over N local ranks (one per GPU), as sample_ddp.py: rank r
    /// draws batches r, r + N, …; the archive equals one process's, byte for byte.
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Sample under bf16 autocast (fp32 weights; the VAE decodes in fp32). Keep archives
    /// of one precision: a resumed archive is not checked for it.
    #[arg(long)]
    bf16: bool,
    /// The archive (.npz); an unfinished one with the same settings is continued.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(store_path: &Path, a: &SampleArgs) -> Result<i32> {
    if a.nproc_per_node == 0 {
        anyhow::bail!("--nproc-per-node 0: give the number of ranks to start on this machine (1 or more)");
    }
    if a.nproc_per_node > 1 && std::env::var_os("WORLD_SIZE").is_none() {
        return crate::ranks::launch(a.nproc_per_node);
    }
    let sampling = Sampling::new(a.sampler, a.sampling_steps)
        .map_err(|e| anyhow::anyhow!("--sampler {} --sampling-steps {}: {e}", a.sampler, a.sampling_steps))?;
    let store = Store::open_read_only(store_path).with_context(|| format!("opening the run store {}", store_path.display()))?;
    let (cfg, dir) = ditbench_train::run::registered_config(&store, &a.run)?;
    let (step, ckpt) = find_checkpoint(&dir, a.step)?;
    if let Some(t) = a.threads {
        tch::set_num_threads(t as i32);
    }
    let mut ranks = Ranks::from_env()?;
    let lead = ranks.rank() == 0;
    let device = ranks.device_or(pick_device(&a.device).map_err(ditbench_generate::Error::from)?);
    let model = load_ema(&ckpt, &cfg.model, device)?;
    let spec = SampleSpec { num: a.num, batch: a.batch, sampling, cfg_scale: a.cfg_scale, cfg_mode: a.cfg_mode, seed: a.seed, bf16: a.bf16 };
    if lead {
        eprintln!(
            "sampling {} images from {} (EMA, step {step}): {} {} steps, cfg {} ({:?}), class-balanced labels (i mod {}), seed {}{}",
            a.num,
            a.run,
            a.sampler,
            a.sampling_steps,
            a.cfg_scale,
            a.cfg_mode,
            cfg.model.num_classes,
            a.seed,
            if ranks.world() > 1 { format!(", {} ranks", ranks.world()) } else { String::new() }
        );
    }
    let bar = (lead && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(a.num as u64);
        b.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} samples [{elapsed_precise} < {eta_precise}]").expect("valid template"));
        b
    });
    let decoder = Decoder::for_run(&cfg, device)?;
    let path = sample_to_archive(&model, &decoder, &spec, &a.out, &mut ranks, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(path) = path {
        println!("{}: {} samples (arr_0 uint8 N×H×W×3, arr_1 labels)", path.display(), a.num);
    }
    Ok(ditbench_common::exit::OK)
}
