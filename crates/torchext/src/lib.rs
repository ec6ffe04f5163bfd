//! A small C++ bridge to the parts of libtorch that tch 0.24 does not bind (issue 4):
//!
//! - [`AutocastGuard`]: autocast with a chosen dtype (bf16 on CUDA and CPU); tch's own
//!   `autocast` has no dtype and runs CUDA in fp16.
//! - [`set_tf32`] / [`tf32_enabled`]: TF32 for cuBLAS matmuls and cuDNN convolutions.
//! - [`checkpoint`]: activation checkpointing as a custom autograd Function, as
//!   `torch.utils.checkpoint(..., use_reentrant=True)` does it.
//! - [`cuda_memory_stats`], [`reset_cuda_peak`], [`process_peak_rss_bytes`]: memory
//!   metrics on CUDA and on the CPU.
//! - [`fused_adamw`]: the fused AdamW kernel of `torch.optim.AdamW(fused=True)`.
//! - [`pick_device`] / [`device_name`]: the device a `--device` string names (plain
//!   tch, no bridge; here so training and sampling share it).
//!
//! The C++ side is `src/bridge.cpp`, compiled by `build.rs` against the headers of the
//! libtorch that torch-sys links.

// The bridge is FFI by nature; each unsafe block is small and states why it is sound.
#![allow(unsafe_code)]

mod checkpoint;
mod device;
mod memory;
mod optim;
mod precision;

pub use checkpoint::checkpoint;
pub use device::{device_name, pick_device, DeviceError};
pub use optim::{fused_adamw, AdamWTensors};
pub use memory::{cuda_memory_stats, process_peak_rss_bytes, reset_cuda_peak, CudaMemory};
pub use precision::{set_tf32, tf32_enabled, AutocastGuard};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("autocast is not available on {0:?}: use Device::Cpu or Device::Cuda(_)")]
    AutocastDevice(tch::Device),
    #[error("autocast cannot compute in {0:?}: use Kind::BFloat16 or Kind::Half")]
    AutocastDtype(tch::Kind),
    #[error("CUDA autocast was requested but CUDA is not available")]
    CudaUnavailable,
    /// A C++ exception from libtorch, or a panic of a checkpointed closure.
    #[error("libtorch: {0}")]
    Torch(String),
}

/// Declarations of `src/bridge.cpp`. Functions returning `*mut c_char` return NULL on
/// success and otherwise a message the caller frees with `torchext_free_error`.
mod ffi {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use torch_sys::C_tensor;

    /// Runs a Rust closure: owns the `n` input tensors, stores an owned result in `*out`,
    /// or returns false after writing a message with `torchext_set_error(error, ..)`.
    pub type CallFn = unsafe extern "C" fn(
        ctx: *mut c_void,
        inputs: *const *mut C_tensor,
        n: usize,
        out: *mut *mut C_tensor,
        error: *mut c_void,
    ) -> bool;
    pub type DropFn = unsafe extern "C" fn(ctx: *mut c_void);

    extern "C" {
        pub fn torchext_free_error(error: *mut c_char);
        pub fn torchext_set_error(error: *mut c_void, msg: *const c_char, len: usize);
        pub fn torchext_autocast_enter(
            device_type: c_int,
            dtype: c_int,
            scope: *mut *mut c_void,
        ) -> *mut c_char;
        pub fn torchext_autocast_exit(scope: *mut c_void);
        pub fn torchext_set_tf32(enabled: bool) -> *mut c_char;
        pub fn torchext_tf32_enabled(enabled: *mut bool) -> *mut c_char;
        pub fn torchext_checkpoint(
            inputs: *const *const C_tensor,
            n: usize,
            call: CallFn,
            drop: DropFn,
            ctx: *mut c_void,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        pub fn torchext_cuda_memory_stats(
            device: c_int,
            allocated: *mut i64,
            peak: *mut i64,
        ) -> *mut c_char;
        pub fn torchext_cuda_reset_peak(device: c_int) -> *mut c_char;
        #[allow(clippy::too_many_arguments)]
        pub fn torchext_fused_adamw(
            params: *const *const C_tensor,
            grads: *const *const C_tensor,
            exp_avgs: *const *const C_tensor,
            exp_avg_sqs: *const *const C_tensor,
            step: *const C_tensor,
            n: usize,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
        ) -> *mut c_char;
    }

    /// Turns a bridge function's return value into a Result, freeing the message.
    pub fn check(error: *mut c_char) -> Result<(), super::Error> {
        if error.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null return is a NUL-terminated strdup'd string that we own.
        let message = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: freed once, by the allocator that made it.
        unsafe { torchext_free_error(error) };
        Err(super::Error::Torch(message))
    }
}
