//! End-to-end checks of the built `ditbench` binary: it finds libtorch without any
//! environment (RUNPATH), keeps libtorch_cuda linked (LIBTORCH.md pitfalls 1 and 2), and
//! its commands print what the paper's Table 4 says.

mod common;

use std::process::Command;

use common::{ditbench, repo_root, walk};

fn readelf_dynamic() -> String {
    let out = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_ditbench")])
        .output()
        .expect("readelf (binutils) is installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn runpath_points_at_libtorch_and_libtorch_cuda_stays_linked() {
    let dynamic = readelf_dynamic();
    let runpath = dynamic
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .expect("the binary has a RUNPATH");
    let dir = runpath.split('[').nth(1).unwrap().trim_end_matches(']').split(':').next().unwrap();
    assert!(std::path::Path::new(dir).join("libtorch_cpu.so").exists(), "{dir} holds libtorch");
    assert!(dynamic.contains("[libtorch_cpu.so]"), "{dynamic}");
    // The wheel used here is the CUDA build; its CUDA library must not be dropped by
    // --as-needed, or a GPU machine would silently train on the CPU.
    if std::path::Path::new(dir).join("libtorch_cuda.so").exists() {
        assert!(dynamic.contains("[libtorch_cuda.so]"), "libtorch_cuda.so is NEEDED:\n{dynamic}");
    }
}

#[test]
fn runs_without_ld_library_path_and_reports_its_commit() {
    let out = ditbench().arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(v.starts_with("ditbench 0.") && v.contains("commit "), "{v}");
}

#[test]
fn models_json_matches_the_papers_table4() {
    let out = ditbench().args(["models", "--json"]).output().unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 12);
    for e in ditbench_model::PAPER_TABLE4 {
        let row = rows.iter().find(|r| r["name"] == e.name).unwrap();
        assert_eq!(row["params"].as_u64().unwrap(), e.params, "{}", e.name);
        assert!((row["gflops"].as_f64().unwrap() - e.gflops).abs() <= 0.02, "{}", e.name);
        assert_eq!(row["paper_fid_50k_400k"].as_f64().unwrap(), e.fid_50k_400k);
    }
}

#[test]
fn doctor_reports_libtorch_and_cuda() {
    let store = std::env::temp_dir().join(format!("ditbench-doctor-{}", std::process::id()));
    let out = ditbench().args(["doctor", "--store"]).arg(&store).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("libtorch      2.11.0"), "{s}");
    assert!(s.contains("CUDA          "), "{s}");
    assert!(s.contains("does not exist yet"), "{s}");
}

#[test]
fn bad_input_gives_clear_errors_and_exit_code_2() {
    let out = ditbench().args(["import", "nothing.pt", "--out", "/tmp/x.st", "--model", "DiT-M/2", "--force"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("unknown model `DiT-M/2`") && e.contains("DiT-XL/2"), "{e}");
    let out = ditbench().args(["models", "--image-size", "100"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 8"));
}

/// A run trained by the binary is visible to `ditbench runs` (the query layer reading the
/// store the training wrote), with the losses it logged.
#[test]
fn train_then_query_the_store() {
    let store = std::env::temp_dir().join(format!("ditbench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let out = ditbench()
        .args(["--store"])
        .arg(&store)
        .args(["train", "--model", "S/4", "--depth", "1", "--image-size", "8", "--steps", "4"])
        .args(["--batch-size", "4", "--log-every", "2", "--device", "cpu", "--sweep", "e2e"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("finished at step 4"), "{stdout}");

    let q = ditbench()
        .args(["--store"])
        .arg(&store)
        .args(["runs", "query", "SELECT step, value FROM metrics WHERE name = 'loss' ORDER BY step", "--json"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["step"].as_i64().unwrap()).collect::<Vec<_>>(), vec![2, 4]);
    assert!(rows.iter().all(|r| r["value"].as_f64().unwrap().is_finite()));

    let l = ditbench().args(["--store"]).arg(&store).args(["runs", "list", "--csv"]).output().unwrap();
    let csv = String::from_utf8(l.stdout).unwrap();
    assert!(csv.contains(",e2e,") && csv.contains("finished"), "{csv}");
}

/// `latents extract` on a small image folder with the fixture VAE (random weights,
/// 2× downsampling: crates/model/tests/fixtures/vae), then an ad-hoc run on the latents
/// that takes its shape (4×8×8, 2 classes) from the folder.
#[test]
fn latents_extract_then_train_on_them() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(20, 18, |x, y| image::Rgb([x as u8 * 9 + i, y as u8 * 7, 40 * i]));
            img.save(images.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let vae = repo_root().join("crates/model/tests/fixtures/vae");
    let latents = tmp.path().join("latents");
    let out = ditbench()
        .args(["latents", "extract", "--data"])
        .arg(&images)
        .arg("--vae")
        .arg(&vae)
        .arg("--out")
        .arg(&latents)
        .args(["--image-size", "16", "--batch", "4", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("6 images (0 skipped)") && stdout.contains("4×8×8 latents of 16 px"), "{stdout}");

    let store = tmp.path().join("store");
    let out = ditbench()
        .arg("--store")
        .arg(&store)
        .args(["train", "--model", "S/4", "--depth", "1", "--steps", "2", "--batch-size", "4", "--device", "cpu"])
        .args(["--sweep", "lat", "--data"])
        .arg(&latents)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = walk(&store).into_iter().find(|p| p.ends_with("config.toml")).expect("a run config");
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("kind = \"latents\"") && text.contains("in_channels = 4") && text.contains("input_size = 8"), "{text}");
}

/// The model weights (`model.` tensors) of a run's checkpoint at `step`.
fn checkpoint_weights(store: &std::path::Path, step: u64) -> Vec<(String, tch::Tensor)> {
    let path = walk(store)
        .into_iter()
        .find(|p| p.ends_with(format!("checkpoints/{step:07}.safetensors")))
        .unwrap_or_else(|| panic!("no checkpoint at step {step} under {}", store.display()));
    let mut w: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("model."))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

const DP_ARGS: [&str; 17] = [
    "train", "--model", "S/4", "--depth", "2", "--image-size", "8", "--batch-size", "8", "--log-every", "5", "--device",
    "cpu", "--sweep", "dp", "--threads", "1",
];

/// Data parallelism over Gloo (issue 8): 2 ranks × 4 samples train the same weights as
/// 1 process × 8 after 20 steps. Each sample keeps its data, flip, timestep, noise and
/// class-dropout draw whatever the split, so only float summation order differs: the
/// largest weight difference relative to the largest weight stays below 1e-5.
#[test]
fn two_ranks_train_the_weights_of_one_process_with_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    for (store, extra) in [(&one, vec![]), (&two, vec!["--nproc-per-node", "2"])] {
        let out = ditbench().arg("--store").arg(store).args(DP_ARGS).args(["--steps", "20"]).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(walk(&two).into_iter().find(|p| p.ends_with("log.txt")).unwrap()).unwrap();
    assert!(text.contains("× 2 ranks (Gloo)"), "{text}");
    let (a, b) = (checkpoint_weights(&one, 20), checkpoint_weights(&two, 20));
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0f64, 0f64);
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        diff = diff.max((ta - tb).abs().max().double_value(&[]));
        scale = scale.max(ta.abs().max().double_value(&[]));
    }
    assert!(diff / scale < 1e-5, "max |Δw| {diff:e} against max |w| {scale}");
    assert!(diff > 0.0 || a.iter().zip(&b).all(|((_, x), (_, y))| x.equal(y)));
}

/// A rank killed mid-run takes the others down (rank 0's collective fails at once), the
/// launcher exits with a failure, the run is marked failed, and training it again
/// resumes from its last checkpoint and finishes.
#[test]
fn a_killed_rank_stops_every_rank_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let run = |s: &std::path::Path| {
        let mut c = ditbench();
        c.arg("--store").arg(s).args(DP_ARGS).args(["--steps", "400", "--ckpt-every", "20", "--nproc-per-node", "2"]);
        c
    };
    let mut launcher = run(&store).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !walk(&store).iter().any(|p| p.to_string_lossy().contains("checkpoints/0000020")) {
        assert!(std::time::Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let children = std::process::Command::new("pgrep").args(["-P", &launcher.id().to_string()]).output().unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&children.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(pids.len(), 2, "two ranks under the launcher: {pids:?}");
    // The higher pid is rank 1 (spawned second).
    let rank1 = pids.iter().max_by_key(|p| p.parse::<u32>().unwrap()).unwrap();
    std::process::Command::new("kill").args(["-9", rank1]).status().unwrap();
    let status = launcher.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the launcher reports the failure");
    let q = ditbench().arg("--store").arg(&store).args(["runs", "list", "--csv"]).output().unwrap();
    assert!(String::from_utf8_lossy(&q.stdout).contains("failed"), "{}", String::from_utf8_lossy(&q.stdout));

    let out = run(&store).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finished at step 400"), "{stdout}");
    let log = std::fs::read_to_string(walk(&store).into_iter().find(|p| p.ends_with("log.txt")).unwrap()).unwrap();
    assert!(log.contains("resumed from"), "{log}");
}

/// Sharded sampling (sample_ddp.py's split): 2 ranks over Gloo write the archive one
/// process writes, byte for byte (batch k's noise depends on k only).
#[test]
fn sampling_on_two_ranks_writes_the_same_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = ditbench().arg("--store").arg(&store).args(DP_ARGS).args(["--steps", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = walk(&store).into_iter().find(|p| p.ends_with("config.toml")).unwrap();
    let id = id.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
    let mut archives = vec![];
    for ranks in ["1", "2"] {
        let path = tmp.path().join(format!("s{ranks}.npz"));
        let out = ditbench()
            .arg("--store")
            .arg(&store)
            .args(["sample", "--run", &id, "--num", "10", "--batch", "4", "--sampling-steps", "3", "--sampler", "ddim"])
            .args(["--device", "cpu", "--nproc-per-node", ranks, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        archives.push(std::fs::read(&path).unwrap());
    }
    assert!(archives[0] == archives[1], "the sharded archive differs from the single-process one");
}

/// The sweep path end to end with the real binary: plan, run (two runs as two processes,
/// each trained and evaluated by FD), status, a rerun that finds nothing to do, the
/// report from the store, and a changed spec refused without `--new`.
#[test]
fn sweep_run_status_and_report_end_to_end() {
    let tmp = std::env::temp_dir().join(format!("ditbench-sweep-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let store = tmp.join("store");
    let spec = repo_root().join("sweeps/smoke.toml");
    let run = |args: &[&str]| {
        let out = ditbench().env("DITBENCH_CACHE", tmp.join("cache")).arg("--store").arg(&store).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let spec_s = spec.to_str().unwrap();

    let (code, plan, err) = run(&["sweep", "plan", spec_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(plan.contains("2 runs") && plan.contains("DiT-S/4") && plan.contains("DiT-B/4"), "{plan}");
    assert!(!store.exists(), "plan changes nothing");

    let (code, out, err) = run(&["sweep", "run", spec_s]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("2 finished, 0 preempted, 0 failed"), "{out}\n{err}");

    let (code, status, err) = run(&["sweep", "status", spec_s, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&status).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["step"], 6, "{r}");
        let q = &r["quality"];
        assert_eq!(q[0], "FD_builtin-cnn-8px-s0", "{r}");
        assert!(q[1].as_f64().unwrap().is_finite() && q[1].as_f64().unwrap() > 0.0, "{r}");
    }
    // Measured throughput now feeds the plan's estimates.
    let (_, plan, _) = run(&["sweep", "plan", spec_s]);
    assert!(plan.contains("finished") && !plan.contains("no throughput measured"), "{plan}");

    let (code, out, _) = run(&["sweep", "run", spec_s]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to do"), "{out}");

    let report = tmp.join("report");
    let (code, out, err) = run(&["report", spec_s, "--out", report.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert!(summary.to_string().contains("FD_builtin-cnn-8px-s0"), "{summary}");
    assert!(report.join("report.html").exists());

    // A changed spec under the same name is refused, and nothing is touched.
    let changed = tmp.join("smoke-changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(&spec).unwrap().replace("steps = 6", "steps = 7")).unwrap();
    let (code, _, err) = run(&["sweep", "run", changed.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("different spec") && err.contains("--new"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `ditbench fid` without Inception weights says which file to get and how to import
/// it; a missing .pth is named.
#[test]
fn fid_commands_explain_missing_weights() {
    let cache = std::env::temp_dir().join(format!("ditbench-fid-cache-{}", std::process::id()));
    let out = ditbench().env("DITBENCH_CACHE", &cache).args(["fid", "stats", ".", "--out", "/dev/null", "--device", "cpu"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pt_inception-2015-12-05") && err.contains("ditbench fid import-weights"), "{err}");
    let out = ditbench().env("DITBENCH_CACHE", &cache).args(["fid", "import-weights", "/nonexistent/pt.pth"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/pt.pth"), "{err}");
    assert!(!cache.join("weights/pt_inception-2015-12-05.safetensors").exists(), "nothing written");
    let _ = std::fs::remove_dir_all(&cache);
}

/// kill -9 in the middle of training: the run store and the checkpoints stay readable,
/// rerunning the same command resumes from the last checkpoint (not from step 0) and
/// finishes, and the registry records both attempts.
#[test]
fn a_killed_training_process_resumes_from_its_last_checkpoint() {
    let store = std::env::temp_dir().join(format!("ditbench-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let args = [
        "train", "--model", "S/4", "--depth", "1", "--image-size", "8", "--steps", "400", "--batch-size", "4",
        "--log-every", "5", "--ckpt-every", "10", "--device", "cpu", "--sweep", "kill9",
    ];
    let mut child = ditbench().arg("--store").arg(&store).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait for at least two checkpoints, then kill without warning.
    let t0 = std::time::Instant::now();
    let ckpts = || -> Vec<std::path::PathBuf> {
        walk(&store).into_iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.to_string_lossy().contains("checkpoints")).collect()
    };
    while ckpts().len() < 2 || !ckpts().iter().any(|p| p.file_name().unwrap().to_string_lossy().contains("0000020")) {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoints appeared");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at: Vec<String> = ckpts().iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();

    let out = ditbench().arg("--store").arg(&store).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finished at step 400"), "{stdout}");
    let log = walk(&store).into_iter().find(|p| p.ends_with("log.txt")).unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    let resumed = log.lines().find(|l| l.contains("resumed from")).unwrap_or_else(|| panic!("no resume in log:\n{log}"));
    let latest = killed_at.iter().max().unwrap();
    assert!(resumed.contains(latest.as_str()), "{resumed} vs {killed_at:?}");
    let step: u64 = resumed.rsplit("at step ").next().unwrap().trim().parse().unwrap();
    assert!(step >= 20, "resumed at step {step}, not from the start");

    let q = ditbench().arg("--store").arg(&store).args(["runs", "query", "SELECT status, attempt FROM events ORDER BY time", "--csv"]).output().unwrap();
    let csv = String::from_utf8_lossy(&q.stdout);
    assert!(csv.contains("running,1") && csv.contains("running,2") && csv.contains("finished,2"), "{csv}");
    // One history: the steps attempt 1 logged past the checkpoint attempt 2 resumed
    // from are superseded (still in metrics_all, with their attempt), and `metrics` has
    // exactly one loss per logged step: 400 / 5.
    let count = |sql: &str| -> i64 {
        let q = ditbench().arg("--store").arg(&store).args(["runs", "query", sql, "--csv"]).output().unwrap();
        assert!(q.status.success(), "{sql}: {}", String::from_utf8_lossy(&q.stderr));
        String::from_utf8_lossy(&q.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    };
    assert_eq!(count("SELECT count(*) AS n FROM metrics WHERE name = 'loss'"), 80);
    assert_eq!(count("SELECT count(DISTINCT step) AS n FROM metrics WHERE name = 'loss'"), 80);
    let superseded = count(&format!("SELECT count(*) AS n FROM metrics_all WHERE name = 'loss' AND attempt = 1 AND step > {step}"));
    assert_eq!(count("SELECT count(*) AS n FROM metrics_all WHERE name = 'loss'"), 80 + superseded);
    assert_eq!(count(&format!("SELECT count(*) AS n FROM metrics WHERE name = 'loss' AND attempt = 1 AND step > {step}")), 0);
    assert_eq!(count("SELECT max(count) AS n FROM summaries WHERE metric = 'loss'"), 80, "summaries count the live history");
    let _ = std::fs::remove_dir_all(&store);
}

/// `ditbench import` never guesses attention heads (they change no tensor shape): a custom
/// width without --num-heads exits 2 naming the flag and the width and writes nothing; with
/// it the file records the heads and the output says where they came from; a paper width
/// gets the paper's heads with a line saying so (fixtures: scripts/reference/make_fixtures.py).
#[test]
fn import_takes_heads_from_the_flag_or_the_papers_width_and_never_guesses() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = repo_root().join("crates/model/tests/fixtures");
    let custom = fixtures.join("dit_tiny_statedict.pt"); // hidden size 32, trained with 2 heads
    let out = tmp.path().join("custom.safetensors");

    let run = |extra: &[&str], out: &std::path::Path, src: &std::path::Path| {
        ditbench().arg("import").arg(src).arg("--out").arg(out).args(extra).output().unwrap()
    };
    let o = run(&[], &out, &custom);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("hidden size 32 is not one of the paper's widths") && e.contains("--num-heads"), "{e}");
    assert!(!out.exists(), "nothing is written");
    let o = run(&["--num-heads", "3"], &out, &custom);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not divide hidden size 32; valid: 1, 2, 4, 8, 16, 32"));
    assert!(!out.exists());
    let o = run(&["--num-heads", "2", "--model", "DiT-S/2"], &out, &custom);
    assert_eq!(o.status.code(), Some(2), "--num-heads conflicts with --model");
    assert!(!out.exists());

    let o = run(&["--num-heads", "2"], &out, &custom);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("2 heads, as given by --num-heads"), "{s}");
    let m = ditbench_model::Model::load(&out, None, tch::Device::Cpu).unwrap();
    assert_eq!((m.config().hidden_size, m.config().num_heads), (32, 2));

    let paper = tmp.path().join("paper.safetensors");
    let o = run(&[], &paper, &fixtures.join("dit_w384_expanded.pt"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("6 heads: hidden size 384 is DiT-S's width, which has 6 heads in the paper"), "{s}");
    assert_eq!(ditbench_model::Model::load(&paper, None, tch::Device::Cpu).unwrap().config().num_heads, 6);
}

/// `sweep plan` marks runs a launch would refuse (the built-in feature network on an
/// ImageFolder) and exits 2; `sweep run` then starts nothing, creates no store, and
/// names every refused run.
#[test]
fn sweep_with_refused_runs_plans_them_as_refused_and_runs_nothing() {
    let tmp = std::env::temp_dir().join(format!("ditbench-sweep-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("images/cat")).unwrap();
    let smoke = repo_root().join("sweeps/smoke.toml");
    let text = std::fs::read_to_string(smoke).unwrap().replace(
        "kind = \"builtin\"",
        &format!("kind = \"imagefolder\"\npath = {:?}", tmp.join("images").to_str().unwrap()),
    );
    let spec = tmp.join("refused.toml");
    std::fs::write(&spec, text).unwrap();
    let store = tmp.join("store");
    let run = |args: &[&str]| {
        let out = ditbench().arg("--store").arg(&store).args(args).arg(&spec).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, plan, err) = run(&["sweep", "plan"]);
    assert_eq!(code, Some(2), "{plan}\n{err}");
    assert_eq!(plan.lines().filter(|l| l.starts_with("DiT-") && l.trim_end().ends_with("refused")).count(), 2, "{plan}");
    assert!(plan.contains("eval.extractor = \"builtin\"") && err.contains("2 of 2 runs would be refused"), "{plan}\n{err}");
    let (code, json, _) = run(&["sweep", "plan", "--json"]);
    assert_eq!(code, Some(2));
    let p: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(p["refused_runs"], 2, "{p}");
    let ids: Vec<String> = p["rows"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert!(p["rows"].as_array().unwrap().iter().all(|r| r["refused"].as_str().is_some_and(|w| w.contains("eval.extractor"))), "{p}");

    let (code, out, err) = run(&["sweep", "run"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(err.contains("nothing was registered or started"), "{err}");
    for id in &ids {
        assert!(err.contains(id.as_str()), "{id} not named: {err}");
    }
    assert!(!store.exists(), "a refused sweep creates no store");
    let _ = std::fs::remove_dir_all(&tmp);
}
