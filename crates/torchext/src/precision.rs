//! Mixed precision: autocast with a dtype, and TF32.

use crate::{ffi, Error};
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use tch::{Device, Kind};

// c10::DeviceType and c10::ScalarType values (bridge.cpp static_asserts them).
const DEVICE_CPU: c_int = 0;
const DEVICE_CUDA: c_int = 1;
const SCALAR_HALF: c_int = 5;
const SCALAR_BFLOAT16: c_int = 15;

/// Autocast for one device type while alive, like `with torch.autocast(device_type,
/// dtype):`. Ops on that device type that autocast lists (matmuls, convolutions, ...)
/// compute in `dtype`; precision-sensitive ones (layer norm, softmax, losses) stay fp32.
///
/// Dropping it restores the previous state, and leaving the outermost autocast clears
/// the cache of fp32 weights cast to `dtype`. Autocast state is per thread, so the guard
/// cannot be sent to another thread; nested guards must be dropped in reverse order.
/// A `Device::Cuda(i)` turns on autocast for all CUDA devices, as torch does.
#[derive(Debug)]
pub struct AutocastGuard {
    scope: NonNull<c_void>,
    _per_thread: PhantomData<*const ()>,
}

impl AutocastGuard {
    pub fn new(device: Device, dtype: Kind) -> Result<Self, Error> {
        let device_type = match device {
            Device::Cpu => DEVICE_CPU,
            Device::Cuda(_) if tch::Cuda::is_available() => DEVICE_CUDA,
            Device::Cuda(_) => return Err(Error::CudaUnavailable),
            other => return Err(Error::AutocastDevice(other)),
        };
        let scalar = match dtype {
            Kind::BFloat16 => SCALAR_BFLOAT16,
            Kind::Half => SCALAR_HALF,
            other => return Err(Error::AutocastDtype(other)),
        };
        let mut scope = std::ptr::null_mut();
        // SAFETY: `scope` is a valid out-pointer; on success it holds a heap scope that
        // only Drop frees.
        ffi::check(unsafe { ffi::torchext_autocast_enter(device_type, scalar, &mut scope) })?;
        let scope = NonNull::new(scope)
            .ok_or_else(|| Error::Torch("autocast_enter returned no scope".into()))?;
        Ok(Self {
            scope,
            _per_thread: PhantomData,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: the scope came from torchext_autocast_enter on this thread (the guard
        // is !Send) and is freed exactly once.
        unsafe { ffi::torchext_autocast_exit(self.scope.as_ptr()) }
    }
}

/// Lets float32 matmuls (cuBLAS, `torch.backends.cuda.matmul.allow_tf32`, i.e. matmul
/// precision "high") and convolutions (`torch.backends.cudnn.allow_tf32`) use TF32
/// tensor cores on Ampere and later GPUs. Process-wide; no effect on CPU kernels.
pub fn set_tf32(enabled: bool) -> Result<(), Error> {
    // SAFETY: takes and returns plain values.
    ffi::check(unsafe { ffi::torchext_set_tf32(enabled) })
}

/// Whether both cuBLAS matmuls and cuDNN convolutions may use TF32. PyTorch's default
/// is false (cuDNN allows TF32 by default, cuBLAS does not).
pub fn tf32_enabled() -> Result<bool, Error> {
    let mut enabled = false;
    // SAFETY: `enabled` is a valid out-pointer.
    ffi::check(unsafe { ffi::torchext_tf32_enabled(&mut enabled) })?;
    Ok(enabled)
}
