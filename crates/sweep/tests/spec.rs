//! Sweep specs: expansion checked against the paper's Table 4 and closed forms; bad
//! specs checked for errors that name the key and the line.

use std::path::{Path, PathBuf};

use ditbench_family::{ModelSize, PAPER_TABLE4};
use ditbench_sweep::{plan, SweepSpec};

fn repo() -> PathBuf {
    Path::new(&manifest_dir()).join("../..")
}

fn parse(text: &str) -> Result<SweepSpec, String> {
    SweepSpec::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
}

const SMALL: &str = r#"
name = "t"
[base.model]
input_size = 8
in_channels = 3
num_classes = 10
[base.data]
kind = "builtin"
image_size = 8
[base.train]
steps = 10
batch_size = 4
seed = 0
[axes]
size = ["S", "B"]
patch = [4, 2]
"#;

#[test]
fn table4_spec_expands_to_the_papers_twelve_models() {
    let spec = SweepSpec::load(&repo().join("sweeps/dit-table4.toml")).unwrap();
    let runs = spec.expand().unwrap();
    assert_eq!(runs.len(), 12);
    for entry in PAPER_TABLE4 {
        let run = runs.iter().find(|r| r.config.model.name == entry.name).unwrap_or_else(|| panic!("{} missing", entry.name));
        let m = &run.config.model;
        assert_eq!(m.param_count(), entry.params, "{}", entry.name);
        assert!((m.gflops() - entry.gflops).abs() < 0.02, "{}: {} vs {}", entry.name, m.gflops(), entry.gflops);
        assert_eq!(run.config.train.batch_size, 256);
        assert_eq!(run.config.train.steps, 400_000);
        // Overrides per size: micro-batches for L and XL only.
        let want = match entry.size {
            ModelSize::L => Some(128),
            ModelSize::XL => Some(64),
            _ => None,
        };
        assert_eq!(run.config.train.micro_batch, want, "{}", entry.name);
    }
    // Ids are unique and stable across expansions.
    let again = spec.expand().unwrap();
    assert_eq!(runs, again);
    let mut ids: Vec<_> = runs.iter().map(|r| r.config.run_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

#[test]
fn plan_counts_training_flops_as_the_paper_does() {
    let spec = SweepSpec::load(&repo().join("sweeps/dit-table4.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No store: no estimates, and nothing is created.
    let p = plan(&spec, &dir.path().join("store")).unwrap();
    assert!(!dir.path().join("store").exists(), "plan must not create a store");
    assert!(p.total_hours.is_none());
    let xl2 = p.rows.iter().find(|r| r.model == "DiT-XL/2").unwrap();
    // 3 × forward FLOPs (2 × the paper's 118.64 GMACs) × 256 × 400K.
    let paper = 3.0 * 2.0 * 118.64e9 * 256.0 * 400_000.0;
    assert!((xl2.train_flops / paper - 1.0).abs() < 2e-4, "{} vs {paper}", xl2.train_flops);
    let total: f64 = p.rows.iter().map(|r| r.train_flops).sum();
    assert_eq!(total, p.total_train_flops);
}

#[test]
fn grid_family_and_zip_expand_as_written() {
    let text = format!(
        "{SMALL}\n[family]\nS = {{ depth = 1, hidden_size = 16, num_heads = 2 }}\nB = {{ depth = 2, hidden_size = 32, num_heads = 4 }}\n[zip]\n\"train.seed\" = [1, 2]\n\"train.optimizer.lr\" = [1e-4, 2e-4]\n"
    );
    let runs = parse(&text).unwrap().expand().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 2);
    let b = runs.iter().find(|r| r.size() == Some(ModelSize::B) && r.config.model.patch_size == 2 && r.config.train.seed == 2).unwrap();
    assert_eq!((b.config.model.depth, b.config.model.hidden_size, b.config.model.num_heads), (2, 32, 4));
    assert_eq!(b.config.train.optimizer.lr, 2e-4, "zipped axes move together");
    assert_eq!(b.config.model.input_size, 8);
    assert!(b.config.model.name.starts_with("DiT-B/2"));
}

#[test]
fn random_axes_are_seeded_and_in_range() {
    let text = format!("{SMALL}\n[random]\nsamples = 5\nseed = 7\n[random.axes]\n\"train.optimizer.lr\" = {{ log_uniform = [1e-5, 1e-3] }}\n\"train.warmup_steps\" = {{ choice = [0, 5] }}\n");
    let a = parse(&text).unwrap().expand().unwrap();
    let b = parse(&text).unwrap().expand().unwrap();
    assert_eq!(a, b, "same seed, same runs");
    assert_eq!(a.len(), 4 * 5);
    for r in &a {
        let lr = r.config.train.optimizer.lr;
        assert!((1e-5..=1e-3).contains(&lr), "{lr}");
        assert!([0, 5].contains(&r.config.train.warmup_steps));
    }
    let other = parse(&text.replace("seed = 7", "seed = 8")).unwrap().expand().unwrap();
    assert_ne!(a, other, "another seed draws other values");
}

#[test]
fn unknown_axis_key_names_the_key_and_line() {
    let text = format!("{SMALL}\"train.lrr\" = [1e-4]\n");
    let err = parse(&text).unwrap_err();
    let line = text.lines().position(|l| l.contains("train.lrr")).unwrap() + 1;
    assert!(err.contains("lrr") && err.contains(&format!("test.toml:{line}")), "{err}");
    assert!(err.contains("train.optimizer.lr"), "lists valid keys: {err}");

    let err = parse(&format!("{SMALL}\"trian.steps\" = [1]\n")).unwrap_err();
    assert!(err.contains("trian") && err.contains("sections here"), "{err}");
}

#[test]
fn bad_specs_are_refused_with_a_reason() {
    let cases: [(&str, &str); 5] = [
        (&SMALL.replace("patch = [4, 2]", "patch = []"), "empty"),
        (&SMALL.replace("size = [\"S\", \"B\"]", "size = [\"S\", \"M\"]"), "M"),
        (&format!("{SMALL}[zip]\n\"train.seed\" = [1, 2]\n\"train.steps\" = [1]\n"), "equal lengths"),
        (&format!("{SMALL}[overrides.depth.3]\n\"train.steps\" = 1\n"), "names no axis"),
        (&SMALL.replace("name = \"t\"", "name = \"../x\""), "folder"),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(want), "want `{want}` in: {err}");
    }
}

#[test]
fn renamed_spec_keeps_everything_but_the_name() {
    let spec = parse(SMALL).unwrap();
    let r = spec.renamed("t-2").unwrap();
    assert_eq!(r.name, "t-2");
    assert!(r.text.contains("name = \"t-2\""));
    let (a, b) = (spec.expand().unwrap(), r.expand().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(b.iter().all(|x| x.config.sweep == "t-2"));
}

/// The line (1-based) of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` not in the spec")) + 1
}

/// The error of a spec, which must name the file and `line`.
fn error_at(text: &str, line: usize) -> String {
    let err = parse(text).unwrap_err();
    assert!(err.starts_with(&format!("test.toml:{line}: ")), "want line {line}: {err}");
    err
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_table_line_and_type() {
    let text = SMALL.replace("steps = 10", "steps = \"lots\"");
    let err = error_at(&text, line_of(&text, "steps = "));
    assert!(err.contains("[base.train] steps") && err.contains("\"lots\"") && err.contains("u64") && err.contains("whole number"), "{err}");

    // Every section of [base] is checked the same way.
    for (section, key, bad, want) in [
        ("[base.model]", "learn_sigma", "\"yes\"", "true or false"),
        ("[base.data]", "random_flip", "1", "true or false"),
        ("[base.train]", "ema_decay", "\"high\"", "a number"),
        ("[base.eval]", "num_samples", "1.5", "whole number"),
    ] {
        let mut text = format!("{SMALL}\n[base.eval]\nnum_samples = 4\n");
        let at = text.find(section).unwrap() + section.len();
        text.insert_str(at, &format!("\n{key} = {bad}"));
        if section == "[base.eval]" {
            text = text.replace("num_samples = 4\n", "");
        }
        let err = error_at(&text, line_of(&text, &format!("{key} = {bad}")));
        assert!(err.contains(&format!("{section} {key} = {bad}")) && err.contains(want), "{err}");
    }
}

#[test]
fn a_misspelled_key_is_named_with_the_key_it_is_close_to() {
    let text = SMALL.replace("seed = 0", "seed = 0\nckpt_evry = 5");
    let err = error_at(&text, line_of(&text, "ckpt_evry"));
    assert!(err.contains("[base.train] ckpt_evry") && err.contains("did you mean `ckpt_every`?"), "{err}");
    // The keys listed are the config's, not the spec's.
    let listed = err.split("keys of [train]: ").nth(1).unwrap_or_else(|| panic!("no key list: {err}"));
    assert!(!listed.contains("ckpt_evry") && listed.contains("batch_size") && listed.contains("ckpt_every"), "{err}");

    let text = SMALL.replace("image_size = 8", "imag_size = 8");
    let err = error_at(&text, line_of(&text, "imag_size"));
    assert!(err.contains("[base.data] imag_size") && err.contains("did you mean `image_size`?"), "{err}");

    let text = SMALL.replace("[base.train]", "[base.trian]");
    let err = error_at(&text, line_of(&text, "[base.trian]"));
    assert!(err.contains("did you mean [base.train]?"), "{err}");

    // The spec's own tables too (serde's list of fields is the real one).
    let text = format!("{SMALL}[launcher]\nmax_paralel = 2\n");
    let err = error_at(&text, line_of(&text, "max_paralel"));
    assert!(err.contains("[launcher] max_paralel") && err.contains("did you mean `max_parallel`?"), "{err}");

    // A value out of a fixed list: the key, its line and the valid values.
    let text = format!("{SMALL}[launcher]\nretries = 2\nkind = \"slurn\"\n");
    let err = error_at(&text, line_of(&text, "kind = \"slurn\""));
    assert!(err.contains("[launcher] kind") && err.contains("`slurn`") && err.contains("`local` or `slurm`"), "{err}");
    assert!(err.contains("did you mean `slurm`?"), "{err}");
    let text = format!("{SMALL}[launcher]\nkind = \"kubernetes\"\n");
    let err = error_at(&text, line_of(&text, "kind = \"kubernetes\""));
    assert!(err.contains("[launcher] kind") && err.contains("`local` or `slurm`") && !err.contains("did you mean"), "{err}");
}

#[test]
fn a_missing_required_key_names_its_table_and_the_tables_line() {
    let text = SMALL.replace("batch_size = 4\n", "");
    let err = error_at(&text, line_of(&text, "[base.train]"));
    assert!(err.contains("[base.train] is missing the required key `batch_size`"), "{err}");
    // The required keys of TrainConfig: those without a serde default.
    assert!(err.contains("required in [base.train]: steps, batch_size, seed;"), "{err}");
    // An axis may give it instead.
    let ok = format!("{text}\"train.batch_size\" = [4]\n");
    assert_eq!(parse(&ok).unwrap().expand().unwrap().len(), 4);
}

#[test]
fn axis_zip_and_override_keys_and_values_name_their_table_and_line() {
    // A value of the wrong type in a multi-line axis: the line of that value.
    let text = format!("{SMALL}\"train.steps\" = [\n  10,\n  \"x\",\n]\n");
    let err = error_at(&text, line_of(&text, "  \"x\","));
    assert!(err.contains("[axes] \"train.steps\" value \"x\"") && err.contains("u64"), "{err}");

    let text = format!("{SMALL}[zip]\n\"train.sed\" = [1, 2]\n");
    let err = error_at(&text, line_of(&text, "train.sed"));
    assert!(err.contains("[zip] \"train.sed\"") && err.contains("did you mean `seed`?"), "{err}");

    let text = format!("{SMALL}[overrides.size.B]\n\"train.micro_bach\" = 2\n");
    let err = error_at(&text, line_of(&text, "micro_bach"));
    assert!(err.contains("[overrides.size.B] train.micro_bach") && err.contains("did you mean `micro_batch`?"), "{err}");

    let text = format!("{SMALL}[overrides.size.B]\n\"train.micro_batch\" = \"two\"\n");
    let err = error_at(&text, line_of(&text, "micro_batch"));
    assert!(err.contains("[overrides.size.B] train.micro_batch = \"two\"") && err.contains("whole number"), "{err}");

    let text = format!("{SMALL}[overrides.size.M]\n\"train.micro_batch\" = 2\n");
    let err = error_at(&text, line_of(&text, "[overrides.size.M]"));
    assert!(err.contains("matches no value of axis `size`") && err.contains("\"S\", \"B\""), "{err}");

    let text = SMALL.replace("patch = [4, 2]", "patch = [4, \"2\"]");
    let err = error_at(&text, line_of(&text, "patch = "));
    assert!(err.contains("patch \"2\"") && err.contains("integer"), "{err}");
}

#[test]
fn settable_keys_are_the_run_configs_keys() {
    // A config with every optional field set, serialised by the real RunConfig: each
    // of its keys must be listed, and nothing else.
    let full = r#"
run_id = "x"
sweep = "t"
[model]
name = "m"
depth = 1
hidden_size = 8
num_heads = 2
patch_size = 2
input_size = 8
in_channels = 3
num_classes = 10
[data]
kind = "imagefolder"
path = "p"
vae = "v"
image_size = 8
fail_on_bad_image = true
[train]
steps = 1
batch_size = 1
micro_batch = 1
grad_clip = 1.0
peak_tflops = 1.0
precision = "bf16"
tf32 = false
activation_checkpointing = true
seed = 0
[eval]
num_samples = 2
bf16 = true
[validation]
images = 8
"#;
    let cfg: ditbench_runconfig::RunConfig = toml::from_str(full).unwrap();
    let table: toml::Table = toml::from_str(&cfg.to_toml()).unwrap();
    let mut want = vec![];
    for (section, v) in &table {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                match v {
                    toml::Value::Table(sub) => want.extend(sub.keys().map(|s| format!("{section}.{k}.{s}"))),
                    _ => want.push(format!("{section}.{k}")),
                }
            }
        }
    }
    let err = parse(&format!("{SMALL}\"train.nope\" = [1]\n")).unwrap_err();
    let listed: Vec<&str> = err.split("settable keys: ").nth(1).unwrap().split(", ").map(str::trim).collect();
    // size, patch and seed (the alias of train.seed) are the axes with names of their own.
    let mut listed_sorted: Vec<&str> = listed.iter().copied().filter(|k| !["size", "patch", "seed"].contains(k)).collect();
    listed_sorted.sort();
    want.sort();
    // Fields skipped when at their default (none here) would be missing from `want`.
    let missing: Vec<&String> = want.iter().filter(|k| !listed.contains(&k.as_str())).collect();
    assert!(missing.is_empty(), "not listed: {missing:?}\n{err}");
    let extra: Vec<&&str> = listed_sorted.iter().filter(|k| !want.iter().any(|w| w == *k)).collect();
    assert!(extra.is_empty(), "listed but not a config key: {extra:?}\n{err}");
}

/// A finished latents folder of `count` records of C×S×S latents of `image_size` px images.
fn latents_folder(dir: &Path, c: usize, s: usize, image_size: usize, count: usize) {
    use ditbench_data::latents::{LatentsHeader, FORMAT, VERSION};
    let header = LatentsHeader {
        format: FORMAT.into(),
        version: VERSION,
        count: 0,
        latent_channels: c,
        latent_size: s,
        image_size,
        scaling_factor: 0.18215,
        classes: vec!["a".into(), "b".into()],
        vae: "vae".into(),
        source: "images".into(),
        skipped: 0,
    };
    let len = header.record_len();
    let mut w = ditbench_data::LatentWriter::create_or_resume(dir, header).unwrap();
    for i in 0..count {
        w.append(&vec![0.0; len], (i % 2) as i64).unwrap();
    }
    w.finish(0).unwrap();
}

/// The refusal of each run of `text`'s plan (None: it would launch).
fn refusals(text: &str) -> Vec<(String, Option<String>)> {
    let spec = parse(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = plan(&spec, &dir.path().join("store")).unwrap();
    assert_eq!(p.refused_runs, p.rows.iter().filter(|r| r.refused.is_some()).count());
    p.rows.into_iter().map(|r| (r.model, r.refused)).collect()
}

#[test]
fn runs_a_launch_would_refuse_are_planned_as_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let every = |text: &str, want: &str| {
        let r = refusals(text);
        assert_eq!(r.len(), 4);
        for (model, why) in r {
            let why = why.unwrap_or_else(|| panic!("{model} not refused; want `{want}`"));
            assert!(why.contains(want), "{model}: want `{want}` in: {why}");
        }
    };
    // The built-in feature network on other data (was: a failure of every run at launch).
    let images = tmp.path().join("images");
    std::fs::create_dir_all(images.join("cat")).unwrap();
    let folder = SMALL.replace("kind = \"builtin\"", &format!("kind = \"imagefolder\"\npath = {:?}", images.to_str().unwrap()));
    assert!(refusals(&folder).iter().all(|(_, r)| r.is_none()), "{:?}", refusals(&folder));
    every(&format!("{folder}[base.eval]\nnum_samples = 10\nextractor = \"builtin\"\n"), "eval.extractor = \"builtin\"");
    // An ImageFolder that is not there, or has no class folders.
    every(&folder.replace("images\"", "nowhere\""), "nowhere");
    every(&folder.replace("images\"", "images/cat\""), "no class folders");
    // What validate() refuses now refuses runs instead of the spec, with its origin.
    let text = SMALL.replace("steps = 10", "steps = 0");
    every(&text, "train.steps must be > 0");
    every(&text, &format!("[base.train] steps = 0 at test.toml:{}", line_of(&text, "steps = 0")));
    // Sampler strings the grid or the evaluation could not parse (they failed at the end)
    // are values of the wrong kind: the spec is refused, naming the key and its line.
    let text = SMALL.replace("seed = 0", "seed = 0\ngrid_sampling = \"ddim49\"");
    let err = error_at(&text, line_of(&text, "grid_sampling"));
    assert!(err.contains("[base.train] grid_sampling = \"ddim49\"") && err.contains("no integer stride gives exactly 49"), "{err}");
    let text = format!("{SMALL}[base.eval]\nnum_samples = 10\nsampling = \"fast\"\n");
    let err = error_at(&text, line_of(&text, "sampling = "));
    assert!(err.contains("[base.eval] sampling = \"fast\"") && err.contains("`fast`") && err.contains("ddimN"), "{err}");
    // Ranks that do not divide the batch, and a built-in dataset smaller than a batch.
    every(&format!("{SMALL}[launcher]\ngpus_per_run = 3\n"), "not divisible by the 3 ranks");
    every(&SMALL.replace("image_size = 8", "image_size = 8\nbuiltin_len = 3"), "too small for train.batch_size 4");

    // Only the runs whose override breaks them.
    let r = refusals(&format!("{SMALL}[overrides.size.B]\n\"train.micro_batch\" = 3\n"));
    for (model, why) in &r {
        assert_eq!(why.is_some(), model.starts_with("DiT-B"), "{model}: {why:?}");
    }
    let why = r.iter().find_map(|(_, w)| w.clone()).unwrap();
    assert!(why.contains("train.micro_batch 3 must divide") && why.contains("[overrides.size.B] train.micro_batch"), "{why}");
}

#[test]
fn a_latents_folder_must_fit_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    // 4×2×2 latents of 16 px images, 8 of them.
    latents_folder(tmp.path(), 4, 2, 16, 8);
    let spec = |input: usize, image: usize| {
        format!(
            "name = \"l\"\n[base.model]\ninput_size = {input}\nin_channels = 4\nnum_classes = 2\n[base.data]\nkind = \"latents\"\npath = {:?}\nimage_size = {image}\n[base.train]\nsteps = 1\nbatch_size = 4\nseed = 0\n[axes]\nsize = [\"S\"]\npatch = [2]\n",
            tmp.path().to_str().unwrap()
        )
    };
    assert_eq!(refusals(&spec(2, 16)), vec![("DiT-S/2".to_string(), None)]);
    let why = refusals(&spec(4, 32))[0].1.clone().unwrap();
    assert!(why.contains("holds 4×2×2 latents of 16 px images") && why.contains("input_size 4"), "{why}");
    // Not a latents folder at all.
    let other = tempfile::tempdir().unwrap();
    let why = refusals(&spec(2, 16).replace(tmp.path().to_str().unwrap(), other.path().to_str().unwrap()))[0].1.clone().unwrap();
    assert!(why.contains("not a latents folder"), "{why}");
    // 8 latents for a batch of 16.
    let why = refusals(&spec(2, 16).replace("batch_size = 4", "batch_size = 16"))[0].1.clone().unwrap();
    assert!(why.contains("a dataset of 8 images is too small for train.batch_size 16"), "{why}");
}

#[test]
fn sampler_strings_are_refused_exactly_where_the_reference_respacing_fails() {
    // scripts/reference/make_sweep_fixtures.py: dit_reference.space_timesteps(1000, s).
    let text = std::fs::read_to_string(Path::new(&manifest_dir()).join("tests/fixtures/respacing.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = fx["rows"].as_array().unwrap();
    assert!(rows.len() >= 30);
    for r in rows {
        let s = r["sampling"].as_str().unwrap();
        let ours = ditbench_runconfig::launch_checks::check_respacing(s);
        assert_eq!(ours.is_ok(), r["valid"].as_bool().unwrap(), "`{s}`: {ours:?} vs the reference's {r}");
    }
}

#[test]
fn a_setting_outside_its_list_names_its_key_line_and_the_valid_values() {
    let text = SMALL.replace("kind = \"builtin\"", "kind = \"imagefoldr\"");
    let err = error_at(&text, line_of(&text, "imagefoldr"));
    assert!(err.contains("[base.data] kind = \"imagefoldr\"") && err.contains("`builtin`, `imagefolder`, `latents`"), "{err}");
    assert!(err.contains("did you mean `imagefolder`?"), "{err}");
    let text = SMALL.replace("seed = 0", "seed = 0\nprecision = \"fp16\"");
    let err = error_at(&text, line_of(&text, "fp16"));
    assert!(err.contains("[base.train] precision = \"fp16\"") && err.contains("`auto`, `fp32`, `bf16`"), "{err}");
    let text = format!("{SMALL}[base.eval]\nnum_samples = 10\nextractor = \"inceptoin\"\n");
    let err = error_at(&text, line_of(&text, "inceptoin"));
    assert!(err.contains("[base.eval] extractor = \"inceptoin\"") && err.contains("did you mean `inception`?"), "{err}");
    // In an axis: the line of the value.
    let text = format!("{SMALL}\"train.precision\" = [\n  \"fp32\",\n  \"bf61\",\n]\n");
    let err = error_at(&text, line_of(&text, "\"bf61\""));
    assert!(err.contains("[axes] \"train.precision\" value \"bf61\"") && err.contains("`auto`, `fp32`, `bf16`"), "{err}");
    // The size is the family member's: set by the axis `size`, not on its own.
    let text = format!("{SMALL}\"model.size\" = [\"XL\"]\n");
    let err = error_at(&text, line_of(&text, "model.size"));
    assert!(err.contains("`model.size` is set by the family member"), "{err}");
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// Hours are estimated from the throughput each run measured (its own summaries): a
/// run with a measurement by its own, the others by the median of the measured ones;
/// registered runs show their status.
#[test]
fn plan_estimates_hours_from_measured_throughput() {
    use ditbench_track::{Source, Status, StatusChange, Store, Summary};
    let spec = parse(SMALL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reg = ditbench_sweep::register(&store, &spec, false, (None, None)).unwrap();
    let measured = reg.runs[0].config.run_id.clone();
    let ips = 1234.5;
    let s = Summary {
        run_id: measured.clone(),
        metric: "images_per_s".into(),
        source: Source::Metric,
        last: ips,
        last_step: 10,
        min: ips,
        min_step: 10,
        max: ips,
        max_step: 10,
        count: 1,
    };
    store.replace_summaries(&measured, &[s]).unwrap();
    store.set_status(&measured, &StatusChange::new(Status::Running)).unwrap();
    let p = plan(&spec, dir.path()).unwrap();
    // Training FLOP/s of the measured run: images/s × 3 passes × 2 FLOPs per MAC × GMACs.
    let row = p.rows.iter().find(|r| r.id == measured).unwrap();
    let rate = ips * 3.0 * 2.0 * row.gflops * 1e9;
    for r in &p.rows {
        let want = r.train_flops / rate / 3600.0;
        let got = r.est_hours.unwrap_or_else(|| panic!("{} has no estimate", r.id));
        assert!((got / want - 1.0).abs() < 1e-9, "{}: {got} vs {want}", r.id);
        let status = if r.id == measured { "running" } else { "queued" };
        assert_eq!(r.status.as_deref(), Some(status), "{}", r.id);
    }
    assert!(p.estimate_basis.contains("median of 1 measured runs"), "{}", p.estimate_basis);
}

/// `[base.validation]` is a section of the run config like the others: its keys are
/// checked with the same errors (key, line, nearest key, type), its defaults filled in,
/// its keys settable by axes; a spec without it expands to the same run ids as before.
#[test]
fn base_validation_is_checked_and_expanded_like_the_other_sections() {
    let without = parse(SMALL).unwrap().expand().unwrap();
    assert!(without.iter().all(|r| r.config.validation.is_none()));

    let text = format!("{SMALL}[base.validation]\nimages = 64\n");
    let runs = parse(&text).unwrap().expand().unwrap();
    let v = runs[0].config.validation.clone().expect("a validation section");
    assert_eq!((v.images, v.timesteps, v.every, v.seed), (64, 4, 0, ditbench_runconfig::DEFAULT_VALIDATION_SEED));
    // The section is part of the config, so of the run id.
    assert!(runs.iter().zip(&without).all(|(a, b)| a.config.run_id != b.config.run_id));
    // Every run of the sweep, whatever its seed, gets the same validation section.
    let seeds = parse(&format!("{text}[zip]\n\"train.seed\" = [1, 2]\n")).unwrap().expand().unwrap();
    assert!(seeds.iter().all(|r| r.config.validation.as_ref() == Some(&v)));

    // An unknown key names itself, its line, the nearest key and the valid ones.
    let bad = format!("{SMALL}[base.validation]\nimage = 64\n");
    let err = error_at(&bad, line_of(&bad, "image = 64"));
    assert!(err.contains("[base.validation] image") && err.contains("did you mean `images`?"), "{err}");
    assert!(err.contains("keys of [validation]: images, timesteps, every, seed"), "{err}");
    // A value of the wrong type.
    let bad = format!("{SMALL}[base.validation]\ntimesteps = \"four\"\n");
    let err = error_at(&bad, line_of(&bad, "timesteps = "));
    assert!(err.contains("[base.validation] timesteps = \"four\"") && err.contains("whole number"), "{err}");
    // A misspelled section suggests it.
    let bad = format!("{SMALL}[base.validaton]\nimages = 64\n");
    let err = parse(&bad).unwrap_err();
    assert!(err.contains("did you mean [base.validation]?") && err.contains("[base.validation]"), "{err}");
    // Axes reach its keys; a value out of range refuses the run, naming the key.
    let ax = format!("{SMALL}\"validation.timesteps\" = [2, 2000]\n");
    let runs = parse(&ax).unwrap().expand().unwrap();
    assert_eq!(runs.len(), 8);
    let refused: Vec<&String> = runs.iter().filter_map(|r| r.refused.as_ref()).collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|why| why.contains("validation.timesteps = 2000 is out of range; valid: 1 to 1000")), "{refused:?}");
}

/// `sweep plan` refuses a `[base.validation]` that would hold out more than a quarter
/// of a latents folder, in the trainer's words, before anything starts.
#[test]
fn base_validation_holding_out_too_many_latents_is_refused_at_plan() {
    let tmp = tempfile::tempdir().unwrap();
    latents_folder(tmp.path(), 4, 2, 16, 16);
    let spec = |images: usize| {
        format!(
            "name = \"l\"\n[base.model]\ninput_size = 2\nin_channels = 4\nnum_classes = 2\n[base.data]\nkind = \"latents\"\npath = {:?}\nimage_size = 16\n[base.train]\nsteps = 1\nbatch_size = 4\nseed = 0\n[base.validation]\nimages = {images}\n[axes]\nsize = [\"S\"]\npatch = [2]\n",
            tmp.path().to_str().unwrap()
        )
    };
    assert_eq!(refusals(&spec(4)), vec![("DiT-S/2".to_string(), None)]);
    let why = refusals(&spec(5))[0].1.clone().unwrap();
    assert!(why.contains("validation.images = 5 would hold out more than a quarter of the 16 images") && why.contains("valid: 1 to 4"), "{why}");
}

/// `seed = [..]` is the replicate axis: each configuration once per seed, the seed in
/// `train.seed` and in the run id, and the axis is named `seed` in the run's point.
#[test]
fn the_seed_axis_trains_replicates() {
    let spec = parse(&format!("{SMALL}seed = [0, 1, 2]\n")).unwrap();
    let runs = spec.expand().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 3);
    let mut ids: Vec<&str> = runs.iter().map(|r| r.config.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "a distinct run per replicate");
    for seed in 0..3u64 {
        assert_eq!(runs.iter().filter(|r| r.config.train.seed == seed).count(), 4);
    }
    assert!(runs.iter().all(|r| r.point().contains("seed=")), "{}", runs[0].point());
    // The same seed as an explicit key gives the same runs (ids included).
    let explicit = parse(&format!("{SMALL}\"train.seed\" = [0, 1, 2]\n")).unwrap().expand().unwrap();
    let mut a: Vec<&str> = explicit.iter().map(|r| r.config.run_id.as_str()).collect();
    a.sort();
    assert_eq!(a, ids);
    // Both at once is refused by name.
    let e = parse(&format!("{SMALL}seed = [0, 1]\n\"train.seed\" = [2, 3]\n")).unwrap_err();
    assert!(e.contains("`seed` and `train.seed`"), "{e}");
    // Seeds must be what train.seed accepts.
    let e = parse(&format!("{SMALL}seed = [-1]\n")).and_then(|s| s.expand().map_err(|e| e.to_string())).unwrap_err();
    assert!(e.contains("seed"), "{e}");
}
