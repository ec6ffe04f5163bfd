//! `ditbench models` and `ditbench import`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ditbench_model::{config, import, DiTConfig};

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Image size in pixels (the latent is image_size / 8); the paper uses 256 and 512.
    #[arg(long, default_value_t = 256)]
    image_size: i64,
    /// Print a JSON list of objects instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct ModelRow<'a> {
    name: &'a str,
    depth: i64,
    hidden_size: i64,
    num_heads: i64,
    patch_size: i64,
    tokens: i64,
    params: u64,
    gflops: f64,
    paper_gflops: Option<f64>,
    paper_fid_50k_400k: Option<f64>,
}

pub fn run_models(args: &ModelsArgs) -> Result<()> {
    let cfgs = config::presets(args.image_size)?;
    let rows: Vec<ModelRow> = cfgs
        .iter()
        .map(|c| {
            let paper = c.paper_entry();
            ModelRow {
                name: &c.name,
                depth: c.depth,
                hidden_size: c.hidden_size,
                num_heads: c.num_heads,
                patch_size: c.patch_size,
                tokens: c.tokens(),
                params: c.param_count(),
                gflops: (c.gflops() * 1000.0).round() / 1000.0,
                paper_gflops: paper.map(|p| p.gflops),
                paper_fid_50k_400k: paper.map(|p| p.fid_50k_400k),
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "DiT family at {} px (latent {}×{}×4); Gflops = forward MACs per sample (paper convention)",
        args.image_size,
        args.image_size / 8,
        args.image_size / 8
    );
    println!(
        "{:<9} {:>5} {:>6} {:>5} {:>5} {:>6} {:>13} {:>8} {:>11} {:>12}",
        "model", "depth", "hidden", "heads", "patch", "tokens", "params", "Gflops", "paper Gfl", "FID-50K@400K"
    );
    for r in &rows {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<9} {:>5} {:>6} {:>5} {:>5} {:>6} {:>13} {:>8.2} {:>11} {:>12}",
            r.name,
            r.depth,
            r.hidden_size,
            r.num_heads,
            r.patch_size,
            r.tokens,
            group_thousands(r.params),
            r.gflops,
            opt(r.paper_gflops),
            opt(r.paper_fid_50k_400k)
        );
    }
    Ok(())
}

fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The PyTorch checkpoint (`torch.save` of a state dict, or a train.py checkpoint
    /// with "model"/"ema" entries).
    file: PathBuf,
    /// Where to write the safetensors weights.
    #[arg(long)]
    out: PathBuf,
    /// Expected model (e.g. DiT-XL/2), heads included; inferred from the tensor shapes
    /// when omitted.
    #[arg(long)]
    model: Option<String>,
    /// Attention heads of the checkpoint's model when the config is inferred: heads
    /// change no tensor shape, so a width other than the paper's four needs it (the
    /// paper's widths default to the paper's heads).
    #[arg(long, conflicts_with = "model")]
    num_heads: Option<i64>,
    /// Image size for --model (256 or 512 in the paper).
    #[arg(long, default_value_t = 256)]
    image_size: i64,
    /// Entry of a training checkpoint to import ("ema" by default when present, as the
    /// official sample.py does; or "model").
    #[arg(long)]
    key: Option<String>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run_import(args: &ImportArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists; pass --force to overwrite it", args.out.display());
    }
    let expected: Option<DiTConfig> = args
        .model
        .as_deref()
        .map(|m| DiTConfig::preset(m, args.image_size))
        .transpose()?;
    let expect = match &expected {
        Some(c) => import::Expect::Config(c),
        None => import::Expect::Infer { num_heads: args.num_heads },
    };
    let report = import::import_checkpoint(&args.file, &args.out, expect, args.key.as_deref())
        .with_context(|| format!("importing {}", args.file.display()))?;
    println!(
        "imported {} ({} tensors{}) as {}: {}, {} parameters, {:.2} Gflops",
        args.file.display(),
        report.tensors,
        report.entry.as_deref().map(|k| format!(", entry \"{k}\"")).unwrap_or_default(),
        args.out.display(),
        report.config.name,
        group_thousands(report.config.param_count()),
        report.config.gflops()
    );
    println!("{}", report.heads_note());
    Ok(())
}
