//! Data parallelism across processes on PyTorch's own distributed engine (c10d), which
//! tch does not bind: a `TCPStore` for the rendezvous, `ProcessGroupGloo` on CPU and
//! `ProcessGroupNCCL` on CUDA, reached through a small C++ bridge (cxx/).
//!
//! ```no_run
//! # fn main() -> Result<(), ditbench_c10d::DistError> {
//! use ditbench_c10d::{InitOptions, ProcessGroup};
//! let mut pg = ProcessGroup::init(InitOptions::from_env()?)?;
//! let mut grads: Vec<tch::Tensor> = vec![tch::Tensor::ones([3], (tch::Kind::Float, pg.device()))];
//! pg.all_reduce_mean(&mut grads)?; // every rank now holds the mean
//! # Ok(()) }
//! ```
//!
//! Every rank must call the same collectives with tensors of the same shapes and dtypes
//! in the same order, as with torch.distributed.

use std::ffi::CString;
use std::ops::Range;

use tch::{Device, Tensor};

mod env;
pub mod ranks;
// The bridge to C++ has no safe binding; every unsafe block is there, documented.
#[allow(unsafe_code)]
mod ffi;

pub use env::{first_host, InitOptions};
pub use ranks::{launch_local, rank_from_env, world_size_from_env, RankExits, Ranks};

/// The c10d backend that runs the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, over TCP.
    Gloo,
    /// CUDA tensors, one GPU per rank (`cuda:LOCAL_RANK`).
    Nccl,
}

impl Backend {
    /// Whether this build has the NCCL backend (build.rs found NCCL's and CUDA's headers).
    pub const NCCL_BUILT: bool = cfg!(ditbench_nccl);

    /// NCCL when it is built and torch sees a CUDA device, else Gloo.
    pub fn default_available() -> Self {
        if Self::NCCL_BUILT && tch::Cuda::is_available() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Gradients are all-reduced in flat buckets of at most this many bytes (a larger
/// tensor goes alone), DDP's default `bucket_cap_mb`: few large messages instead of one
/// per parameter, without one copy of the whole model.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// c10d (the store, Gloo or NCCL) raised an error: a peer died, timed out, or the
    /// rendezvous failed.
    #[error("rank {rank}: c10d {op} failed: {message}")]
    C10d { rank: usize, op: &'static str, message: String },
    /// The call cannot work as asked (options, tensors, missing backend).
    #[error("rank {rank}: {op}: {problem}")]
    Invalid { rank: usize, op: &'static str, problem: String },
    #[error(
        "none of the environment variables {names} is set: start ranks with torchrun-style \
         variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) or under Slurm's srun"
    )]
    MissingVar { names: String },
    #[error("environment variable {name}={value:?} is not valid: expected {expected}")]
    InvalidVar { name: &'static str, value: String, expected: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// This process's membership in a process group; collectives block until every rank
/// has joined them or the group's timeout passes.
#[derive(Debug)]
pub struct ProcessGroup {
    group: ffi::Group,
    backend: Backend,
    rank: usize,
    world_size: usize,
    local_rank: usize,
    /// Flat buffers of the buckets that need one, in order, reused across calls.
    buffers: Vec<Tensor>,
}

impl ProcessGroup {
    /// Joins the group: rank 0 serves a TCPStore at `master_addr:master_port`, every
    /// rank waits there (at most `timeout`) for all `world_size` ranks, then the
    /// backend connects them. Under NCCL this rank uses `cuda:local_rank`.
    pub fn init(opts: InitOptions) -> Result<Self, DistError> {
        let invalid = |problem: String| DistError::Invalid { rank: opts.rank, op: "init", problem };
        if opts.world_size == 0 || opts.rank >= opts.world_size {
            return Err(invalid(format!("rank {} is not in 0..world_size ({})", opts.rank, opts.world_size)));
        }
        let size = i32::try_from(opts.world_size)
            .map_err(|_| invalid(format!("world size {} is too large", opts.world_size)))?;
        if opts.master_port == 0 {
            return Err(invalid("master port 0: every rank must be given rank 0's port".into()));
        }
        let host = CString::new(opts.master_addr.as_str())
            .map_err(|_| invalid(format!("master address {:?} contains a NUL byte", opts.master_addr)))?;
        let timeout_ms = i64::try_from(opts.timeout.as_millis()).unwrap_or(i64::MAX);
        if timeout_ms == 0 {
            return Err(invalid("the timeout must be at least 1 ms".into()));
        }
        let rendezvous =
            ffi::Rendezvous { host: &host, port: opts.master_port, rank: opts.rank as i32, size, timeout_ms };
        let group = match opts.backend {
            Backend::Gloo => ffi::Group::gloo(&rendezvous),
            Backend::Nccl => {
                if !Backend::NCCL_BUILT {
                    return Err(invalid(
                        "this build has no NCCL backend: build.rs found no NCCL/CUDA headers next to torch \
                         (see its cargo warning); use Backend::Gloo"
                            .into(),
                    ));
                }
                let devices = tch::Cuda::device_count();
                if devices == 0 {
                    return Err(invalid(
                        "NCCL needs CUDA, but torch sees no CUDA device; use Backend::Gloo on CPU".into(),
                    ));
                }
                if opts.local_rank as i64 >= devices {
                    return Err(invalid(format!(
                        "local rank {} has no GPU: torch sees {devices} CUDA device(s)",
                        opts.local_rank
                    )));
                }
                ffi::Group::nccl(&rendezvous, opts.local_rank as i32)
            }
        }
        .map_err(|message| DistError::C10d { rank: opts.rank, op: "init", message })?;
        Ok(ProcessGroup {
            group,
            backend: opts.backend,
            rank: opts.rank,
            world_size: opts.world_size,
            local_rank: opts.local_rank,
            buffers: Vec::new(),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where this rank's tensors must live: the CPU under Gloo, `cuda:local_rank` under NCCL.
    pub fn device(&self) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.local_rank),
        }
    }

    /// Replaces each tensor by its mean over all ranks (gradient averaging as in DDP):
    /// bucketed, summed by the backend, divided by the world size. Floating-point
    /// tensors on [`Self::device`] only.
    pub fn all_reduce_mean(&mut self, tensors: &mut [Tensor]) -> Result<(), DistError> {
        const OP: &str = "all_reduce";
        self.check(OP, tensors)?;
        if let Some(i) = tensors.iter().position(|t| !t.is_floating_point()) {
            return Err(self
                .invalid(OP, format!("tensor {i} is {:?}; a mean needs a floating-point tensor", tensors[i].kind())));
        }
        let world = self.world_size as f64;
        self.each_bucket(OP, tensors, true, |group, flat| {
            group.all_reduce_sum(flat)?;
            let _ = flat.g_div_scalar_(world);
            Ok(())
        })
    }

    /// Overwrites each tensor with rank `root`'s (initial weights, EMA), bucketed.
    pub fn broadcast(&mut self, tensors: &mut [Tensor], root: usize) -> Result<(), DistError> {
        const OP: &str = "broadcast";
        if root >= self.world_size {
            return Err(self.invalid(OP, format!("root {root} is not in 0..world_size ({})", self.world_size)));
        }
        self.check(OP, tensors)?;
        let receiving = self.rank != root;
        self.each_bucket(OP, tensors, receiving, |group, flat| group.broadcast(flat, root as i32))
    }

    /// Waits until every rank has reached it.
    pub fn barrier(&mut self) -> Result<(), DistError> {
        self.group.barrier().map_err(|message| DistError::C10d { rank: self.rank, op: "barrier", message })
    }

    fn invalid(&self, op: &'static str, problem: String) -> DistError {
        DistError::Invalid { rank: self.rank, op, problem }
    }

    /// Every tensor is defined and on this rank's device.
    fn check(&self, op: &'static str, tensors: &[Tensor]) -> Result<(), DistError> {
        let device = self.device();
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(self.invalid(op, format!("tensor {i} is undefined (a parameter without a gradient?)")));
            }
            if t.device() != device {
                return Err(self.invalid(
                    op,
                    format!("tensor {i} is on {:?}; the {} backend needs {device:?}", t.device(), self.backend),
                ));
            }
        }
        Ok(())
    }

    /// Runs `collective` in place on each bucket: a lone contiguous tensor as it is,
    /// several through a flat buffer, written back into them when `write_back`. The
    /// buffers are kept for the next call (as DDP keeps its buckets): allocating them
    /// anew each step costs page faults over the whole gradient.
    fn each_bucket(
        &mut self,
        op: &'static str,
        tensors: &mut [Tensor],
        write_back: bool,
        mut collective: impl FnMut(&mut ffi::Group, &mut Tensor) -> Result<(), String>,
    ) -> Result<(), DistError> {
        let _no_grad = tch::no_grad_guard();
        let rank = self.rank;
        let c10d_error = |message| DistError::C10d { rank, op, message };
        // Index into self.buffers: one per bucket that goes through a flat buffer, in order.
        let mut slot = 0;
        for range in buckets(tensors, BUCKET_BYTES) {
            let bucket = &mut tensors[range];
            if let [t] = bucket {
                if t.is_contiguous() {
                    // Shares t's storage, so the collective writes into t itself.
                    let mut alias = t.shallow_clone();
                    collective(&mut self.group, &mut alias).map_err(c10d_error)?;
                    continue;
                }
            }
            let numel: i64 = bucket.iter().map(|t| t.numel() as i64).sum();
            let (kind, device) = (bucket[0].kind(), bucket[0].device());
            let fits = |buf: &Tensor| buf.kind() == kind && buf.device() == device && buf.numel() as i64 >= numel;
            match self.buffers.get(slot) {
                Some(buf) if fits(buf) => {}
                _ => {
                    let buf = Tensor::empty([numel], (kind, device));
                    match self.buffers.get_mut(slot) {
                        Some(old) => *old = buf,
                        None => self.buffers.push(buf),
                    }
                }
            }
            let mut flat = self.buffers[slot].narrow(0, 0, numel);
            slot += 1;
            let _ = Tensor::cat_out(&flat, &bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
            collective(&mut self.group, &mut flat).map_err(c10d_error)?;
            if write_back {
                let mut offset = 0;
                for t in bucket.iter_mut() {
                    let n = t.numel() as i64;
                    t.copy_(&flat.narrow(0, offset, n).view(t.size().as_slice()));
                    offset += n;
                }
            }
        }
        Ok(())
    }
}

/// Consecutive runs of tensors of one dtype of at most `cap` bytes each; a tensor larger
/// than `cap` forms its own bucket. Every rank computes the same buckets from the same
/// shapes, which is what keeps their collectives matched.
fn buckets(tensors: &[Tensor], cap: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, t) in tensors.iter().enumerate() {
        let size = t.numel() * t.kind().elt_size_in_bytes();
        if i > start && (t.kind() != tensors[start].kind() || bytes + size > cap) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < tensors.len() {
        out.push(start..tensors.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    #[test]
    fn buckets_split_by_size_and_dtype() {
        let t = |n: i64, kind| Tensor::zeros([n], (kind, Device::Cpu));
        // Caps of 40 bytes = 10 f32: [4+4] | [4+6] | [12 alone] | f64 [2] | f32 [1].
        let ts = [
            t(4, Kind::Float),
            t(4, Kind::Float),
            t(4, Kind::Float),
            t(6, Kind::Float),
            t(12, Kind::Float),
            t(2, Kind::Double),
            t(1, Kind::Float),
        ];
        assert_eq!(buckets(&ts, 40), vec![0..2, 2..4, 4..5, 5..6, 6..7]);
        assert_eq!(buckets(&ts[..4], 1 << 20), vec![0..4]);
        assert!(buckets(&[], 40).is_empty());
    }
}
