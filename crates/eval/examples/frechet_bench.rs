//! Fréchet distance of two 2048-d statistics on the CPU: ditbench's symmetric-eigen path,
//! against pytorch-fid's `scipy.linalg.sqrtm` formula on the same statistics in the same run.
//!
//!     cargo run -p ditbench-eval --example frechet_bench -- [--dim 2048] [--reps 5] [--no-scipy]
//!
//! The scipy baseline runs `$PYTHON` (default `.venv/bin/python`) on the statistics
//! written as an ADM-style `.npz`; it is skipped when that Python has no scipy.

use std::process::Command;
use std::time::Instant;

use ditbench_eval::frechet::frechet_parts;
use ditbench_eval::npz::write_stats;
use ditbench_eval::stats::StatsAccumulator;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| -> usize {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let (dim, reps) = (opt("--dim", 2048), opt("--reps", 5));
    let scipy = !args.iter().any(|a| a == "--no-scipy");
    let n = 2 * dim as i64; // full-rank covariances with an Inception-like decaying spectrum
    tch::manual_seed(0);
    let decay = Tensor::arange(dim as i64, (Kind::Float, Device::Cpu)).f_div_scalar(dim as f64 / 8.0)?.f_neg()?.f_exp()?;
    let mut stats = Vec::new();
    for (scale, shift) in [(1.0, 0.0), (1.1, 0.05)] {
        let mix = Tensor::randn([dim as i64, dim as i64], (Kind::Float, Device::Cpu)).f_div_scalar((dim as f64).sqrt())?;
        let x = Tensor::randn([n, dim as i64], (Kind::Float, Device::Cpu)).f_mul(&decay)?.f_mm(&mix)?.f_mul_scalar(scale)?.f_add_scalar(shift)?;
        let mut acc = StatsAccumulator::new(dim);
        let t = Instant::now();
        for chunk in x.split(256, 0) {
            acc.push(&chunk)?;
        }
        let s = acc.finish()?;
        eprintln!("stats of {n}×{dim} features in batches of 256: {:.2} s", t.elapsed().as_secs_f64());
        stats.push(s);
    }
    println!("machine: {} CPU threads for libtorch ({}), dim {dim}, {reps} reps", tch::get_num_threads(), std::env::consts::ARCH);
    let mut times = Vec::new();
    let mut fd = 0.0;
    for rep in 0..reps {
        let t = Instant::now();
        let p = frechet_parts(&stats[0], &stats[1])?;
        let dt = t.elapsed().as_secs_f64();
        println!("  ditbench rep {rep}: {dt:.3} s  FD {:.9}", p.distance);
        fd = p.distance;
        times.push(dt);
    }
    let ours = median(times);
    println!("ditbench frechet_distance (eigh): median {ours:.3} s");

    if scipy {
        let dir = tempfile_dir()?;
        let a = dir.join("a.npz");
        let b = dir.join("b.npz");
        write_stats(&a, &stats[0], None)?;
        write_stats(&b, &stats[1], None)?;
        let python = std::env::var("PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
        let script = r#"
import sys, time, warnings, numpy as np
from scipy import linalg
warnings.filterwarnings("ignore")
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
mu1, s1, mu2, s2 = a["mu"], a["sigma"], b["mu"], b["sigma"]
t = time.perf_counter()
covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
covmean = covmean.real
d = mu1 - mu2
fd = d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
print(f"{time.perf_counter() - t:.6f} {fd:.12f}")
"#;
        match Command::new(&python).arg("-c").arg(script).arg(&a).arg(&b).output() {
            Ok(o) if o.status.success() => {
                let out = String::from_utf8_lossy(&o.stdout);
                let mut it = out.split_whitespace();
                let t: f64 = it.next().unwrap_or("nan").parse().unwrap_or(f64::NAN);
                let v: f64 = it.next().unwrap_or("nan").parse().unwrap_or(f64::NAN);
                println!("pytorch-fid formula (scipy.linalg.sqrtm, 1 run): {t:.3} s  FD {v:.9}");
                println!("speed-up {:.1}×, |FD difference| / FD = {:.1e}", t / ours, (v - fd).abs() / fd);
            }
            Ok(o) => println!("scipy baseline failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")),
            Err(e) => println!("scipy baseline skipped ({python}: {e})"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("frechet_bench_{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
