//! `ditbench doctor`: the first thing to run when something is off. Every line is
//! read from the running process or the file system, never assumed.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Folder of the libtorch this binary was linked against (baked in at build time).
const LIBTORCH_LIB: Option<&str> = option_env!("DITBENCH_LIBTORCH_LIB");

/// Where imported weights live: `<cache>/weights` (see `ditbench_eval::cache_dir`).
pub fn weights_dir() -> PathBuf {
    ditbench_eval::cache_dir().join("weights")
}

/// The loaded libtorch's version, read from the `torch/version.py` beside it, or from
/// the shared objects mapped into this process when the build-time folder moved.
fn libtorch_version() -> (String, String) {
    let mapped = std::fs::read_to_string("/proc/self/maps").ok().and_then(|maps| {
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.ends_with("/libtorch_cpu.so"))
            .map(|p| Path::new(p).parent().unwrap_or(Path::new("/")).to_path_buf())
    });
    let lib = mapped.or_else(|| LIBTORCH_LIB.map(PathBuf::from));
    let Some(lib) = lib else {
        return ("unknown".into(), "unknown".into());
    };
    let version = std::fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()))
        })
        .unwrap_or_else(|| "unknown (no torch/version.py beside the library)".into());
    (version, lib.display().to_string())
}

fn gpu_names() -> Vec<String> {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect())
        .unwrap_or_default()
}

pub fn run(store: &Path) -> Result<()> {
    let (version, lib) = libtorch_version();
    println!("ditbench      {}", crate::VERSION);
    println!("libtorch      {version}");
    println!("  loaded from {lib}");
    let cuda = tch::Cuda::is_available();
    let n = tch::Cuda::device_count();
    println!("CUDA          {}", if cuda { format!("available, {n} device(s)") } else { "not available".into() });
    if cuda {
        println!("  cuDNN       {}", tch::Cuda::cudnn_is_available());
        for g in gpu_names() {
            println!("  GPU         {g}");
        }
    }
    println!("CPU threads   {} (libtorch intra-op)", tch::get_num_threads());
    let store_state = if store.is_file() {
        "is a FILE, not a folder: pass --store DIR".to_string()
    } else if store.join(ditbench_track::LEGACY_REGISTRY_FILE).exists() {
        "made by an older ditbench: the next command upgrades it in place".to_string()
    } else if store.exists() {
        match ditbench_track::index_location(store) {
            Ok(index) => format!("index {} ({})", index.path.display(), index.why),
            Err(e) => format!("index: {e}"),
        }
    } else {
        "does not exist yet (created on first run)".to_string()
    };
    println!("run store     {} ({store_state})", store.display());
    let weights = weights_dir();
    println!("weights dir   {}", weights.display());
    for (what, file, how) in [
        (
            "Inception-v3 (FID)",
            "pt_inception-2015-12-05.safetensors",
            "get pt_inception-2015-12-05-6726825d.pth (pytorch-fid) and run `ditbench fid import-weights FILE`",
        ),
        (
            "VAE (sd-vae-ft-ema)",
            "sd-vae-ft-ema.safetensors",
            "get diffusion_pytorch_model.safetensors of stabilityai/sd-vae-ft-ema and copy it here under this name",
        ),
    ] {
        let path = weights.join(file);
        if path.exists() {
            println!("  {what:<20} installed ({})", path.display());
        } else {
            println!("  {what:<20} missing: {how}");
        }
    }
    Ok(())
}
