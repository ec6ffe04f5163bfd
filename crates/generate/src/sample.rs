//! Sampling a run's EMA model, as the official `sample_ddp.py` does: class labels, noise,
//! optional classifier-free guidance on a doubled batch, pixels mapped to uint8 with
//! `clamp(127.5·x + 128, 0, 255)` and truncation. One function draws a batch, shared by
//! `ditbench sample` (archives for the ADM evaluator) and the evaluation during
//! training, so both measure the same thing.

use std::path::{Path, PathBuf};

use ditbench_diffusion::{GaussianDiffusion, Sampler};
use ditbench_eval::npz::SampleArchiveWriter;
use ditbench_model::checkpoint::{list_checkpoints, load_into_varstore, read_safetensors};
use ditbench_data::LatentFolder;
use ditbench_model::vae::Vae;
use ditbench_model::{CfgMode, DiTConfig, Model};
use ditbench_runconfig::{DataKind, RunConfig, SamplerKind, Sampling};
use ditbench_torchext::AutocastGuard;
use tch::{Device, Kind, Tensor};

use ditbench_c10d::Ranks;

use crate::{step_seed, Error};

/// The respaced diffusion process of a sampling setting and the reverse process it
/// names: DDPM, or DDIM with η = 0 (deterministic, as DiT samples with DDIM).
pub fn process_for(sampling: &Sampling) -> Result<(GaussianDiffusion, Sampler), Error> {
    let diffusion = GaussianDiffusion::dit(sampling.respacing())?;
    let sampler = match sampling.sampler() {
        SamplerKind::Ddpm => Sampler::Ddpm,
        SamplerKind::Ddim => Sampler::Ddim { eta: 0.0 },
    };
    Ok((diffusion, sampler))
}

/// Draws one batch from noise `z` with labels `y`; `cfg_scale > 1` guides with the null
/// class on a doubled batch (the official sampling) and keeps the guided half.
pub fn sample_batch(
    model: &Model,
    diffusion: &GaussianDiffusion,
    sampler: Sampler,
    z: Tensor,
    y: &Tensor,
    cfg_scale: f64,
    mode: CfgMode,
) -> Result<Tensor, Error> {
    let mc = model.config();
    let mut noise = |x: &Tensor| x.randn_like();
    if cfg_scale > 1.0 {
        let n = z.size()[0];
        let z2 = Tensor::cat(&[&z, &z], 0);
        let y2 = Tensor::cat(&[y.shallow_clone(), y.full_like(mc.num_classes)], 0);
        let f = |x: &Tensor, t: &Tensor, y: &Tensor| model.dit.forward_with_cfg(x, t, y, cfg_scale, mode);
        Ok(diffusion.sample_loop(&f, z2, &y2, sampler, true, &mut noise, &mut |_, _| {})?.narrow(0, 0, n))
    } else {
        let f = |x: &Tensor, t: &Tensor, y: &Tensor| model.dit.forward(x, t, y);
        Ok(diffusion.sample_loop(&f, z, y, sampler, true, &mut noise, &mut |_, _| {})?)
    }
}

/// Turns model-space samples into pixels in [-1, 1] (unclamped): the identity for a
/// pixel-space model, Stable Diffusion's VAE decoder (`decode(z / 0.18215)`, as the
/// official sample.py) for a latent one.
#[derive(Debug)]
pub enum Decoder {
    Pixels,
    Vae(Box<Vae>),
}

impl Decoder {
    /// The decoder a run's samples need: none in pixel space; for a latent run the VAE
    /// of `data.vae`, else the one its latents folder records.
    pub fn for_run(cfg: &RunConfig, device: Device) -> Result<Decoder, Error> {
        if cfg.data.kind != DataKind::Latents {
            return Ok(Decoder::Pixels);
        }
        let header = match &cfg.data.path {
            Some(p) => Some(LatentFolder::open(p)?.header().clone()),
            None => None,
        };
        Ok(Decoder::Vae(Box::new(crate::latents::vae_for(cfg.data.vae.as_deref(), header.as_ref(), device)?)))
    }

    pub fn decode(&self, x: Tensor) -> Tensor {
        match self {
            Decoder::Pixels => x,
            Decoder::Vae(vae) => tch::no_grad(|| vae.decode_scaled(&x)),
        }
    }
}

/// Class-balanced labels for samples `start..start + n`: sample i gets class i mod C.
pub fn balanced_labels(start: usize, n: i64, classes: i64, device: Device) -> Tensor {
    (Tensor::arange(n, (Kind::Int64, device)) + start as i64).remainder(classes)
}

/// Loads the EMA weights of a training checkpoint (the `ema.` tensors).
pub fn load_ema(path: &Path, config: &DiTConfig, device: Device) -> Result<Model, Error> {
    let file = read_safetensors(path)?;
    let ema: Vec<(String, Tensor)> =
        file.tensors.iter().filter_map(|(k, t)| k.strip_prefix("ema.").map(|k| (k.to_string(), t.shallow_clone()))).collect();
    if ema.is_empty() {
        return Err(Error::Config(format!("{}: no `ema.` tensors: not a ditbench training checkpoint", path.display())));
    }
    let model = Model::new(config, device)?;
    load_into_varstore(&model.vs, &ema, path)?;
    Ok(model)
}

/// The checkpoint of `run_dir` at `step` (the latest when `None`).
pub fn find_checkpoint(run_dir: &Path, step: Option<u64>) -> Result<(u64, PathBuf), Error> {
    let all = list_checkpoints(&run_dir.join("checkpoints"));
    let found = match step {
        Some(s) => all.iter().find(|(k, _)| *k == s).cloned(),
        None => all.last().cloned(),
    };
    found.ok_or_else(|| {
        let have: Vec<String> = all.iter().map(|(k, _)| k.to_string()).collect();
        Error::Config(format!(
            "{}: no checkpoint{}; available steps: {}",
            run_dir.display(),
            step.map(|s| format!(" at step {s}")).unwrap_or_default(),
            if have.is_empty() { "none".into() } else { have.join(", ") }
        ))
    })
}

/// What to sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleSpec {
    pub num: usize,
    pub batch: usize,
    pub sampling: Sampling,
    pub cfg_scale: f64,
    pub cfg_mode: CfgMode,
    /// Noise seed; batch k draws from (seed, k), so a resumed archive continues with
    /// exactly the samples an uninterrupted one would have.
    pub seed: u64,
    /// Run the DiT under bf16 autocast (the VAE decoder stays fp32). Faster on GPUs; its
    /// effect on FID is what `just gpu-check` measures.
    pub bf16: bool,
}

/// What an unfinished archive was started with, kept beside its chunks: continuing it
/// with other settings (sampler, guidance, seed, precision, model) would mix two
/// distributions in one archive, so that is refused.
fn check_settings(out: &Path, spec: &SampleSpec, model: &str) -> Result<(), Error> {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq)]
    struct Settings {
        model: String,
        spec: SampleSpec,
    }
    let mut path = out.as_os_str().to_owned();
    path.push(".parts/settings.json");
    let path = PathBuf::from(path);
    let now = Settings { model: model.to_string(), spec: spec.clone() };
    let io = |e| Error::Io { path: path.clone(), source: e };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let then: Settings = serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            // The count may grow: continuing to a larger --num is what resuming is for.
            let same = then.model == now.model && SampleSpec { num: spec.num, ..then.spec.clone() } == now.spec;
            if !same {
                return Err(Error::Config(format!(
                    "{} was started with other settings ({} {:?}); now {} {:?}: use another --out, or the same settings",
                    out.display(),
                    then.model,
                    then.spec,
                    now.model,
                    now.spec
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, serde_json::to_string_pretty(&now).expect("serialisable")).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Samples `spec.num` class-balanced images into an ADM-format archive (`arr_0` uint8
/// N×H×W×3, `arr_1` labels), resuming a partial archive at `out`. Latent models'
/// samples go through `decoder` (the VAE).
///
/// Batch k (noise from `(seed, k)`, labels from its first index) becomes chunk k of the
/// archive. With several ranks (the official sample_ddp.py's sharding), rank r draws
/// batches r, r + w, …, and rank 0 assembles the archive once every rank is done: it is
/// byte for byte the archive one process would write. Returns the archive's path on
/// rank 0, `None` on the others.
pub fn sample_to_archive(
    model: &Model,
    decoder: &Decoder,
    spec: &SampleSpec,
    out: &Path,
    ranks: &mut Ranks,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<PathBuf>, Error> {
    let mc = model.config().clone();
    if matches!(decoder, Decoder::Pixels) != (mc.in_channels == 3) {
        return Err(Error::Config(format!(
            "{} has {} input channels; {} needs {}",
            mc.name,
            mc.in_channels,
            if mc.in_channels == 3 { "a pixel-space model" } else { "a latent model" },
            if mc.in_channels == 3 { "no VAE" } else { "the VAE decoder (data.vae)" }
        )));
    }
    if spec.batch == 0 || spec.num == 0 {
        return Err(Error::Config(format!("--num ({}) and --batch ({}) must be positive", spec.num, spec.batch)));
    }
    let device = model.vs.device();
    let (diffusion, sampler) = process_for(&spec.sampling)?;
    let size = match decoder {
        Decoder::Pixels => mc.input_size as usize,
        Decoder::Vae(v) => (mc.input_size * v.config().downsample_factor()) as usize,
    };
    let w = SampleArchiveWriter::open(out, size, size, true)?;
    if ranks.rank() == 0 {
        check_settings(out, spec, &mc.name)?;
    }
    ranks.barrier()?;
    let batches = spec.num.div_ceil(spec.batch);
    let (rank, world) = (ranks.rank(), ranks.world());
    let mut done = (0..batches).filter(|&k| w.has_chunk(k)).map(|k| spec.batch.min(spec.num - k * spec.batch)).sum::<usize>();
    progress(done, spec.num);
    for k in (rank..batches).step_by(world) {
        if w.has_chunk(k) {
            continue;
        }
        let start = k * spec.batch;
        let n = spec.batch.min(spec.num - start) as i64;
        tch::manual_seed(step_seed(spec.seed ^ 0x5A4D_B1E5, k as u64));
        let z = Tensor::randn([n, mc.in_channels, mc.input_size, mc.input_size], (Kind::Float, device));
        let y = balanced_labels(start, n, mc.num_classes, device);
        let x = {
            let _autocast = if spec.bf16 { Some(AutocastGuard::new(device, Kind::BFloat16)?) } else { None };
            sample_batch(model, &diffusion, sampler, z, &y, spec.cfg_scale, spec.cfg_mode)?.to_kind(Kind::Float)
        };
        let x = decoder.decode(x);
        // sample_ddp.py: clamp(127.5 x + 128, 0, 255) → uint8 (truncation), NHWC.
        let u8s = (x * 127.5 + 128.0).clamp(0.0, 255.0).permute([0, 2, 3, 1]).to_kind(Kind::Uint8).to_device(Device::Cpu);
        let labels = Vec::<i64>::try_from(y.to_device(Device::Cpu))?;
        w.put_chunk_tensor(k, &u8s, Some(&labels))?;
        // Other ranks' chunks land meanwhile; this counts ours (times the world size, an
        // estimate that reaches the total at the end).
        done = (done + n as usize * world).min(spec.num);
        progress(done, spec.num);
    }
    ranks.barrier()?;
    if rank != 0 {
        return Ok(None);
    }
    // Every chunk in order, as a fresh open counts them.
    let w = SampleArchiveWriter::open(out, size, size, true)?;
    if w.len() != spec.num {
        return Err(Error::Config(format!(
            "{}: its chunks hold {} images, not --num {}: it was started with another --num or --batch; use another --out",
            out.display(),
            w.len(),
            spec.num
        )));
    }
    progress(spec.num, spec.num);
    Ok(Some(w.finish()?))
}
