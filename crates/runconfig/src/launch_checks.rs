//! Refusals that used to surface only once a run had started (an evaluator that cannot
//! read the run's data, a batch that does not split over its ranks, a dataset smaller
//! than a batch). They need neither libtorch nor the data, so `sweep plan` reports them
//! for every run before anything starts, and the trainer refuses the same configs in
//! the same words. (A sampler string the grid or the evaluation could not parse, which
//! used to fail a run once it had trained, is now refused where the config is read:
//! [`crate::Sampling`] is checked with [`check_respacing`].)
//!
//! What needs the files themselves (a latents folder's shape, an ImageFolder's
//! classes) is read by the caller; [`check_latents_fit`] and [`check_dataset_len`] judge
//! what it read.

use crate::{DataKind, Extractor, RunConfig};

/// Diffusion steps of every DiT process (the official `create_diffusion` default, and
/// `GaussianDiffusion::dit`'s).
const DIT_TIMESTEPS: usize = 1000;

/// Checks a config against what its launch needs beyond [`RunConfig::validate`], for
/// training on `ranks` data-parallel ranks (`launcher.gpus_per_run`; 1 for one process).
pub fn check_launch(cfg: &RunConfig, ranks: usize) -> Result<(), String> {
    let t = &cfg.train;
    let ranks = ranks.max(1);
    if t.batch_size % ranks != 0 {
        return Err(format!("train.batch_size {} is not divisible by the {ranks} ranks", t.batch_size));
    }
    if cfg.data.image_size == 0 {
        return Err("data.image_size must be > 0".into());
    }
    if cfg.data.kind == DataKind::Builtin {
        if cfg.data.image_size < 4 {
            return Err(format!("data.image_size {} is too small for the built-in dataset (at least 4)", cfg.data.image_size));
        }
        check_dataset_len(cfg, cfg.data.builtin_len, ranks).map_err(|e| format!("{e} (data.builtin_len)"))?;
    }
    if let Some(e) = &cfg.eval {
        // The built-in feature network is trained on the built-in dataset's classes; on
        // other images its features mean nothing.
        if e.extractor == Extractor::Builtin && cfg.data.kind != DataKind::Builtin {
            return Err(format!(
                "eval.extractor = \"builtin\" is trained on the built-in dataset; data.kind is `{}` (use \"inception\")",
                cfg.data.kind
            ));
        }
    }
    Ok(())
}

/// Images of a dataset of `len` that `[validation]` holds out of training: none for the
/// built-in dataset (it renders validation images past `data.builtin_len`), else
/// `validation.images`, refused when more than a quarter of the dataset (training would
/// lose too much of its data, and a quarter already measures the loss well).
pub fn held_out_images(cfg: &RunConfig, len: usize) -> Result<usize, String> {
    let Some(v) = &cfg.validation else { return Ok(0) };
    if cfg.data.kind == DataKind::Builtin {
        return Ok(0);
    }
    if v.images > len / 4 {
        return Err(format!(
            "validation.images = {} would hold out more than a quarter of the {len} images of the {} dataset; \
             valid: 1 to {} for this dataset (held-out images are not trained on)",
            v.images,
            cfg.data.kind,
            len / 4
        ));
    }
    Ok(v.images)
}

/// A dataset of `len` images must give every one of `ranks` ranks at least one local
/// batch per epoch (the sampler's rule), after `[validation]` holds its images out.
pub fn check_dataset_len(cfg: &RunConfig, len: usize, ranks: usize) -> Result<(), String> {
    let held = held_out_images(cfg, len)?;
    let len = len - held;
    let ranks = ranks.max(1);
    let local_batch = cfg.train.batch_size / ranks;
    if len == 0 || local_batch == 0 || len / ranks < local_batch {
        let after = if held > 0 { format!(" (after holding out validation.images = {held})") } else { String::new() };
        return Err(format!(
            "a dataset of {len} images{after} is too small for train.batch_size {} on {ranks} rank(s)",
            cfg.train.batch_size
        ));
    }
    Ok(())
}

/// A latents folder holds `latent_channels`×`latent_size`² latents of `image_size` px
/// images; the model and `data.image_size` must be those.
pub fn check_latents_fit(cfg: &RunConfig, latent_channels: usize, latent_size: usize, image_size: usize) -> Result<(), String> {
    let m = &cfg.model;
    if latent_channels as i64 != m.in_channels || latent_size as i64 != m.input_size || image_size != cfg.data.image_size {
        return Err(format!(
            "holds {latent_channels}×{latent_size}×{latent_size} latents of {image_size} px images; the run wants \
             model in_channels {}, input_size {} and data.image_size {} (set them to {latent_channels}, {latent_size} and {image_size})",
            m.in_channels, m.input_size, cfg.data.image_size
        ));
    }
    Ok(())
}

/// A respacing string as the diffusion crate's `space_timesteps` reads it over DiT's
/// 1000 steps ("" all steps, "250", "10,20,30", "ddim50"), and keeping at least one step.
pub fn check_respacing(spec: &str) -> Result<(), String> {
    let s = spec.trim();
    if s.is_empty() {
        return Ok(());
    }
    if let Some(count) = s.strip_prefix("ddim") {
        let want: usize = count.parse().map_err(|_| format!("`{count}` is not a step count (e.g. ddim50)"))?;
        return if (1..DIT_TIMESTEPS).any(|stride| DIT_TIMESTEPS.div_ceil(stride) == want) {
            Ok(())
        } else {
            Err(format!("no integer stride gives exactly {want} of {DIT_TIMESTEPS} steps"))
        };
    }
    let counts = s
        .split(',')
        .map(|c| c.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "expected step counts like `250`, `10,20,30` or `ddim50`".to_string())?;
    let (per, extra) = (DIT_TIMESTEPS / counts.len(), DIT_TIMESTEPS % counts.len());
    for (i, &count) in counts.iter().enumerate() {
        let size = per + usize::from(i < extra);
        if size < count {
            return Err(format!("cannot take {count} steps from a section of {size}"));
        }
    }
    if counts.iter().all(|&c| c == 0) {
        return Err("keeps no step at all".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_counts_are_those_an_integer_stride_gives() {
        // ceil(1000 / stride): 1000 (1), 500 (2), 334 (3), 250 (4), 200 (5), …, 50 (20),
        // 48 (21), 46 (22); 49 and 47 fall between two strides.
        for ok in ["ddim1000", "ddim500", "ddim334", "ddim250", "ddim50", "ddim48", "ddim25", "ddim2"] {
            assert!(check_respacing(ok).is_ok(), "{ok}");
        }
        for bad in ["ddim49", "ddim47", "ddim333", "ddim1", "ddim", "ddimx", "ddim1001"] {
            assert!(check_respacing(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn section_counts_fit_their_sections() {
        // 1000 steps in 3 sections are 334, 333, 333 long.
        assert!(check_respacing("334,333,333").is_ok());
        assert!(check_respacing("333,334,333").unwrap_err().contains("section of 333"));
        assert!(check_respacing("1001").is_err());
        assert!(check_respacing("0,0").unwrap_err().contains("no step"));
        assert!(check_respacing("").is_ok() && check_respacing("250").is_ok() && check_respacing(" 10, 20 ").is_ok());
        assert!(check_respacing("ten").is_err());
    }
}
