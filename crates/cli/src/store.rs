//! `ditbench store`: where the run store's index lives, and rebuilding it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ditbench_track::{Index, Store};

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Rebuild the store's index from nothing, from the run folders (the folders are
    /// the record; the index only speeds up reading). Same answers as before.
    Reindex,
    /// Where the index lives and why, how many runs and sweeps the store holds, and
    /// which run folders are left out because their records cannot be read.
    Info,
}

pub fn run(store_path: &Path, args: &StoreArgs) -> Result<()> {
    // Read-only: neither command writes into the store (an older store is upgraded
    // in place first, as any command would).
    let store = Store::open_read_only(store_path).with_context(|| format!("opening the run store {}", store_path.display()))?;
    match args.command {
        StoreCommand::Reindex => {
            let t0 = Instant::now();
            let mut index = Index::open(store.root()).context("opening the index")?;
            let report = index.rebuild().context("rebuilding the index")?;
            let loc = index.location().clone();
            println!(
                "reindexed {} run folder(s) of {} in {:.2} s",
                report.folders,
                store.root().display(),
                t0.elapsed().as_secs_f64()
            );
            println!("index         {} ({})", loc.path.display(), loc.why);
            print_warnings(&index.warnings()?);
        }
        StoreCommand::Info => {
            let guard = store.index().context("bringing the index up to date")?;
            let index = guard.as_ref().expect("Store::index opens it");
            let loc = index.location();
            let runs = index.runs(None)?;
            println!("store         {}", store.root().display());
            println!("index         {} ({})", loc.path.display(), loc.why);
            println!("sweeps        {}", index.sweeps()?.len());
            println!("runs          {}", runs.len());
            let mut by_status = std::collections::BTreeMap::new();
            for r in &runs {
                *by_status.entry(r.status.as_str()).or_insert(0usize) += 1;
            }
            for (s, n) in by_status {
                println!("  {s:<11} {n}");
            }
            print_warnings(&index.warnings()?);
        }
    }
    Ok(())
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}
