//! The one naming rule, the bounds that keep a config within the run store's signed
//! 64-bit integers, and run ids that always satisfy the naming rule.

use ditbench_family::DiTConfig;
use ditbench_runconfig::{derive_run_id, fnv1a64, validate_name, RunConfig, MAX_BATCH, MAX_STEPS};

/// A small valid pixel-space config, read from TOML as a user's file would be.
fn base() -> RunConfig {
    let model = toml::to_string(&DiTConfig::from_size("S", 4, 8, 3, 10).unwrap()).unwrap();
    let text = format!(
        "run_id = \"r-1\"\nsweep = \"s\"\n[model]\n{model}\n[data]\nkind = \"builtin\"\nimage_size = 8\n\
         [train]\nsteps = 10\nbatch_size = 4\nseed = 0\n"
    );
    RunConfig::from_toml(&text).unwrap()
}

/// The rule as the issue states it, written out case by case.
#[test]
fn names_follow_one_rule() {
    let long_ok = "a".repeat(200);
    let long_bad = "a".repeat(201);
    let accepted = ["ok-1.2_x", "DiT-S-8-d2-w32-h2-0123456789ab", "a", "A.b", "-x", "x.", long_ok.as_str()];
    let refused = [
        "", "a<b", "x\"y", "a&b", "a b", "a/b", "a\\b", "..", "a..b", ".hidden", "Ü", "a\nb", "x=1", long_bad.as_str(),
    ];
    for n in accepted {
        validate_name("sweep", n).unwrap_or_else(|e| panic!("{n:?} refused: {e}"));
    }
    for n in refused {
        let e = validate_name("sweep", n).expect_err(n);
        assert!(e.starts_with(&format!("sweep `{n}`")), "{e}");
        assert!(e.contains("ASCII letters, digits, '-', '_' or '.'") && e.contains("200 bytes"), "{e}");
    }
}

#[test]
fn config_names_and_ids_use_the_rule() {
    let mut c = base();
    c.sweep = "a<b".into();
    assert!(c.validate().unwrap_err().starts_with("sweep `a<b`: '<' is not allowed"));
    let mut c = base();
    c.run_id = "../x".into();
    assert!(c.validate().unwrap_err().starts_with("run_id `../x`"));
    let mut c = base();
    c.run_id = String::new();
    assert!(c.validate().unwrap_err().starts_with("run_id ``: it is empty"));
}

/// Every count the store keeps as a signed 64-bit integer is refused beyond the
/// documented limit, which is below 2^63.
#[test]
fn counts_outside_their_limits_are_refused() {
    assert!(MAX_STEPS < i64::MAX as u64 && (MAX_BATCH as u64) < i64::MAX as u64);
    let check = |f: &dyn Fn(&mut RunConfig), want: &str| {
        let mut c = base();
        f(&mut c);
        let e = c.validate().expect_err(want);
        assert!(e.contains(want), "{e} (want {want})");
    };
    check(&|c| c.train.steps = 0, "train.steps must be > 0; valid: 1 to 10000000000");
    check(&|c| c.train.steps = u64::MAX, "train.steps = 18446744073709551615 is out of range; valid: 1 to 10000000000");
    check(&|c| c.train.steps = MAX_STEPS + 1, "train.steps = 10000000001 is out of range");
    check(&|c| c.train.batch_size = 0, "train.batch_size must be > 0; valid: 1 to 1048576");
    check(&|c| c.train.batch_size = MAX_BATCH * 2, "train.batch_size = 2097152 is out of range");
    check(&|c| c.train.ckpt_every = u64::MAX, "train.ckpt_every = 18446744073709551615 is out of range; valid: 0 to");
    check(&|c| c.train.sample_every = u64::MAX, "train.sample_every = ");
    check(&|c| c.train.warmup_steps = u64::MAX, "train.warmup_steps = ");
    check(&|c| c.train.log_every = 0, "train.log_every must be > 0");
    check(&|c| c.train.log_every = u64::MAX, "train.log_every = ");
    check(&|c| c.train.seed = 1 << 63, "train.seed = 9223372036854775808 is out of range; valid: 0 to 9223372036854775807");
    check(&|c| c.train.threads = 1 << 40, "train.threads = ");
    check(&|c| c.data.workers = 1 << 40, "data.workers = ");
    check(&|c| c.data.builtin_len = 0, "data.builtin_len = 0 is out of range");
    check(&|c| c.train.optimizer.lr = -1e-4, "train.optimizer.lr must be positive and finite");
    check(&|c| c.train.optimizer.lr = f64::NAN, "train.optimizer.lr must be positive and finite (the paper: 1e-4), got NaN");
    check(&|c| c.train.optimizer.lr = f64::INFINITY, "train.optimizer.lr must be positive");
    check(&|c| c.train.optimizer.beta2 = 1.0, "train.optimizer.beta2 must be in [0, 1)");
    check(&|c| c.train.optimizer.eps = 0.0, "train.optimizer.eps must be positive");
    check(&|c| c.train.optimizer.weight_decay = f64::NAN, "train.optimizer.weight_decay must be >= 0");
    check(&|c| c.train.grad_clip = Some(f64::NAN), "train.grad_clip must be positive, got NaN");
    check(&|c| c.train.device = "gpu".into(), "train.device `gpu`: valid values are auto, cpu, cuda, cuda:N");
    check(&|c| c.train.device = "cuda:x".into(), "train.device `cuda:x`");
    // The limits themselves are valid.
    let mut c = base();
    c.train.steps = MAX_STEPS;
    c.train.batch_size = MAX_BATCH;
    c.train.seed = i64::MAX as u64;
    c.train.device = "cuda:3".into();
    c.validate().unwrap();
}

/// Ids are `<slug of the model name>-<12 hex digits of the config's FNV-1a hash>`, as
/// before the naming rule existed, and always satisfy the rule.
#[test]
fn derived_ids_fit_the_rule_and_do_not_change() {
    let mut c = base();
    for name in ["DiT-S/4", "DiT-S/8 (d2 w32 h2)", "DiT-XL/2 (depth 3)", "DiT-Ü/2 «x»"] {
        c.model.name = name.into();
        let id = derive_run_id(&c);
        validate_name("run_id", &id).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The slug as written out by hand, the hash of the config with an empty id (and
        // no `model.size`, which came after the ids).
        let slug = match name {
            "DiT-S/4" => "DiT-S-4",
            "DiT-S/8 (d2 w32 h2)" => "DiT-S-8-d2-w32-h2",
            "DiT-XL/2 (depth 3)" => "DiT-XL-2-depth-3",
            _ => "DiT-2-x",
        };
        let mut anonymous = c.clone();
        anonymous.run_id = String::new();
        anonymous.model.size = None;
        assert_eq!(id, format!("{slug}-{:012x}", fnv1a64(anonymous.to_toml().as_bytes()) >> 16));
    }
    // A model name long enough to have made an id the store refused is shortened.
    c.model.name = format!("DiT-S/4 {}", "x".repeat(300));
    let id = derive_run_id(&c);
    assert_eq!(id.len(), 200, "{id}");
    validate_name("run_id", &id).unwrap();
}

/// `[validation]`: optional, its defaults documented (256 images, 4 timesteps, at
/// evaluations and the end, a constant seed), out-of-range values refused naming the
/// key, and a config without it written exactly as before.
#[test]
fn the_validation_section_reads_validates_and_stays_out_of_configs_without_it() {
    use ditbench_runconfig::{ValidationConfig, DEFAULT_VALIDATION_SEED};
    let c = base();
    assert!(c.validation.is_none());
    assert!(!c.to_toml().contains("validation"), "{}", c.to_toml());
    let text = format!("{}\n[validation]\n", c.to_toml());
    let v = RunConfig::from_toml(&text).unwrap().validation.unwrap();
    assert_eq!(v, ValidationConfig { images: 256, timesteps: 4, every: 0, seed: DEFAULT_VALIDATION_SEED });
    assert_eq!(v, ValidationConfig::default());
    // Written out whole, so the id says what was measured; it reads back the same.
    let mut with = c.clone();
    with.validation = Some(ValidationConfig { images: 32, timesteps: 2, every: 5, seed: 9 });
    let written = with.to_toml();
    assert!(written.contains("[validation]\nimages = 32\ntimesteps = 2\nevery = 5\nseed = 9\n"), "{written}");
    assert_eq!(RunConfig::from_toml(&written).unwrap(), with);
    assert_ne!(derive_run_id(&with), derive_run_id(&c));

    let check = |f: &dyn Fn(&mut ValidationConfig), want: &str| {
        let mut c = base();
        let mut v = ValidationConfig::default();
        f(&mut v);
        c.validation = Some(v);
        let e = c.validate().expect_err(want);
        assert!(e.contains(want), "{e} (want {want})");
    };
    check(&|v| v.images = 0, "validation.images = 0 is out of range; valid: 1 to 65536");
    check(&|v| v.images = 1 << 20, "validation.images = 1048576 is out of range");
    check(&|v| v.timesteps = 0, "validation.timesteps = 0 is out of range; valid: 1 to 1000");
    check(&|v| v.timesteps = 1001, "validation.timesteps = 1001 is out of range; valid: 1 to 1000 per image");
    check(&|v| v.every = u64::MAX, "validation.every = 18446744073709551615 is out of range");
    check(&|v| v.seed = 1 << 63, "validation.seed = 9223372036854775808 is out of range");
    // A key that does not exist, or a value of the wrong type, names the key and line.
    let e = RunConfig::from_toml(&format!("{}\n[validation]\nimage = 3\n", c.to_toml())).unwrap_err();
    assert!(e.contains("unknown field `image`") && e.contains("`images`"), "{e}");
    let e = RunConfig::from_toml(&format!("{}\n[validation]\ntimesteps = -1\n", c.to_toml())).unwrap_err();
    assert!(e.starts_with("validation.timesteps (line "), "{e}");
}

/// Validation steps: the last step always, every eval step, and every
/// `validation.every` steps when set; never without the section.
#[test]
fn validation_steps_follow_the_evaluations_and_their_own_cadence() {
    use ditbench_runconfig::ValidationConfig;
    let steps_of = |c: &RunConfig| (1..=c.train.steps).filter(|&d| c.is_validation_step(d)).collect::<Vec<u64>>();
    let mut c = base();
    assert!(steps_of(&c).is_empty());
    c.validation = Some(ValidationConfig::default());
    assert_eq!(steps_of(&c), vec![10]);
    let text = format!("{}\n[eval]\nevery = 4\nnum_samples = 8\n", c.to_toml());
    let mut c = RunConfig::from_toml(&text).unwrap();
    assert_eq!(steps_of(&c), vec![4, 8, 10]);
    c.validation.as_mut().unwrap().every = 3;
    assert_eq!(steps_of(&c), vec![3, 4, 6, 8, 9, 10]);
    c.eval = None;
    assert_eq!(steps_of(&c), vec![3, 6, 9, 10]);
}

/// An ImageFolder or latents dataset holds `validation.images` out of training, at
/// most a quarter of it; the built-in dataset renders them past its length instead.
#[test]
fn held_out_images_are_refused_beyond_a_quarter_of_the_dataset() {
    use ditbench_runconfig::launch_checks::{check_dataset_len, held_out_images};
    use ditbench_runconfig::{DataKind, ValidationConfig};
    let mut c = base();
    assert_eq!(held_out_images(&c, 100), Ok(0));
    c.validation = Some(ValidationConfig { images: 25, ..Default::default() });
    assert_eq!(held_out_images(&c, 100), Ok(0), "built-in: nothing held out");
    c.data.kind = DataKind::ImageFolder;
    assert_eq!(held_out_images(&c, 100), Ok(25));
    let e = held_out_images(&c, 99).unwrap_err();
    assert!(e.starts_with("validation.images = 25 would hold out more than a quarter of the 99 images"), "{e}");
    assert!(e.contains("valid: 1 to 24 for this dataset"), "{e}");
    assert_eq!(check_dataset_len(&c, 99, 1).unwrap_err(), e);
    // What is left must still fill a batch (train.batch_size 4).
    c.validation = Some(ValidationConfig { images: 1, ..Default::default() });
    check_dataset_len(&c, 5, 1).unwrap();
    c.train.batch_size = 5;
    let e = check_dataset_len(&c, 5, 1).unwrap_err();
    assert!(e.contains("a dataset of 4 images (after holding out validation.images = 1) is too small for train.batch_size 5"), "{e}");
}
