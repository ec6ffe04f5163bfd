//! Benchmark of the built-in feature extractor at its default recipe: training time,
//! held-out accuracy, feature-extraction throughput, and the Fréchet distances of the
//! degradation check (noise, blur, missing classes), printed as a Markdown table.
//!
//!     cargo run -p ditbench-eval --example extractor_bench -- [--size 32] [--threads 2] [--seed 0] [--repeats 5]
//!
//! FD here is computed by the f64 test helper (tests/extractor_support/fd.rs), independent of
//! the crate's `frechet` module.

#[path = "../tests/extractor_support/fd.rs"]
mod fd;

use std::time::Instant;

use ditbench_eval::extractor::{render_builtin, BuiltinExtractor, ExtractorOptions};
use ditbench_eval::FeatureExtractor;
use tch::Tensor;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes an integer, got {v}")))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let size = arg("--size", 32);
    let threads = arg("--threads", 2);
    let seed = arg("--seed", 0) as u64;
    let repeats = arg("--repeats", 5);
    tch::set_num_threads(threads as i32);
    let opts = ExtractorOptions { seed, threads, ..ExtractorOptions::for_size(size) };
    println!("machine: {} logical CPUs, libtorch threads {threads}", std::thread::available_parallelism()?.get());
    println!("options: {opts:?}");

    let t = Instant::now();
    let e = BuiltinExtractor::train(&opts, |p| {
        if p.step % 50 == 0 || p.step == p.steps {
            eprintln!("  step {:4}/{} loss {:.4} lr {:.2e} {:.1}s", p.step, p.steps, p.loss, p.lr, p.elapsed_s);
        }
    })?;
    let total = t.elapsed().as_secs_f64();
    let r = e.report();
    println!(
        "| {} | train {:.1} s (incl. rendering {:.1} s) | held-out accuracy {:.4} on {} | final loss {:.4} | D = {} |",
        e.name(),
        r.train_seconds,
        total - r.train_seconds,
        r.heldout_accuracy,
        r.heldout_images,
        r.final_loss,
        e.dim()
    );

    // Evaluation sets: indices far beyond the training and held-out ranges.
    let data = ditbench_data::Builtin::new(size, 20_000, opts.data_seed)?;
    let (real_a, _) = render_builtin(&data, 10_000..11_000, threads)?;
    let (real_b, labels_b) = render_builtin(&data, 11_000..12_000, threads)?;

    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let _ = e.features(&real_b)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let med = median(times);
    println!("features: 1000 images in {:.3} s median of {repeats} → {:.0} images/s", med, 1000.0 / med);

    let fa = e.features(&real_a)?;
    let fd = |x: &Tensor| -> anyhow::Result<f64> { Ok(fd::frechet(&fa, &e.features(x)?)) };
    println!("\n| comparison (1000 vs 1000) | FD_{} |\n| --- | --- |", e.name());
    println!("| real A vs real B | {:.4} |", fd(&real_b)?);
    for sigma in [0.1, 0.3, 0.6] {
        println!("| real A vs B + noise σ={sigma} | {:.4} |", fd(&fd::noisy(&real_b, sigma, 17))?);
    }
    for sigma in [0.5, 1.0, 2.0] {
        println!("| real A vs B blurred σ={sigma} px | {:.4} |", fd(&fd::blurred(&real_b, sigma))?);
    }
    // Wrong class statistics: B restricted to classes 0..k (same count, repeated).
    for k in [5i64, 2] {
        let keep = labels_b.lt(k).nonzero().squeeze_dim(1);
        let idx = keep.repeat([1000 / keep.size()[0] + 1]).narrow(0, 0, 1000);
        println!("| real A vs B with only {k} classes | {:.4} |", fd(&real_b.index_select(0, &idx))?);
    }
    Ok(())
}
