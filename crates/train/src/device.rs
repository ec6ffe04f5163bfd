//! What the device can do: the compute precision a run uses, the datasheet peak that
//! MFU is measured against, and memory counters for the metrics.

use ditbench_runconfig::PrecisionSetting;
use tch::{Device, Kind};

/// The compute precision of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// bf16 autocast over fp32 master weights.
    Bf16,
}

impl Precision {
    /// `train.precision` on `device`: "auto" is bf16 on CUDA and fp32 on the CPU (where
    /// bf16 matmuls are slower than fp32 on most processors).
    pub fn resolve(setting: PrecisionSetting, device: Device) -> Precision {
        match setting {
            PrecisionSetting::Fp32 => Precision::Fp32,
            PrecisionSetting::Bf16 => Precision::Bf16,
            PrecisionSetting::Auto if device.is_cuda() => Precision::Bf16,
            PrecisionSetting::Auto => Precision::Fp32,
        }
    }

    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
        }
    }

    pub fn name(self, tf32: bool) -> &'static str {
        match (self, tf32) {
            (Precision::Bf16, _) => "bf16",
            (Precision::Fp32, true) => "fp32+tf32",
            (Precision::Fp32, false) => "fp32",
        }
    }
}

/// Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets:
/// (name fragment, bf16, tf32, fp32). Matched against `nvidia-smi`'s product name,
/// more specific fragments first.
const DATASHEET: &[(&str, f64, f64, f64)] = &[
    ("H100 PCIe", 756.5, 378.0, 51.2),
    ("H100 NVL", 835.0, 417.5, 60.0),
    ("H100", 989.4, 494.7, 66.9), // SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.4, 494.7, 66.9),
    ("H800", 989.4, 494.7, 66.9),
    ("GH200", 989.4, 494.7, 66.9),
    ("A100", 312.0, 156.0, 19.5),
    ("A800", 312.0, 156.0, 19.5),
    ("L40S", 362.1, 183.0, 91.6),
    ("A10", 125.0, 62.5, 31.2),
    ("RTX 4090", 165.2, 82.6, 82.6),
];

/// The datasheet peak of a GPU called `name` for `precision` (TF32 or plain fp32 for
/// fp32 runs), or `None` for a GPU ditbench does not know.
pub fn datasheet_peak_tflops(name: &str, precision: Precision, tf32: bool) -> Option<f64> {
    DATASHEET.iter().find(|(frag, ..)| name.contains(frag)).map(|&(_, bf16, tf, fp32)| match (precision, tf32) {
        (Precision::Bf16, _) => bf16,
        (Precision::Fp32, true) => tf,
        (Precision::Fp32, false) => fp32,
    })
}

/// The product name of CUDA device `index` as `nvidia-smi` reports it. The index is the
/// process's (after `CUDA_VISIBLE_DEVICES`), mapped back to nvidia-smi's numbering
/// when the variable lists plain indices.
pub fn gpu_name(index: usize) -> Option<String> {
    let physical = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').nth(index)?.trim().to_string(),
        _ => index.to_string(),
    };
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", &physical])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// The peak MFU is measured against, and where it comes from: the configured value,
/// else the datasheet's for this GPU and precision; `None` on the CPU or an unknown GPU.
pub fn peak_tflops(configured: Option<f64>, device: Device, precision: Precision, tf32: bool) -> Option<(f64, String)> {
    if let Some(p) = configured {
        return Some((p, "configured (train.peak_tflops)".into()));
    }
    let Device::Cuda(i) = device else { return None };
    let name = gpu_name(i)?;
    datasheet_peak_tflops(&name, precision, tf32).map(|p| (p, format!("{name} datasheet, {}", precision.name(tf32))))
}

/// Peak memory since the last call, in GiB, as a (metric name, value): the CUDA caching
/// allocator's peak of allocated bytes (then reset), or the process's peak resident set
/// on the CPU (over the process's life: the kernel keeps no resettable peak).
pub fn memory_peak_gib(device: Device) -> Option<(&'static str, f64)> {
    const GIB: f64 = (1u64 << 30) as f64;
    match device {
        Device::Cuda(i) => {
            let m = ditbench_torchext::cuda_memory_stats(i).ok()??;
            let _ = ditbench_torchext::reset_cuda_peak(i);
            Some(("gpu_mem_peak_gib", m.peak_allocated_bytes as f64 / GIB))
        }
        _ => ditbench_torchext::process_peak_rss_bytes().map(|b| ("rss_peak_gib", b as f64 / GIB)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasheet_matches_specific_names_first() {
        let h100 = "NVIDIA H100 80GB HBM3";
        assert_eq!(datasheet_peak_tflops(h100, Precision::Bf16, true), Some(989.4));
        assert_eq!(datasheet_peak_tflops(h100, Precision::Fp32, true), Some(494.7));
        assert_eq!(datasheet_peak_tflops("NVIDIA H100 PCIe", Precision::Bf16, true), Some(756.5));
        assert_eq!(datasheet_peak_tflops("NVIDIA H200", Precision::Fp32, false), Some(66.9));
        assert_eq!(datasheet_peak_tflops("NVIDIA A100-SXM4-80GB", Precision::Bf16, false), Some(312.0));
        assert_eq!(datasheet_peak_tflops("Tesla T4", Precision::Bf16, true), None);
    }

    #[test]
    fn auto_precision_is_bf16_only_on_cuda() {
        assert_eq!(Precision::resolve(PrecisionSetting::Auto, Device::Cpu), Precision::Fp32);
        assert_eq!(Precision::resolve(PrecisionSetting::Auto, Device::Cuda(0)), Precision::Bf16);
        assert_eq!(Precision::resolve(PrecisionSetting::Bf16, Device::Cpu), Precision::Bf16);
        // Anything else is refused where the config is read.
        assert!("fp16".parse::<PrecisionSetting>().is_err());
    }
}
