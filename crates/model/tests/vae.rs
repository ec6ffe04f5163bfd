//! The Stable Diffusion VAE against diffusers' own `AutoencoderKL`: the small random-weight
//! model in fixtures/vae/ and its outputs in fixtures/vae_io.safetensors were written by
//! scripts/reference/make_vae_fixtures.py (diffusers 0.42.1, torch 2.11.0, CPU, f32).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{fixture, load_fixture, rel_err};
use ditbench_model::checkpoint::{read_safetensors, write_safetensors_atomic};
use ditbench_model::vae::{Posterior, Vae, VaeConfig, CONFIG_FILE, WEIGHTS_FILE};
use tch::{Device, Kind, Tensor};

/// Tests that seed libtorch's global generator must not interleave.
static SEED: Mutex<()> = Mutex::new(());

fn small_vae() -> Vae {
    Vae::load(&fixture("vae"), Device::Cpu).expect("fixture VAE loads")
}

/// The config make_vae_fixtures.py gave diffusers.
fn small_config() -> VaeConfig {
    VaeConfig {
        in_channels: 3,
        out_channels: 3,
        latent_channels: 4,
        block_out_channels: vec![16, 32],
        layers_per_block: 1,
        norm_num_groups: 8,
        scaling_factor: 0.18215,
        shift_factor: 0.0,
        sample_size: 32,
        use_quant_conv: true,
        use_post_quant_conv: true,
        mid_block_add_attention: true,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ditbench-vae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the fixture model folder whose state dict went through `edit`.
fn edited_copy(name: &str, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::copy(fixture("vae").join(CONFIG_FILE), dir.join(CONFIG_FILE)).unwrap();
    let mut tensors = read_safetensors(&fixture("vae").join(WEIGHTS_FILE)).unwrap().tensors;
    edit(&mut tensors);
    write_safetensors_atomic(&dir.join(WEIGHTS_FILE), &tensors, Default::default()).unwrap();
    dir
}

fn load_err(path: &Path) -> String {
    Vae::load(path, Device::Cpu).expect_err("must not load").to_string()
}

#[test]
fn encode_matches_diffusers() {
    let (vae, f) = (small_vae(), load_fixture("vae_io.safetensors"));
    for prefix in ["", "nonsq."] {
        let post = tch::no_grad(|| vae.encode(&f[&format!("{prefix}x")]));
        let (em, es) = (
            rel_err(&post.mean, &f[&format!("{prefix}mean")]),
            rel_err(&post.std, &f[&format!("{prefix}std")]),
        );
        assert!(em < 1e-4 && es < 1e-4, "{prefix}: mean rel err {em:e}, std rel err {es:e}");
    }
}

#[test]
fn decode_matches_diffusers() {
    let (vae, f) = (small_vae(), load_fixture("vae_io.safetensors"));
    for prefix in ["", "nonsq."] {
        let out = tch::no_grad(|| vae.decode(&f[&format!("{prefix}z")]));
        let e = rel_err(&out, &f[&format!("{prefix}decoded")]);
        assert!(e < 1e-4, "{prefix}: rel err {e:e}");
    }
}

/// On a GPU machine: the same numbers on CUDA. cuDNN may run convolutions in TF32 (10-bit
/// mantissa), hence the looser bound.
#[test]
fn encode_and_decode_agree_on_cuda_when_present() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let cuda = Device::Cuda(0);
    let vae = Vae::load(&fixture("vae"), cuda).unwrap();
    let f = load_fixture("vae_io.safetensors");
    let (post, out) = tch::no_grad(|| (vae.encode(&f["x"].to(cuda)), vae.decode(&f["z"].to(cuda))));
    assert_eq!(post.mean.device(), cuda);
    for (got, want) in [(&post.mean, "mean"), (&post.std, "std"), (&out, "decoded")] {
        let e = rel_err(&got.to(Device::Cpu), &f[want]);
        assert!(e < 1e-2, "{want}: rel err {e:e}");
    }
}

#[test]
fn posterior_sample_draws_what_diffusers_draws_after_the_same_seed() {
    let (vae, f) = (small_vae(), load_fixture("vae_io.safetensors"));
    let post = tch::no_grad(|| vae.encode(&f["x"]));
    let sample = {
        let _guard = SEED.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(123);
        post.sample()
    };
    let e = rel_err(&sample, &f["sample"]);
    assert!(e < 1e-4, "rel err {e:e}");
    // It is a draw, not the mean.
    assert!(rel_err(&post.mean, &f["sample"]) > 1e-2);
}

#[test]
fn scaled_helpers_apply_the_latent_scaling_factor() {
    let (vae, f) = (small_vae(), load_fixture("vae_io.safetensors"));
    let s = 0.18215;
    assert_eq!(vae.config().scaling_factor, s);
    let post = tch::no_grad(|| vae.encode_scaled(&f["x"]));
    assert!(rel_err(&post.mean, &(&f["mean"] * s)) < 1e-4);
    assert!(rel_err(&post.std, &(&f["std"] * s)) < 1e-4);
    let out = tch::no_grad(|| vae.decode_scaled(&(&f["z"] * s)));
    assert!(rel_err(&out, &f["decoded"]) < 1e-4);
}

#[test]
fn posterior_clamps_the_log_variance_like_diffusers() {
    // moments = [mean | logvar] along channels; logvar −100 → −30, 100 → 20, 2 stays.
    let mean = Tensor::from_slice(&[0.5f32, -1.0, 3.0]).view([1, 3, 1, 1]);
    let logvar = Tensor::from_slice(&[-100.0f32, 100.0, 2.0]).view([1, 3, 1, 1]);
    let post = Posterior::from_moments(&Tensor::cat(&[&mean, &logvar], 1));
    assert_eq!(post.mean, mean);
    let std: Vec<f64> = Vec::try_from(post.std.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    for (got, want) in std.iter().zip([(-15.0f64).exp(), 10.0f64.exp(), 1.0f64.exp()]) {
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    }
}

#[test]
fn deprecated_attention_names_load_to_the_same_model() {
    let renames =
        [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")];
    let dir = edited_copy("legacy", |tensors| {
        for (name, _) in tensors.iter_mut() {
            for (new, old) in renames {
                *name = name
                    .replace(&format!(".attentions.0.{new}."), &format!(".attentions.0.{old}."));
            }
        }
        assert!(tensors.iter().any(|(n, _)| n == "encoder.mid_block.attentions.0.proj_attn.bias"));
    });
    let (old, new) = (Vae::load(&dir, Device::Cpu).unwrap(), small_vae());
    let f = load_fixture("vae_io.safetensors");
    let (a, b) = tch::no_grad(|| (old.decode(&f["z"]), new.decode(&f["z"])));
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_extra_and_misshaped_keys_are_named_with_their_shapes() {
    let gone = "decoder.up_blocks.0.upsamplers.0.conv.weight";
    let dir = edited_copy("missing", |t| t.retain(|(n, _)| n != gone));
    let e = load_err(&dir);
    assert!(e.contains(&format!("missing keys: {gone} (shape [32, 32, 3, 3])")), "{e}");
    assert!(e.contains(&dir.join(WEIGHTS_FILE).display().to_string()), "{e}");

    let dir2 = edited_copy("extra", |t| {
        t.push(("decoder.extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))))
    });
    let e = load_err(&dir2);
    assert!(e.contains("unexpected keys: decoder.extra.weight"), "{e}");

    let dir3 = edited_copy("misshaped", |t| {
        let (_, w) = t.iter_mut().find(|(n, _)| n == "quant_conv.bias").unwrap();
        *w = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    });
    let e = load_err(&dir3);
    assert!(e.contains("shape mismatches: quant_conv.bias (model [8], file [4])"), "{e}");

    // The right weights under a config that wants more layers.
    let cfg = VaeConfig { layers_per_block: 2, ..small_config() };
    let e = Vae::load_with_config(&cfg, &fixture("vae").join(WEIGHTS_FILE), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers_per_block 2")
            && e.contains("missing keys: decoder.up_blocks.0.resnets.2.conv1.bias (shape [32])"),
        "{e}"
    );

    let e = load_err(&temp_dir("empty"));
    assert!(e.contains(CONFIG_FILE), "{e}");
    for d in [dir, dir2, dir3] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_weights_file_alone_takes_the_config_beside_it() {
    let vae = Vae::load(&fixture("vae").join(WEIGHTS_FILE), Device::Cpu).unwrap();
    assert_eq!(vae.config(), &small_config());
}

#[test]
fn diffusers_config_json_is_read_and_unsupported_fields_are_refused() {
    assert_eq!(
        VaeConfig::from_diffusers_json(&fixture("vae").join(CONFIG_FILE)).unwrap(),
        small_config()
    );

    // An old-style config as diffusers wrote the SD VAEs' (before scaling_factor and the
    // quant-conv switches existed): the missing fields take AutoencoderKL()'s defaults.
    let dir = temp_dir("configs");
    let write = |text: &str| {
        let p = dir.join(CONFIG_FILE);
        std::fs::write(&p, text).unwrap();
        VaeConfig::from_diffusers_json(&p).map_err(|e| e.to_string())
    };
    let sd_like = r#"{"_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "out_channels": 3, "sample_size": 256,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;
    assert_eq!(write(sd_like).unwrap(), VaeConfig::sd());

    let no_quant =
        write(r#"{"use_quant_conv": false, "use_post_quant_conv": false, "shift_factor": 0.1159}"#)
            .unwrap();
    assert!(
        !no_quant.use_quant_conv
            && !no_quant.use_post_quant_conv
            && no_quant.shift_factor == 0.1159
    );
    let vae = Vae::new(&no_quant, Device::Cpu).unwrap();
    assert!(vae.vs.variables().keys().all(|k| !k.contains("quant_conv")));

    for (text, needle) in [
        (r#"{"latents_mean": [0.1, 0.2, 0.3, 0.4]}"#, "`latents_mean` is set"),
        (r#"{"act_fn": "gelu"}"#, "only \"silu\""),
        (r#"{"block_out_channels": [32, 64]}"#, "`down_block_types`"),
        (r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#, "DownEncoderBlock2D"),
        (r#"{"use_tiling_magic": true}"#, "unsupported field `use_tiling_magic`"),
        (r#"{"_class_name": "AutoencoderTiny"}"#, "only AutoencoderKL"),
        (r#"{"norm_num_groups": 48}"#, "not a positive multiple of norm_num_groups = 48"),
        (r#"{"layers_per_block": "two"}"#, "`layers_per_block` = \"two\" is not an integer"),
    ] {
        let e = write(text).unwrap_err();
        assert!(e.contains(needle) && e.contains(CONFIG_FILE), "{text}: {e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sd_config_has_the_parameter_count_of_sd_vae_ft_ema() {
    // 83,653,863: diffusers' AutoencoderKL(block_out_channels=(128, 256, 512, 512), four
    // DownEncoderBlock2D / UpDecoderBlock2D, layers_per_block=2), i.e. the sd-vae-ft-ema /
    // -mse config, counted by scripts/reference/make_vae_fixtures.py (which asserts it).
    let vae = Vae::new(&VaeConfig::sd(), Device::Cpu).unwrap();
    assert_eq!(vae.num_params(), 83_653_863);
    assert_eq!(VaeConfig::sd().downsample_factor(), 8);
    // Every tensor of the small fixture's state dict is a parameter here and vice versa.
    let small = Vae::new(&small_config(), Device::Cpu).unwrap();
    let file: HashMap<String, Vec<i64>> = read_safetensors(&fixture("vae").join(WEIGHTS_FILE))
        .unwrap()
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.size()))
        .collect();
    let ours: HashMap<String, Vec<i64>> =
        small.vs.variables().iter().map(|(k, v)| (k.clone(), v.size())).collect();
    assert_eq!(ours, file);
}
