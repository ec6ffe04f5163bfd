//! Writes a sample grid of the built-in dataset: one row per class.
//!
//! `cargo run -p ditbench-data --example builtin_grid -- [OUT.png] [SIZE] [PER_CLASS] [SCALE] [SEED]`
//! (defaults: builtin_grid.png 32 12 3 0).

use ditbench_data::{Builtin, Dataset, BUILTIN_CLASSES};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().map(String::as_str).unwrap_or("builtin_grid.png"));
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let per_class: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(12);
    let scale: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let seed: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let ds = Builtin::new(size, per_class * BUILTIN_CLASSES.len(), seed)?;
    ds.write_sample_grid(&out, per_class, scale)?;
    println!(
        "wrote {} ({} classes x {per_class} samples of {size} px, x{scale}); rows: {}",
        out.display(),
        ds.num_classes(),
        ds.class_names().join(", ")
    );
    Ok(())
}
