//! `ditbench fid …`: Inception weights, reference statistics, FID between two sets.
//! Parsing and printing only; the work is in `ditbench-eval`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ditbench_eval::inception::{default_weights_path, import_weights, InceptionFid};
use ditbench_eval::npz::write_stats;
use ditbench_eval::reference::{adm_metrics, archive_features, fid_between, folder_stats, stats_of, FidStats};
use ditbench_eval::npz::NpzReader;

#[derive(clap::Args, Debug)]
pub struct FidArgs {
    #[command(subcommand)]
    pub command: FidCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum FidCommand {
    /// Convert pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth,
    /// from the mseitzer/pytorch-fid GitHub release) to safetensors in the cache,
    /// checking all 472 tensors.
    ImportWeights {
        pth: PathBuf,
        /// Default: $DITBENCH_CACHE/weights/pt_inception-2015-12-05.safetensors.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Reference statistics (mu, sigma for FID; mu_s, sigma_s for sFID) of a folder of
    /// images or a sample archive (.npz with arr_0), written as an ADM-compatible .npz.
    Stats {
        /// A folder of images (recursive) or an .npz archive.
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Centre-crop folder images to this size (the ADM/DiT crop).
        #[arg(long)]
        image_size: Option<u32>,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// The ADM evaluator's suite for a sample archive against a reference batch (ADM's
    /// VIRTUAL_imagenet256_labeled.npz or any archive): Inception Score (5000-sample
    /// splits), FID, sFID, precision and recall (k = 3), and KID (100 subsets of 1000).
    /// A statistics-only reference gives IS, FID and sFID.
    Evaluate {
        samples: PathBuf,
        reference: PathBuf,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// FID (and sFID) between two sets, each a statistics .npz (ADM reference batch or
    /// `fid stats` output) or a sample archive.
    Distance {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long)]
        json: bool,
    },
}

fn load_net(device: &str) -> Result<InceptionFid> {
    let device = ditbench_generate::pick_device(device).map_err(ditbench_generate::Error::from)?;
    Ok(InceptionFid::load(&default_weights_path(), device)?)
}

pub fn run(args: FidArgs) -> Result<()> {
    match args.command {
        FidCommand::ImportWeights { pth, out } => {
            let out = out.unwrap_or_else(default_weights_path);
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let n = import_weights(&pth, &out)?;
            println!("imported {n} tensors from {} into {}", pth.display(), out.display());
        }
        FidCommand::Stats { source, out, image_size, batch, device } => {
            let net = load_net(&device)?;
            let stats: FidStats = if source.is_dir() {
                folder_stats(&source, &net, image_size, batch, &mut |done, total| eprint!("\r{done}/{total} images"))?
            } else {
                stats_of(&source, Some(&net), batch, &mut |done| eprint!("\r{done} images"))?
            };
            eprintln!();
            write_stats(&out, &stats.pool, stats.spatial.as_ref())?;
            println!("{}: statistics of {} images (pool3 2048-d, spatial 2023-d)", out.display(), stats.images);
        }
        FidCommand::Evaluate { samples, reference, batch, device, json } => {
            let net = load_net(&device)?;
            let s = archive_features(&samples, &net, batch, &mut |d| eprint!("\rsamples: {d} images"))?;
            eprintln!();
            let has_images = NpzReader::open(&reference)?.contains("arr_0");
            let (ref_stats, ref_pool) = if has_images {
                let r = archive_features(&reference, &net, batch, &mut |d| eprint!("\rreference: {d} images"))?;
                eprintln!();
                (r.stats, Some(r.pool3))
            } else {
                (stats_of(&reference, None, batch, &mut |_| {})?, None)
            };
            let m = adm_metrics(&s, &ref_stats, ref_pool.as_ref())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "inception_score": m.inception_score.mean, "inception_score_std": m.inception_score.std,
                        "fid": m.fid, "sfid": m.sfid,
                        "precision": m.precision_recall.map(|p| p.precision), "recall": m.precision_recall.map(|p| p.recall),
                        "kid": m.kid.map(|k| k.mean), "kid_std": m.kid.map(|k| k.std),
                        "samples": m.samples, "reference_images": m.reference_images,
                        "extractor": "inception-v3 (pytorch-fid weights)",
                    })
                );
            } else {
                println!("Inception Score: {:.4} (± {:.4}, {} splits)", m.inception_score.mean, m.inception_score.std, m.inception_score.splits);
                println!("FID: {:.4}", m.fid);
                if let Some(v) = m.sfid {
                    println!("sFID: {v:.4}");
                }
                match m.precision_recall {
                    Some(p) => println!("Precision: {:.4}\nRecall: {:.4}", p.precision, p.recall),
                    None => println!("Precision/Recall: need the reference images (arr_0)"),
                }
                if let Some(k) = m.kid {
                    println!("KID: {:.6} (± {:.6}, subsets of {})", k.mean, k.std, k.subset_size);
                }
                println!("({} samples, {} reference images; pytorch-fid Inception weights)", m.samples, m.reference_images);
            }
        }
        FidCommand::Distance { a, b, batch, device, json } => {
            // Weights are needed only when a side holds images.
            let net = load_net(&device).ok();
            let sa = stats_of(&a, net.as_ref(), batch, &mut |_| {})?;
            let sb = stats_of(&b, net.as_ref(), batch, &mut |_| {})?;
            let (fid, sfid) = fid_between(&sa, &sb)?;
            if json {
                println!("{}", serde_json::json!({"fid": fid, "sfid": sfid, "a": a, "b": b, "extractor": "inception-v3-pool3 (pytorch-fid)"}));
            } else {
                println!("FID  {fid:.4}");
                if let Some(s) = sfid {
                    println!("sFID {s:.4}");
                }
            }
        }
    }
    Ok(())
}
