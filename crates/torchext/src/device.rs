//! Which libtorch device a `--device` / `train.device` string names, and the name a run
//! records for it. Here (not in training or sampling) so both pick devices the same way
//! without depending on each other.

use tch::Device;

/// A device string that names no usable device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`; valid: auto, cpu, cuda, cuda:N")]
    Unknown(String),
    #[error("CUDA device {index} does not exist ({visible} visible)")]
    NoSuchCuda { index: usize, visible: usize },
}

/// `auto` (CUDA device 0 when there is one, else the CPU), `cpu`, `cuda` (= `cuda:0`)
/// or `cuda:N`; a CUDA device that is not visible is refused here rather than failing
/// at the first tensor.
pub fn pick_device(spec: &str) -> Result<Device, DeviceError> {
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => cuda(i),
            None => Err(DeviceError::Unknown(s.to_string())),
        },
    }
}

fn cuda(index: usize) -> Result<Device, DeviceError> {
    let visible = tch::Cuda::device_count() as usize;
    if index < visible {
        Ok(Device::Cuda(index))
    } else {
        Err(DeviceError::NoSuchCuda { index, visible })
    }
}

/// `cpu` or `cuda:N`, as `pick_device` reads it back (logs and `config.toml` use it).
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        assert_eq!(pick_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(device_name(pick_device("cpu").unwrap()), "cpu");
        assert_eq!(device_name(Device::Cuda(3)), "cuda:3");
        let auto = pick_device("auto").unwrap();
        assert_eq!(auto.is_cuda(), tch::Cuda::is_available());
        assert_eq!(
            pick_device("gpu").unwrap_err().to_string(),
            "unknown device `gpu`; valid: auto, cpu, cuda, cuda:N"
        );
        assert_eq!(pick_device("cuda:x").unwrap_err(), DeviceError::Unknown("cuda:x".into()));
        let n = tch::Cuda::device_count() as usize;
        assert_eq!(
            pick_device(&format!("cuda:{n}")).unwrap_err().to_string(),
            format!("CUDA device {n} does not exist ({n} visible)")
        );
    }
}
