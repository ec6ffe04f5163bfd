//! `ditbench train` checks its whole input before it opens the run store: a refused
//! command exits with code 2, names the key and the valid values, and leaves the store
//! as it was (or absent). Names follow one rule wherever they are given; errors are
//! printed once; a finished run prints one line in words.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ditbench, repo_root};
use ditbench_sweep::SweepSpec;
use ditbench_train::config::RunConfig;

/// A valid run config, as a sweep (sweeps/smoke.toml) resolves it.
fn smoke_config() -> RunConfig {
    let spec = SweepSpec::load(&repo_root().join("sweeps/smoke.toml")).unwrap();
    spec.expand().unwrap().remove(0).config
}

/// Every file under `dir` with its bytes (empty when `dir` does not exist).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.insert(p.clone(), b"<dir>".to_vec());
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn train(store: &Path, args: &[&str]) -> Output {
    ditbench().arg("--store").arg(store).arg("train").args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const TINY: [&str; 8] = ["--model", "S/4", "--depth", "1", "--image-size", "8", "--batch-size", "2"];

/// Each bad input, against a store that does not exist (it must stay absent) and
/// against an existing one (it must stay byte-identical: no sweep, no folder).
#[test]
fn refused_train_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_id = tmp.path().join("bad-id.toml");
    let mut c = smoke_config();
    c.run_id = "../escape".into();
    std::fs::write(&bad_id, c.to_toml()).unwrap();
    let spaced_id = tmp.path().join("spaced-id.toml");
    c.run_id = "two words".into();
    std::fs::write(&spaced_id, c.to_toml()).unwrap();
    let bad_sweep = tmp.path().join("bad-sweep.toml");
    let mut c = smoke_config();
    c.sweep = "a&b".into();
    std::fs::write(&bad_sweep, c.to_toml()).unwrap();
    let (bad_id, spaced_id, bad_sweep) =
        (bad_id.to_str().unwrap(), spaced_id.to_str().unwrap(), bad_sweep.to_str().unwrap());

    let with_tiny = |extra: &[&'static str]| -> Vec<&'static str> { TINY.iter().copied().chain(extra.iter().copied()).collect() };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--model", "DiT-M/2"], vec!["--model `DiT-M/2`: unknown model `m`; valid names: S, B, L, XL"]),
        (vec!["--model", "S/8", "--image-size", "12"], vec!["patch size 8 does not divide input size 12", "divisors of 12"]),
        (with_tiny(&["--steps", "0"]), vec!["--steps: train.steps must be > 0; valid: 1 to 10000000000"]),
        (
            with_tiny(&["--steps", "18446744073709551615"]),
            vec!["--steps: train.steps = 18446744073709551615 is out of range; valid: 1 to 10000000000"],
        ),
        (vec!["--model", "S/4", "--image-size", "8", "--batch-size", "0"], vec!["--batch-size: train.batch_size must be > 0; valid: 1 to 1048576"]),
        (with_tiny(&["--lr=-0.001"]), vec!["--lr: train.optimizer.lr must be positive and finite", "got -0.001"]),
        (with_tiny(&["--lr", "NaN"]), vec!["--lr: train.optimizer.lr must be positive and finite", "got NaN"]),
        (with_tiny(&["--seed", "9223372036854775808"]), vec!["--seed: train.seed = 9223372036854775808 is out of range"]),
        (with_tiny(&["--ckpt-every", "18446744073709551615"]), vec!["--ckpt-every: train.ckpt_every = 18446744073709551615"]),
        (with_tiny(&["--sweep", "a<b"]), vec!["--sweep: sweep `a<b`: '<' is not allowed", "ASCII letters, digits"]),
        (with_tiny(&["--device", "gpu"]), vec!["--device: train.device `gpu`: valid values are auto, cpu, cuda, cuda:N"]),
        (with_tiny(&["--device", "cuda:99"]), vec!["invalid run config: CUDA device 99 does not exist"]),
        (vec!["--config", bad_id], vec!["run_id `../escape`", "ASCII letters, digits"]),
        (vec!["--config", spaced_id], vec!["run_id `two words`: ' ' is not allowed"]),
        (vec!["--config", bad_sweep], vec!["sweep `a&b`: '&' is not allowed"]),
        (vec!["--run", "nothing-here"], vec!["--run nothing-here: no run store at"]),
    ];

    let missing = tmp.path().join("no-store");
    for (args, want) in &cases {
        let out = train(&missing, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: want `{w}` in: {err}");
        }
        assert!(!missing.exists(), "{args:?} created the store");
    }

    let existing = tmp.path().join("store");
    {
        let store = ditbench_track::Store::open(&existing).unwrap();
        store.register_sweep("kept", None).unwrap();
    }
    let before = snapshot(&existing);
    assert!(before.keys().any(|p| p.ends_with("kept")), "{before:?}");
    for (args, want) in &cases {
        if args[0] == "--run" {
            continue; // a registered run is read from the store; nothing-here is not one
        }
        let out = train(&existing, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want[0]), "{args:?}: {}", stderr(&out));
        assert!(snapshot(&existing) == before, "{args:?} changed the store");
    }
    // An unknown id in an existing store names the id, and still writes nothing: the
    // lookup reads run folders only (no index, no SQLite).
    let out = train(&existing, &["--run", "nothing-here"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown run \"nothing-here\""), "{}", stderr(&out));
    assert!(snapshot(&existing) == before, "--run changed the store");
}

/// A spec's `name`, the ad-hoc `--sweep` flag and a config file's `sweep` accept and
/// refuse the same names. Each command also has train.steps = 0, so an accepted name
/// shows as the steps error (nothing trains) and a refused one as the name error.
#[test]
fn sweep_names_get_one_answer_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let long = "n".repeat(201);
    let cases = [
        ("a<b", false),
        ("x\"y", false),
        ("a&b", false),
        ("a b", false),
        ("..", false),
        ("a..b", false),
        (".hidden", false),
        ("Ü", false),
        (long.as_str(), false),
        ("ok-1.2_x", true),
        ("DiT-S", true),
        ("x.", true),
    ];
    let smoke = std::fs::read_to_string(repo_root().join("sweeps/smoke.toml")).unwrap();
    assert!(smoke.contains("name = \"smoke\"") && smoke.contains("steps = 6"));
    let name_refused = |err: &str, name: &str| err.contains(&format!("`{name}`")) && err.contains("a name must be");
    let steps_refused = |err: &str| err.contains("train.steps must be > 0");
    for (i, (name, valid)) in cases.iter().enumerate() {
        // A JSON string is a valid TOML basic string.
        let quoted = serde_json::to_string(name).unwrap();

        let spec = tmp.path().join(format!("spec-{i}.toml"));
        std::fs::write(&spec, smoke.replace("name = \"smoke\"", &format!("name = {quoted}")).replace("steps = 6", "steps = 0")).unwrap();
        let out = ditbench().arg("--store").arg(&store).args(["sweep", "plan"]).arg(&spec).output().unwrap();
        // A plan lists the runs it refuses (and why) on stdout.
        let spec_err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(2), "{name}: {spec_err}");

        let out = train(&store, &[TINY.as_slice(), &["--steps", "0", "--sweep", name]].concat());
        let flag_err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {flag_err}");

        let file = tmp.path().join(format!("config-{i}.toml"));
        let text = smoke_config().to_toml().replacen("sweep = \"smoke\"", &format!("sweep = {quoted}"), 1).replace("steps = 6", "steps = 0");
        std::fs::write(&file, text).unwrap();
        let out = train(&store, &["--config", file.to_str().unwrap()]);
        let file_err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {file_err}");

        for (source, err) in [("spec", &spec_err), ("--sweep", &flag_err), ("config", &file_err)] {
            if *valid {
                assert!(steps_refused(err) && !name_refused(err, name), "{source} refused valid `{name}`: {err}");
            } else {
                assert!(name_refused(err, name) && !steps_refused(err), "{source} accepted `{name}`: {err}");
            }
        }
        // The same name as a run id in a config file: the same answer.
        let text = smoke_config().to_toml();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("run_id = "), "{first}");
        let text = text.replacen(first, &format!("run_id = {quoted}"), 1).replace("steps = 6", "steps = 0");
        std::fs::write(&file, text).unwrap();
        let err = stderr(&train(&store, &["--config", file.to_str().unwrap()]));
        assert_eq!(name_refused(&err, name), !valid, "run_id `{name}`: {err}");
    }
    assert!(!store.exists(), "nothing was written");
}

/// Every name the strict rule accepts, the store accepts too (the store's own rule is
/// looser so that it keeps reading older stores).
#[test]
fn the_naming_rule_is_within_the_stores_rule() {
    let alphabet: Vec<char> = (0u8..128).map(char::from).chain(['Ü', '«', '\u{2028}']).collect();
    let mut names: Vec<String> = alphabet.iter().map(|c| format!("a{c}b")).collect();
    names.extend(alphabet.iter().map(|c| c.to_string()));
    names.extend(["..", "a..b", "-", "a.", "x".repeat(200).as_str(), "x".repeat(201).as_str()].map(String::from));
    let mut accepted = 0;
    for n in &names {
        if ditbench_train::config::validate_name("sweep", n).is_ok() {
            accepted += 1;
            ditbench_track::validate_id("sweep name", n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        }
    }
    // `a?b` with ? one of the 62 letters and digits or '-', '_', '.'; those 65 alone
    // but '.' (leading); and "-", "a.", 200 × 'x'.
    assert_eq!(accepted, 65 + 64 + 3, "{names:?}");
}

/// Errors whose message already holds their cause's text print it once (a registered
/// run whose config.toml is gone; a missing --config file; a missing sweep spec).
#[test]
fn an_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    {
        let store = ditbench_track::Store::open(&store_dir).unwrap();
        store.register_sweep("s", None).unwrap();
        let spec = ditbench_track::RunSpec { id: "r1".into(), sweep: "s".into(), ..Default::default() };
        store.register_run(&spec).unwrap();
    }
    let os_error = "No such file or directory (os error 2)";
    let outs = [
        train(&store_dir, &["--run", "r1"]),
        train(&store_dir, &["--config", tmp.path().join("missing.toml").to_str().unwrap()]),
        ditbench().arg("--store").arg(&store_dir).args(["sweep", "plan"]).arg(tmp.path().join("missing-spec.toml")).output().unwrap(),
    ];
    for out in outs {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.matches(os_error).count(), 1, "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{err}");
    }
}

/// A finished run prints one line in words on stdout (no Rust Debug text anywhere),
/// and its log.txt ends with the same words.
#[test]
fn a_finished_run_prints_one_human_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = train(&store, &[TINY.as_slice(), &["--steps", "2", "--log-every", "1", "--device", "cpu", "--sweep", "done"]].concat());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let dir = walk_dirs(&store.join("done")).into_iter().next().expect("a run folder");
    let id = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(lines[0], format!("run {id} finished at step 2: {}", dir.display()));
    for text in [&stdout, &err] {
        assert!(!text.contains("Finished {") && !text.contains("{ step"), "{text}");
    }
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.lines().last().unwrap().ends_with(" finished at step 2"), "{log}");
    assert!(!log.contains("Finished {"), "{log}");
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default()
}
