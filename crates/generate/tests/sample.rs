//! `ditbench sample`'s library side: archives in the ADM format (checked by reading them
//! back), class-balanced labels, determinism from the seed, the official uint8 mapping,
//! guidance on a doubled batch, and clear errors for latent models and missing steps.

use std::sync::Mutex;

use ditbench_eval::npz::{NpyData, NpzReader};
use ditbench_model::{CfgMode, DiTConfig, Model};
use ditbench_c10d::Ranks;
use ditbench_generate::{find_checkpoint, sample_to_archive, Decoder, SampleSpec};
use tch::Device;

/// Tests here draw from libtorch's global generator: one at a time.
static RNG: Mutex<()> = Mutex::new(());

fn tiny(in_channels: i64) -> Model {
    let mut c = DiTConfig::from_size("S", 4, 8, in_channels, 5).unwrap();
    c.depth = 1;
    c.hidden_size = 32;
    c.num_heads = 2;
    tch::manual_seed(0);
    let m = Model::new(&c, Device::Cpu).unwrap();
    // adaLN-Zero starts every block and the final layer at zero: the output would not
    // depend on the label at all. Perturb every weight so that guidance has an effect.
    tch::no_grad(|| {
        for (_, mut v) in m.vs.variables() {
            let _ = v.g_add_(&(v.randn_like() * 0.05));
        }
    });
    m
}

fn spec(num: usize, cfg_scale: f64) -> SampleSpec {
    SampleSpec { num, batch: 4, sampling: "ddim3".parse().unwrap(), cfg_scale, cfg_mode: CfgMode::Paper, seed: 7, bf16: false }
}

#[test]
fn archives_are_adm_format_balanced_and_deterministic() {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let model = tiny(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    let mut seen = vec![];
    sample_to_archive(&model, &Decoder::Pixels, &spec(10, 1.0), &a, &mut Ranks::default(), &mut |d, n| seen.push((d, n))).unwrap();
    // Unrelated draws from the global generator in between change nothing.
    let _ = tch::Tensor::randn([7], (tch::Kind::Float, Device::Cpu));
    sample_to_archive(&model, &Decoder::Pixels, &spec(10, 1.0), &b, &mut Ranks::default(), &mut |_, _| {}).unwrap();
    assert_eq!(seen.last(), Some(&(10, 10)));

    let mut r = NpzReader::open(&a).unwrap();
    let imgs = r.read("arr_0").unwrap();
    assert_eq!(imgs.shape, vec![10, 8, 8, 3]);
    let NpyData::U8(px) = &imgs.data else { panic!("arr_0 must be uint8") };
    let labels = r.read("arr_1").unwrap();
    let NpyData::I64(l) = &labels.data else { panic!("arr_1 must be int64") };
    assert_eq!(l, &vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    // clamp(127.5 x + 128) of clipped samples spans most of the byte range.
    assert!(px.iter().any(|&v| v > 128) && px.iter().any(|&v| v < 128));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, same bytes");

    // Guidance (doubled batch, null class) gives other samples of the same shape.
    let g = dir.path().join("g.npz");
    sample_to_archive(&model, &Decoder::Pixels, &spec(4, 4.0), &g, &mut Ranks::default(), &mut |_, _| {}).unwrap();
    let gi = NpzReader::open(&g).unwrap().read("arr_0").unwrap();
    assert_eq!(gi.shape, vec![4, 8, 8, 3]);
    let NpyData::U8(gpx) = &gi.data else { panic!() };
    assert_ne!(&gpx[..], &px[..4 * 8 * 8 * 3]);
}

#[test]
fn latent_models_without_their_vae_and_missing_checkpoints_are_refused() {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let err = sample_to_archive(&tiny(4), &Decoder::Pixels, &spec(4, 1.0), &dir.path().join("x.npz"), &mut Ranks::default(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("VAE"), "{err}");
    let err = find_checkpoint(dir.path(), Some(5)).unwrap_err().to_string();
    assert!(err.contains("no checkpoint at step 5") && err.contains("available steps: none"), "{err}");
}

#[test]
fn an_unfinished_archive_continues_only_with_its_own_settings() {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let model = tiny(3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.npz");
    // Stopped after the first batch of 4 (a panic in the progress callback stands in
    // for a kill).
    let r = std::panic::catch_unwind(|| {
        sample_to_archive(&model, &Decoder::Pixels, &spec(8, 1.0), &out, &mut Ranks::default(), &mut |d, _| assert!(d < 4, "stop")).unwrap();
    });
    assert!(r.is_err());
    let err = sample_to_archive(&model, &Decoder::Pixels, &spec(8, 2.0), &out, &mut Ranks::default(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("other settings") && err.contains("cfg_scale: 1.0"), "{err}");
    let bf16 = SampleSpec { bf16: true, ..spec(8, 1.0) };
    assert!(sample_to_archive(&model, &Decoder::Pixels, &bf16, &out, &mut Ranks::default(), &mut |_, _| {}).is_err());
    // The same settings (and a larger count) continue it.
    sample_to_archive(&model, &Decoder::Pixels, &spec(12, 1.0), &out, &mut Ranks::default(), &mut |_, _| {}).unwrap();
    assert_eq!(NpzReader::open(&out).unwrap().read("arr_0").unwrap().shape, vec![12, 8, 8, 3]);
}

#[test]
fn bf16_sampling_stays_close_to_fp32() {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let model = tiny(3);
    let dir = tempfile::tempdir().unwrap();
    let mut px = Vec::new();
    for bf16 in [false, true] {
        let out = dir.path().join(format!("s{bf16}.npz"));
        sample_to_archive(&model, &Decoder::Pixels, &SampleSpec { bf16, ..spec(8, 1.0) }, &out, &mut Ranks::default(), &mut |_, _| {}).unwrap();
        let NpyData::U8(p) = NpzReader::open(&out).unwrap().read("arr_0").unwrap().data else { panic!() };
        px.push(p);
    }
    // Same noise and labels: bf16 moves pixels by a few levels at most, not nothing.
    let diffs: Vec<i32> = px[0].iter().zip(&px[1]).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    assert!(mean > 0.0 && mean < 4.0, "mean |Δ| {mean} levels");
}
