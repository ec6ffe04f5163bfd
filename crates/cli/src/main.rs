//! The `ditbench` command line: parses arguments, calls the library crates, prints.

mod doctor;
mod fid;
mod latents;
mod models;
#[cfg(feature = "query")]
mod predict;
mod ranks;
#[cfg(feature = "query")]
mod report;
#[cfg(feature = "query")]
mod runs;
mod sample;
mod store;
mod sweep;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ditbench_common::exit;

pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DITBENCH_GIT_COMMIT"),
    ", dirty: ",
    env!("DITBENCH_GIT_DIRTY"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "ditbench",
    version = VERSION,
    about = "A workbench for scaling studies of Diffusion Transformers (DiT, Peebles & Xie 2023)"
)]
struct Cli {
    /// Run store folder [env: DITBENCH_STORE] [default: experiments].
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The DiT family: depth, width, heads, tokens, exact parameters, Gflops and the
    /// paper's FID-50K for each of the 12 presets.
    Models(models::ModelsArgs),
    /// Converts an official DiT checkpoint (torch.save'd state dict, e.g.
    /// DiT-XL-2-256x256.pt) into safetensors, checking every key and shape.
    Import(models::ImportArgs),
    /// What ditbench sees: libtorch, CUDA devices, threads, store, installed weights.
    Doctor,
    /// Train one run (registered with --run, from --config, or ad hoc with --model),
    /// resuming from its latest checkpoint. Exit codes: 0 finished, 75 preempted
    /// (checkpointed, requeue), 1 failed, 2 bad input.
    Train(train::TrainArgs),
    /// Query the run store (read-only): SQL over runs, params, metrics, evals, summaries;
    /// list, show, compare, export.
    #[cfg(feature = "query")]
    Runs(runs::RunsArgs),
    /// Scaling report of a sweep: FID/FD vs Gflops with power-law fits and bootstrap
    /// bands, vs training compute and steps, loss curves, sample grids, the paper's
    /// Table 4 beside it; report.html (self-contained), report.md, summary.json.
    #[cfg(feature = "query")]
    Report(report::ReportArgs),
    /// Fit a scaling law on part of a sweep and predict the held-out runs with 95 %
    /// intervals; the prediction is stored and checked when those runs finish
    /// (`--list` shows them).
    #[cfg(feature = "query")]
    Predict(predict::PredictArgs),
    /// Sample a run's EMA weights into an ADM-format archive (.npz, uint8 N×H×W×3 +
    /// labels), batched and resumable, for `ditbench fid` or the ADM evaluator.
    Sample(sample::SampleArgs),
    /// FID with pytorch-fid's Inception-v3: import its weights, reference statistics of
    /// an image folder or sample archive, FID/sFID between two sets.
    Fid(fid::FidArgs),
    /// Pre-extracted VAE latents: `latents extract` encodes an ImageFolder once (both
    /// flips, posterior mean and std), for training with data.kind = "latents".
    Latents(latents::LatentsArgs),
    /// Sweeps over the DiT family from a spec (sweeps/*.toml): plan, run (local or
    /// Slurm), status, resume, cancel.
    Sweep(sweep::SweepArgs),
    /// The run store itself: `store info` (where its index lives, runs, damaged
    /// folders), `store reindex` (rebuild the index from the run folders).
    Store(store::StoreArgs),
}

fn main() {
    let cli = Cli::parse();
    let store = ditbench_track::resolve_store(cli.store.clone());
    let result = match cli.command {
        Command::Models(args) => models::run_models(&args).map(|()| exit::OK),
        Command::Import(args) => models::run_import(&args).map(|()| exit::OK),
        Command::Doctor => doctor::run(&store).map(|()| exit::OK),
        Command::Train(args) => train::run_train(&store, &args),
        Command::Latents(args) => latents::run(&args).map(|()| exit::OK),
        #[cfg(feature = "query")]
        Command::Runs(args) => runs::run(&store, args).map(|()| exit::OK),
        Command::Sweep(args) => sweep::run(&store, args),
        Command::Store(args) => store::run(&store, &args).map(|()| exit::OK),
        Command::Fid(args) => fid::run(args).map(|()| exit::OK),
        Command::Sample(args) => sample::run(&store, &args),
        #[cfg(feature = "query")]
        Command::Report(args) => report::run_report(&store, &args).map(|()| exit::OK),
        #[cfg(feature = "query")]
        Command::Predict(args) => predict::run(&store, &args).map(|()| exit::OK),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            std::process::exit(exit::BAD_INPUT);
        }
    }
}

/// An error and its causes on one line, each said once. Many library errors write their
/// source's text into their own message (`"{path}: {source}"`) and also return it as
/// `source()`, so anyhow's `{:#}` (message, then every source) would repeat it; a
/// cause whose text the line already holds is left out.
fn error_text(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug)]
    struct WithSource(std::io::Error);
    impl std::fmt::Display for WithSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cfg.toml: {}", self.0)
        }
    }
    impl std::error::Error for WithSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        // A source already in its error's message: `{:#}` says it twice, this once.
        let e = anyhow::Error::new(WithSource(io())).context("loading the run");
        assert_eq!(format!("{e:#}"), "loading the run: cfg.toml: No such file or directory: No such file or directory");
        assert_eq!(error_text(&e), "loading the run: cfg.toml: No such file or directory");
        // A plain chain keeps every cause.
        let e = anyhow::Error::new(io()).context("reading cfg.toml");
        assert_eq!(error_text(&e), "reading cfg.toml: No such file or directory");
    }
}
