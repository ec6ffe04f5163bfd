//! The only unsafe code of the crate: calls into the C++ bridge (cxx/bridge.h).
//!
//! Every bridge function catches its C++ exceptions and returns the message as a
//! malloc'd string (NULL on success), so nothing unwinds across the boundary; here it
//! becomes `Err(String)`.

use std::ffi::{c_char, c_int, CStr};
use std::ptr::NonNull;

use tch::Tensor;
use torch_sys::C_tensor;

/// `DitbenchDistGroup` of the bridge, only ever behind a pointer.
#[repr(C)]
struct RawGroup {
    _opaque: [u8; 0],
}

extern "C" {
    fn ditbench_c10d_free_message(message: *mut c_char);
    fn ditbench_c10d_init_gloo(
        host: *const c_char,
        port: u16,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    #[cfg(ditbench_nccl)]
    fn ditbench_c10d_init_nccl(
        host: *const c_char,
        port: u16,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        device_index: c_int,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn ditbench_c10d_all_reduce_sum(group: *mut RawGroup, tensor: *mut C_tensor) -> *mut c_char;
    fn ditbench_c10d_broadcast(group: *mut RawGroup, tensor: *mut C_tensor, root: c_int) -> *mut c_char;
    fn ditbench_c10d_barrier(group: *mut RawGroup) -> *mut c_char;
    fn ditbench_c10d_free(group: *mut RawGroup);
}

/// Turns a bridge result into a Result, freeing the message.
fn check(message: *mut c_char) -> Result<(), String> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string from strdup, owned by us.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    // SAFETY: freed once, by the bridge's own free.
    unsafe { ditbench_c10d_free_message(message) };
    Err(text)
}

/// Where a group rendezvouses and how long any of its waits may last.
pub(crate) struct Rendezvous<'a> {
    pub host: &'a CStr,
    pub port: u16,
    pub rank: c_int,
    pub size: c_int,
    pub timeout_ms: i64,
}

/// An initialised c10d backend with its store; freed (NCCL shut down) on drop.
#[derive(Debug)]
pub(crate) struct Group(NonNull<RawGroup>);

// SAFETY: c10d backends and stores are used from any thread in PyTorch (DDP's reducer
// calls them from autograd threads); the handle has no thread affinity. It is not Sync:
// concurrent collectives on one group would be issued in an undefined order.
unsafe impl Send for Group {}

impl Group {
    fn from_init(message: *mut c_char, raw: *mut RawGroup) -> Result<Self, String> {
        check(message)?;
        NonNull::new(raw).map(Group).ok_or_else(|| "the bridge returned no group".to_string())
    }

    pub fn gloo(r: &Rendezvous) -> Result<Self, String> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `host` is NUL-terminated and outlives the call; `raw` is written on success.
        let message =
            unsafe { ditbench_c10d_init_gloo(r.host.as_ptr(), r.port, r.rank, r.size, r.timeout_ms, &mut raw) };
        Self::from_init(message, raw)
    }

    #[cfg(ditbench_nccl)]
    pub fn nccl(r: &Rendezvous, device_index: c_int) -> Result<Self, String> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: as in `gloo`.
        let message = unsafe {
            ditbench_c10d_init_nccl(r.host.as_ptr(), r.port, r.rank, r.size, r.timeout_ms, device_index, &mut raw)
        };
        Self::from_init(message, raw)
    }

    #[cfg(not(ditbench_nccl))]
    pub fn nccl(_: &Rendezvous, _device_index: c_int) -> Result<Self, String> {
        Err("this build has no NCCL backend".into())
    }

    /// Sums `tensor` over all ranks, in place.
    pub fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<(), String> {
        // SAFETY: the group is live; tch's C_tensor is a `torch::Tensor *` that stays
        // valid for the call because `tensor` is borrowed.
        check(unsafe { ditbench_c10d_all_reduce_sum(self.0.as_ptr(), tensor.as_mut_ptr()) })
    }

    /// Overwrites `tensor` with rank `root`'s, in place.
    pub fn broadcast(&mut self, tensor: &mut Tensor, root: c_int) -> Result<(), String> {
        // SAFETY: as in `all_reduce_sum`.
        check(unsafe { ditbench_c10d_broadcast(self.0.as_ptr(), tensor.as_mut_ptr(), root) })
    }

    pub fn barrier(&mut self) -> Result<(), String> {
        // SAFETY: the group is live.
        check(unsafe { ditbench_c10d_barrier(self.0.as_ptr()) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the pointer came from an init function and is freed exactly once.
        unsafe { ditbench_c10d_free(self.0.as_ptr()) }
    }
}
