//! The sample grid a run writes while it trains (`samples/<step>.png`).

use std::path::{Path, PathBuf};

use ditbench_model::{CfgMode, Model};
use ditbench_runconfig::RunConfig;
use tch::{Device, Kind, Tensor};

use crate::sample::{process_for, sample_batch, Decoder};
use crate::{step_seed, Error};

/// A grid of unguided EMA samples with fixed labels and noise (seeded from the run seed
/// only), so grids are comparable across steps and runs: one row of 4 per class, up to 10.
pub fn sample_grid(
    run_dir: &Path,
    ema: &Model,
    decoder: &Decoder,
    cfg: &RunConfig,
    step: u64,
    device: Device,
) -> Result<PathBuf, Error> {
    let mc = &cfg.model;
    let classes = mc.num_classes.clamp(1, 10);
    let per_class = 4i64;
    let n = classes * per_class;
    tch::manual_seed(step_seed(cfg.train.seed ^ 0x05A3_D1E5, u64::MAX));
    let z = Tensor::randn([n, mc.in_channels, mc.input_size, mc.input_size], (Kind::Float, device));
    let y = Tensor::arange(classes, (Kind::Int64, device)).repeat_interleave_self_int(per_class, 0, None);
    let (diffusion, sampler) = process_for(&cfg.train.grid_sampling)?;
    let x = decoder.decode(sample_batch(ema, &diffusion, sampler, z, &y, 1.0, CfgMode::Paper)?);
    let pixels = Vec::<f32>::try_from(x.to_device(Device::Cpu).clamp(-1.0, 1.0).flatten(0, -1))?;
    let shape = x.size().iter().map(|&v| v as usize).collect::<Vec<_>>();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let path = run_dir.join("samples").join(format!("{step:07}.png"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    }
    ditbench_data::save_grid_png(&path, &pixels, shape, per_class as usize, 1, 2)?;
    Ok(path)
}
