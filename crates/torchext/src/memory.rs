//! Memory metrics: the CUDA caching allocator's counters and the process's peak RSS.

use crate::{ffi, Error};
use std::ffi::c_int;

/// Bytes held by tensors on one CUDA device (`torch.cuda.memory_allocated`) and the peak
/// since the start or the last [`reset_cuda_peak`] (`torch.cuda.max_memory_allocated`).
/// Memory cached by the allocator but not in use is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    pub allocated_bytes: u64,
    pub peak_allocated_bytes: u64,
}

/// The index as c10 takes it, when that CUDA device exists.
fn cuda_device(device_index: usize) -> Option<c_int> {
    let index = c_int::try_from(device_index).ok()?;
    (tch::Cuda::is_available() && device_index < tch::Cuda::device_count() as usize)
        .then_some(index)
}

/// The allocator's counters for CUDA device `device_index`; `None` where there is no
/// such device (always on a machine without CUDA).
pub fn cuda_memory_stats(device_index: usize) -> Result<Option<CudaMemory>, Error> {
    let Some(device) = cuda_device(device_index) else {
        return Ok(None);
    };
    let (mut allocated, mut peak) = (0i64, 0i64);
    // SAFETY: valid out-pointers; the device index was checked against device_count.
    ffi::check(unsafe { ffi::torchext_cuda_memory_stats(device, &mut allocated, &mut peak) })?;
    Ok(Some(CudaMemory {
        allocated_bytes: allocated.max(0) as u64,
        peak_allocated_bytes: peak.max(0) as u64,
    }))
}

/// Restarts the peak of [`cuda_memory_stats`] from the current allocation
/// (`torch.cuda.reset_peak_memory_stats`); does nothing where there is no such device.
pub fn reset_cuda_peak(device_index: usize) -> Result<(), Error> {
    match cuda_device(device_index) {
        // SAFETY: the device index was checked against device_count.
        Some(device) => ffi::check(unsafe { ffi::torchext_cuda_reset_peak(device) }),
        None => Ok(()),
    }
}

/// The process's peak resident set size in bytes (`VmHWM` of /proc/self/status), the
/// CPU counterpart of the CUDA peak; `None` where /proc is not available.
pub fn process_peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
