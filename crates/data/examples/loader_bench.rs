//! Throughput of the loader on the built-in dataset: images/s at 32 px with 2 workers,
//! next to one thread rendering on its own.
//!
//! `cargo run --release -p ditbench-data --example loader_bench -- [SECONDS] [WORKERS] [SIZE] [BATCH]`
//! (defaults: 3 2 32 64).

use ditbench_data::{Builtin, Cursor, Dataset, Loader, LoaderConfig, Sampler, SamplerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(args.get(i).map(|s| s.parse::<f64>()).transpose()?.unwrap_or(default))
    };
    let seconds = arg(0, 3.0)?;
    let workers = arg(1, 2.0)? as usize;
    let size = arg(2, 32.0)? as usize;
    let batch = arg(3, 64.0)? as usize;
    let len = 50_000;
    let ds = Arc::new(Builtin::new(size, len, 0)?);

    // One thread, no loader: the cost of generating an image.
    let mut out = vec![0f32; ds.sample_len()];
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed() < Duration::from_secs_f64(seconds / 3.0) {
        ds.get_into(n % len, n % 2 == 0, &mut out)?;
        n += 1;
    }
    let single = n as f64 / t.elapsed().as_secs_f64();

    // The loader: shuffled, random flips, batches of `batch`, `workers` threads.
    let sampler = Sampler::new(len, SamplerConfig::new(0, batch))?;
    let dataset: Arc<dyn Dataset> = ds.clone();
    let mut loader = Loader::new(dataset, sampler, Cursor::default(), LoaderConfig { workers, prefetch: 2 * workers.max(1) })?;
    loader.next_batch()?; // start-up
    let t = Instant::now();
    let mut images = 0usize;
    let mut checksum = 0f64;
    while t.elapsed() < Duration::from_secs_f64(seconds) {
        let b = loader.next_batch()?;
        checksum += b.pixels[0] as f64;
        images += b.labels.len();
    }
    let rate = images as f64 / t.elapsed().as_secs_f64();
    println!(
        "built-in {size} px: one thread renders {single:.0} images/s; loader ({workers} workers, batch {batch}) \
         delivers {rate:.0} images/s ({:.1} batches/s) [checksum {checksum:.3}]",
        rate / batch as f64
    );
    Ok(())
}
