//! `ditbench latents extract`: a dataset encoded once with Stable Diffusion's VAE.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ditbench_data::OnBadImage;
use ditbench_generate::{extract_latents, pick_device, ExtractOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct LatentsArgs {
    #[command(subcommand)]
    command: LatentsCommand,
}

#[derive(Debug, Subcommand)]
enum LatentsCommand {
    /// Encode an ImageFolder (ADM centre crop, both flips) into posterior means and
    /// stds scaled by 0.18215, for `data.kind = "latents"`. Resumable: rerun the same
    /// command after an interruption.
    Extract(ExtractArgs),
}

#[derive(Debug, Args)]
struct ExtractArgs {
    /// ImageFolder root: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// The VAE: a diffusers folder (config.json + diffusion_pytorch_model.safetensors),
    /// e.g. a download of stabilityai/sd-vae-ft-ema.
    #[arg(long)]
    vae: PathBuf,
    /// Output folder (created; an unfinished extraction there is continued).
    #[arg(long)]
    out: PathBuf,
    /// Centre-crop side in pixels (the paper: 256 or 512).
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    /// Images per VAE batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Threads decoding images.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Stop at the first unreadable image instead of skipping and counting it.
    #[arg(long)]
    fail_on_bad_image: bool,
}

pub fn run(a: &LatentsArgs) -> Result<()> {
    let LatentsCommand::Extract(a) = &a.command;
    let device = pick_device(&a.device).map_err(ditbench_generate::Error::from)?;
    let opts = ExtractOptions {
        data: a.data.clone(),
        vae: a.vae.clone(),
        out: a.out.clone(),
        image_size: a.image_size,
        batch: a.batch,
        device,
        workers: a.workers,
        on_bad_image: if a.fail_on_bad_image { OnBadImage::Fail } else { OnBadImage::Skip },
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images [{elapsed_precise} < {eta_precise}]").expect("valid template"));
        b
    });
    let h = extract_latents(&opts, &mut |done, total| match &bar {
        Some(b) => {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        None if done == total || done % 1000 < a.batch => eprintln!("latents: {done}/{total} images"),
        None => {}
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!(
        "{}: {} images ({} skipped) → {}×{}×{} latents of {} px crops, {} classes, both flips, posterior mean and std × {}",
        a.out.display(),
        h.count,
        h.skipped,
        h.latent_channels,
        h.latent_size,
        h.latent_size,
        h.image_size,
        h.classes.len(),
        h.scaling_factor
    );
    Ok(())
}
