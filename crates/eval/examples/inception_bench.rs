//! pool3 extraction speed on the CPU: ditbench's InceptionFid vs pytorch-fid 0.3.0, same
//! images, same thread count, in the same run (the baseline is
//! scripts/bench/fid_features_torch.py, started from here).
//!
//!     cargo run -p ditbench-eval --example inception_bench -- --n 64 --size 64 --threads 2
//!
//! Options: --n N (images), --size S (S×S px), --threads T, --repeats R, --batch-size B
//! (50, pytorch-fid's default), --weights FILE (converted safetensors; default: the
//! installed weights if any, else the closed-form test weights: speed does not depend on
//! the values), --python PATH (default ./.venv/bin/python), --no-baseline.
//! Prints each side's median seconds and images/s, the ratio, and the load average.

#[path = "../tests/inception_support/mod.rs"]
mod inception_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ditbench_eval::inception::{default_weights_path, InceptionFid};
use ditbench_eval::FeatureExtractor;
use tch::{Device, Kind};

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let mut n = 64usize;
    let mut size = 64usize;
    let mut threads = 2i32;
    let mut repeats = 3usize;
    let mut batch_size = 50i64;
    let mut weights: Option<PathBuf> = None;
    let root = Path::new(&manifest_dir()).join("../..");
    let mut python = root.join(".venv/bin/python");
    let mut baseline = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--n" => n = val()?.parse()?,
            "--size" => size = val()?.parse()?,
            "--threads" => threads = val()?.parse()?,
            "--repeats" => repeats = val()?.parse()?,
            "--batch-size" => batch_size = val()?.parse()?,
            "--weights" => weights = Some(val()?.into()),
            "--python" => python = val()?.into(),
            "--no-baseline" => baseline = false,
            _ => anyhow::bail!("unknown option {a}; see the header of examples/inception_bench.rs"),
        }
    }
    tch::set_num_threads(threads);
    let load_before = loadavg();

    let installed = default_weights_path();
    let (mut model, weights_desc) =
        match weights.or_else(|| installed.is_file().then_some(installed)) {
            Some(p) => (
                InceptionFid::load(&p, Device::Cpu)?,
                p.display().to_string(),
            ),
            None => (
                InceptionFid::from_state_dict(
                    inception_support::closed_form_state_dict(),
                    Device::Cpu,
                    Path::new("closed-form"),
                )?,
                "closed-form test weights".to_string(),
            ),
        };
    model.batch_size = batch_size;
    // The same uint8 images as the Python side, in DiT's sample space [-1, 1].
    let img = inception_support::closed_form_images(n, size, size);
    let x = img.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 127.5 - 1.0;
    let _ = model.features(&x.narrow(0, 0, 2.min(n as i64)))?; // warm-up
    let mut secs = Vec::new();
    let mut pool3_mean = 0.0;
    for _ in 0..repeats {
        let t = Instant::now();
        let f = model.features(&x)?;
        secs.push(t.elapsed().as_secs_f64());
        pool3_mean = f.mean(Kind::Double).double_value(&[]);
    }
    let ours = median(&mut secs.clone());
    println!(
        "machine: {} logical CPUs, torch threads {threads}",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    println!("images: {n} × {size}×{size}, batch {batch_size}, weights: {weights_desc}");
    println!(
        "ditbench InceptionFid: median {ours:.3} s ({:.2} images/s), runs {secs:.3?}, pool3 mean {pool3_mean:.6}",
        n as f64 / ours
    );
    if baseline {
        let script = root.join("scripts/bench/fid_features_torch.py");
        let out = Command::new(&python)
            .arg(&script)
            .args([
                "--n",
                &n.to_string(),
                "--size",
                &size.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .args([
                "--repeats",
                &repeats.to_string(),
                "--batch-size",
                &batch_size.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "baseline failed ({}): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))?;
        let theirs = v["median_s"].as_f64().unwrap();
        println!(
            "{}: median {theirs:.3} s ({:.2} images/s), runs {}, pool3 mean {:.6}",
            v["impl"].as_str().unwrap_or("pytorch-fid"),
            n as f64 / theirs,
            v["seconds"],
            v["pool3_mean"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "ratio (ditbench images/s ÷ pytorch-fid images/s): {:.2}×",
            theirs / ours
        );
    }
    println!("load average: before {load_before}; after {}", loadavg());
    Ok(())
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
