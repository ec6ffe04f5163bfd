//! A small store written through ditbench-track, and the facts the tests compare with.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ditbench_track::{EvalRow, RunSpec, Status, StatusChange, Store};

pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    /// (run id) -> (model, patch, sweep)
    pub runs: BTreeMap<String, (String, i64, String)>,
    /// (run id) -> fid values written
    pub fids: BTreeMap<String, Vec<f64>>,
    /// (run id) -> number of metric points written and flushed
    pub points: BTreeMap<String, usize>,
}

pub fn fid(i: usize, k: usize) -> f64 {
    100.0 / (1.0 + i as f64) + 10.0 / (1.0 + k as f64)
}

pub fn loss(step: i64, i: usize) -> f64 {
    1.0 / (1.0 + step as f64) + i as f64 * 0.01
}

/// Eight runs in two sweeps; `b-3` is left with uncompacted segments (writer dropped
/// without close, like a crash after a flush) and `b-2` failed.
pub fn build() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    store.register_sweep("a", None).unwrap();
    store.register_sweep("b", None).unwrap();
    let models = [("DiT-S", 2), ("DiT-S", 4), ("DiT-B", 2), ("DiT-B", 4)];
    let mut fx = Fixture {
        root: root.clone(),
        runs: BTreeMap::new(),
        fids: BTreeMap::new(),
        points: BTreeMap::new(),
        _tmp: tmp,
    };
    let mut i = 0;
    for sweep in ["a", "b"] {
        for (j, (model, patch)) in models.iter().enumerate() {
            let id = format!("{sweep}-{j}");
            store
                .register_run(&RunSpec {
                    id: id.clone(),
                    sweep: sweep.into(),
                    model: Some(model.to_string()),
                    patch: Some(*patch),
                    n_params: Some(1000 * (j as i64 + 1)),
                    gflops: Some(1.5 * (j as f64 + 1.0)),
                    git_commit: Some("deadbeef".into()),
                    git_dirty: Some(j % 2 == 0),
                })
                .unwrap();
            store
                .set_params(
                    &id,
                    &[
                        ("lr", (1e-4 * (j as f64 + 1.0)).into()),
                        ("batch", (64 * (j as i64 + 1)).into()),
                        ("ema", (j % 2 == 0).into()),
                        ("model", model.to_string().into()),
                    ],
                )
                .unwrap();
            store
                .set_status(&id, &StatusChange::new(Status::Running).on("host1", "cpu"))
                .unwrap();
            let mut w = store.metric_writer(&id).unwrap();
            let steps = 50 + 10 * i as i64;
            for step in 0..steps {
                w.log_at(step, 1.7e9 + step as f64, "loss", loss(step, i))
                    .unwrap();
                w.log_at(step, 1.7e9 + step as f64, "lr", 1e-4).unwrap();
                if step % 20 == 19 {
                    w.flush().unwrap();
                }
            }
            let mut fids = Vec::new();
            for k in 0..3 {
                let v = fid(i, k);
                fids.push(v);
                w.log_eval(&EvalRow {
                    step: (k as i64 + 1) * 10,
                    wall_time: 1.7e9,
                    metric: "fid".into(),
                    value: v,
                    num_samples: 1000,
                    cfg_scale: 1.0,
                    sampler: "ddpm".into(),
                    sampling_steps: 50,
                    extractor: "inception-v3".into(),
                    extractor_hash: Some("00112233445566ff".into()),
                    reference_hash: Some("8899aabbccddeeff".into()),
                    cfg_mode: Some("paper".into()),
                    weights: Some("ema".into()),
                    vae: Some("none".into()),
                    precision: Some("fp32".into()),
                })
                .unwrap();
            }
            w.flush().unwrap();
            if id == "b-3" {
                drop(w); // flushed, never compacted
            } else {
                w.close().unwrap();
            }
            let end = if id == "b-2" {
                StatusChange::new(Status::Failed).message("CUDA out of memory")
            } else if id == "b-3" {
                StatusChange::new(Status::Running)
            } else {
                StatusChange::new(Status::Finished)
            };
            if id != "b-3" {
                store.set_status(&id, &end).unwrap();
            }
            fx.runs
                .insert(id.clone(), (model.to_string(), *patch, sweep.to_string()));
            fx.fids.insert(id.clone(), fids);
            fx.points.insert(id.clone(), 2 * steps as usize);
            i += 1;
        }
    }
    // Checkpoints and a config for `show`.
    let dir = root.join("a/a-0");
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(dir.join("checkpoints/0000100.safetensors"), b"x").unwrap();
    std::fs::write(dir.join("checkpoints/0000200.safetensors"), b"x").unwrap();
    store
        .write_config("a-0", "[model]\nname = \"DiT-S\"\npatch = 2\n")
        .unwrap();
    fx
}

/// Every file under `root` with its bytes, to prove that reading changed nothing. The
/// index (`index.sqlite*` beside a local store) is left out: it is derived from the run
/// folders, and reading keeps it up to date by design.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with("-shm")
                && !p.to_string_lossy().ends_with("-wal")
                && !p
                    .to_string_lossy()
                    .starts_with(&*root.join(ditbench_track::INDEX_FILE).to_string_lossy())
            {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
