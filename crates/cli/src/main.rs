//! The `ditbench` command line: parses arguments, calls the library crates, prints.

mod doctor;
mod models;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Run store folder (default: ./experiments).
    #[arg(long, global = true, env = "DITBENCH_STORE")]
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
}

fn main() {
    let cli = Cli::parse();
    let store = cli.store.clone().unwrap_or_else(|| PathBuf::from("experiments"));
    let result = match cli.command {
        Command::Models(args) => models::run_models(&args),
        Command::Import(args) => models::run_import(&args),
        Command::Doctor => doctor::run(&store),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}
