//! The fingerprint the trainer records on every evaluation (issue 15 §6): every field
//! filled in, the hashes equal to FNV-1a 64 recomputed here over the extractor's
//! weights file and over statistics recomputed here, and one fingerprint for every
//! run of a sweep (seeds and sizes), so their numbers compare (CPU, a 2-block DiT at
//! 16 px; the built-in feature network of 16 px is trained once and cached, as the
//! demo's).

mod common;

use std::sync::atomic::AtomicBool;

use ditbench_data::{Builtin, Dataset};
use ditbench_eval::extractor::{BuiltinExtractor, ExtractorOptions};
use ditbench_eval::stats::StatsAccumulator;
use ditbench_eval::FeatureExtractor;
use ditbench_model::DiTConfig;
use ditbench_track::{read_run, EvalRow};
use ditbench_train::config::{EvalConfig, Extractor, RunConfig};
use ditbench_train::run::Quiet;
use ditbench_train::{train, Outcome, Provenance, REFERENCE_SEED};
use tch::{Device, Tensor};

fn config(run_id: &str, seed: u64, hidden_size: i64) -> RunConfig {
    let mut c = common::config(2);
    c.run_id = run_id.into();
    c.model = DiTConfig::from_size("S", 4, 16, 3, 10).unwrap();
    c.model.depth = 2;
    c.model.hidden_size = hidden_size;
    c.model.num_heads = 2;
    c.data.image_size = 16;
    c.train.seed = seed;
    c.eval = Some(EvalConfig {
        every: 0,
        num_samples: 4,
        extractor: Extractor::Builtin,
        reference_images: 16,
        sampling: "ddim2".parse().unwrap(),
        cfg_scale: 1.0,
        batch: 4,
        bf16: false,
    });
    c
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

#[test]
fn evaluation_rows_carry_a_complete_fingerprint_shared_by_the_runs_of_a_sweep() {
    let _serial = common::serial();
    let (st, dir) = common::store("fingerprint", "rows");
    // Two runs of one sweep: another seed and another width.
    let runs = [config("fp-a", 3, 64), config("fp-b", 4, 32)];
    let mut rows: Vec<EvalRow> = vec![];
    for cfg in &runs {
        let out = train(&st, cfg, &AtomicBool::new(false), &mut Quiet, &Provenance::default()).unwrap();
        assert_eq!(out, Outcome::Finished { step: 2 });
        let evals = read_run(&dir.join("tests").join(&cfg.run_id)).unwrap().evals;
        assert_eq!(evals.len(), 1, "{}", cfg.run_id);
        rows.push(evals.row(0));
    }
    let r = &rows[0];
    for (field, v) in [
        ("extractor_hash", &r.extractor_hash),
        ("reference_hash", &r.reference_hash),
        ("cfg_mode", &r.cfg_mode),
        ("weights", &r.weights),
        ("vae", &r.vae),
        ("precision", &r.precision),
    ] {
        assert!(v.is_some(), "{field} not recorded: {r:?}");
    }
    assert_eq!(
        (r.cfg_mode.as_deref(), r.weights.as_deref(), r.vae.as_deref(), r.precision.as_deref()),
        (Some("paper"), Some("ema"), Some("none"), Some("fp32"))
    );
    assert_eq!((r.num_samples, r.sampler.as_str(), r.sampling_steps, r.cfg_scale), (4, "ddim", 2, 1.0));

    // The extractor's hash: FNV-1a 64 of the cached weights file it was loaded from.
    let opts = ExtractorOptions::for_size(16);
    let weights = BuiltinExtractor::cache_path(&ditbench_eval::cache_dir().join("extractors"), &opts);
    assert_eq!(r.extractor_hash.as_deref(), Some(hex(ditbench_common::fnv1a64(&std::fs::read(&weights).unwrap())).as_str()));

    // The reference statistics recomputed: the first 16 built-in images of the
    // reference seed, in the evaluator's batches of 4, through the same network.
    let x = BuiltinExtractor::load(&weights, Device::Cpu).unwrap();
    let data = Builtin::new(16, 64, REFERENCE_SEED).unwrap();
    let mut acc = StatsAccumulator::new(x.dim());
    let mut all = vec![];
    for start in (0..16).step_by(4) {
        let mut buf = vec![];
        for i in start..start + 4 {
            buf.extend(data.get(i, false).unwrap().0);
        }
        let f = x.features(&Tensor::from_slice(&buf).reshape([4, 3, 16, 16])).unwrap();
        acc.push(&f).unwrap();
        all.extend(Vec::<f32>::try_from(f.flatten(0, -1)).unwrap());
    }
    let stats = acc.finish().unwrap();
    // The statistics themselves, against the two-pass textbook formulas (ddof = 1).
    let (n, d) = (16usize, x.dim());
    for a in 0..d {
        let mean = (0..n).map(|i| all[i * d + a] as f64).sum::<f64>() / n as f64;
        assert!((mean - stats.mu[a]).abs() < 1e-9, "mu[{a}]");
        for b in (0..d).step_by(7) {
            let mb = (0..n).map(|i| all[i * d + b] as f64).sum::<f64>() / n as f64;
            let cov = (0..n).map(|i| (all[i * d + a] as f64 - mean) * (all[i * d + b] as f64 - mb)).sum::<f64>() / (n - 1) as f64;
            assert!((cov - stats.sigma[a * d + b]).abs() < 1e-9, "sigma[{a},{b}]");
        }
    }
    // FNV-1a 64 over the little-endian f64 bytes of μ, then Σ.
    let bytes: Vec<u8> = stats.mu.iter().chain(&stats.sigma).flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(r.reference_hash.as_deref(), Some(hex(ditbench_common::fnv1a64(&bytes)).as_str()));

    // Both runs: the same fingerprint (another seed, another width), other values.
    assert_eq!(rows[0].fingerprint(), rows[1].fingerprint());
    assert_eq!(rows[0].fingerprint().id(), rows[1].fingerprint().id());
    assert_ne!(rows[0].value, rows[1].value);
    std::fs::remove_dir_all(dir).unwrap();
}
