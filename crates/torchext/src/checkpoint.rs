//! Activation checkpointing: keep a block's inputs instead of its activations, and
//! recompute the block during backward.

use crate::{ffi, Error};
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use tch::Tensor;
use torch_sys::C_tensor;

/// Returns `f(inputs)` without keeping the activations inside `f` for backward: the
/// autograd graph holds only `inputs`, and backward runs `f` again with grad enabled
/// (under the autocast state of the forward call) and backpropagates through that
/// recomputation. Parameters used by `f` accumulate `.grad` as without checkpointing,
/// and `inputs` receive their gradients. This is `torch.utils.checkpoint` with
/// `use_reentrant=True`, for one output.
///
/// `f` must compute the same thing twice: it must not draw random numbers (no RNG
/// state is restored), nor depend on state that changes between forward and backward.
/// It is kept until the autograd graph that holds it is freed (after backward, once the
/// outputs are dropped), and it may run on an autograd worker thread, hence `Send +
/// 'static`: capture owned modules (e.g. `shallow_clone`s of their tensors).
///
/// When autograd would not record the call (grad mode off, or no input requires grad,
/// where the gradient could not be routed to `f`'s parameters), `f` simply runs.
/// A panic in `f` comes back as an error here, or as a libtorch error from backward.
pub fn checkpoint<F>(inputs: &[&Tensor], f: F) -> Result<Tensor, Error>
where
    F: Fn(&[Tensor]) -> Tensor + Send + 'static,
{
    let pointers: Vec<*const C_tensor> = inputs.iter().map(|t| t.as_ptr()).collect();
    // The Mutex makes the closure shareable with the autograd thread that runs backward
    // while only asking `F: Send`; calls never overlap, so it is never contended.
    let ctx = Box::into_raw(Box::new(Mutex::new(f))).cast::<c_void>();
    let mut out = std::ptr::null_mut();
    // SAFETY: `pointers` point to tensors alive for the call. The bridge owns `ctx` from
    // here on, also on failure, and frees it through `drop_closure::<F>`, never twice;
    // the trampolines are instantiated for the type `ctx` points to.
    ffi::check(unsafe {
        ffi::torchext_checkpoint(
            pointers.as_ptr(),
            pointers.len(),
            call_closure::<F>,
            drop_closure::<F>,
            ctx,
            &mut out,
        )
    })?;
    // SAFETY: on success `out` is a heap tensor whose ownership passes to us.
    Ok(unsafe { Tensor::from_ptr(out) })
}

unsafe extern "C" fn call_closure<F>(
    ctx: *mut c_void,
    inputs: *const *mut C_tensor,
    n: usize,
    out: *mut *mut C_tensor,
    error: *mut c_void,
) -> bool
where
    F: Fn(&[Tensor]) -> Tensor + Send + 'static,
{
    // SAFETY: the bridge passes `n` heap tensors whose ownership passes to us; owning
    // them before anything can panic frees them on every path.
    let inputs: Vec<Tensor> = unsafe { std::slice::from_raw_parts(inputs, n) }
        .iter()
        .map(|&p| unsafe { Tensor::from_ptr(p) })
        .collect();
    // SAFETY: `ctx` is the live `Mutex<F>` made by `checkpoint`; the bridge frees it only
    // after the last call.
    let f = unsafe { &*ctx.cast::<Mutex<F>>() };
    // A panic must not unwind into C++; it becomes the bridge's error instead.
    match catch_unwind(AssertUnwindSafe(|| {
        (f.lock().unwrap_or_else(PoisonError::into_inner))(&inputs)
    })) {
        Ok(result) => {
            let mut result = ManuallyDrop::new(result);
            // SAFETY: `out` is a valid out-pointer; the bridge takes ownership.
            unsafe { *out = result.as_mut_ptr() };
            true
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            // SAFETY: `error` is the bridge's std::string; the bytes are copied.
            unsafe { ffi::torchext_set_error(error, message.as_ptr().cast(), message.len()) };
            false
        }
    }
}

unsafe extern "C" fn drop_closure<F>(ctx: *mut c_void) {
    // SAFETY: `ctx` came from Box::into_raw in `checkpoint` and is freed only here, once.
    let closure = unsafe { Box::from_raw(ctx.cast::<Mutex<F>>()) };
    // A panicking destructor must not unwind into C++ (the autograd node's destructor);
    // there is no caller left to report it to.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(closure)));
}
