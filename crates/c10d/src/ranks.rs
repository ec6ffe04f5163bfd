//! The ranks of a data-parallel run (training or sampling) on this crate's process
//! group: Gloo on the CPU, NCCL on CUDA, one process per rank. A run with one rank has
//! no process group and every call here is free.

use std::time::Duration;

use tch::{Device, Tensor};

use crate::{DistError, InitOptions, ProcessGroup};

/// How long a rank waits in a collective for the others. Rank 0 alone samples grids and
/// evaluates FID between steps while the others wait, so this is generous; a dead rank
/// is noticed at once anyway (its connection closes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct Ranks {
    pub group: Option<ProcessGroup>,
}

/// The world size the environment announces: `WORLD_SIZE` (torchrun, `--nproc-per-node`)
/// or `SLURM_NTASKS` (one task per GPU under srun); 1 when neither is set.
pub fn world_size_from_env() -> usize {
    ["WORLD_SIZE", "SLURM_NTASKS"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse().ok()))
        .unwrap_or(1)
}

/// This process's rank as the environment announces it (`RANK`, else `SLURM_PROCID`;
/// 0 when neither is set), readable before the process group exists.
pub fn rank_from_env() -> usize {
    ["RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

impl Ranks {
    /// Joins the process group the environment describes, or none for one rank (unless
    /// `DITBENCH_DIST=1`, which builds a group of one, so that the all-reduce path can
    /// be measured against none). `DITBENCH_DIST_TIMEOUT_S` overrides the collective
    /// timeout (default 3600 s).
    pub fn from_env() -> Result<Ranks, DistError> {
        if world_size_from_env() <= 1 && std::env::var("DITBENCH_DIST").map_or(true, |v| v != "1") {
            return Ok(Ranks::default());
        }
        let mut opts = InitOptions::from_env()?;
        opts.timeout = std::env::var("DITBENCH_DIST_TIMEOUT_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(Ranks { group: Some(ProcessGroup::init(opts)?) })
    }

    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, ProcessGroup::rank)
    }

    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, ProcessGroup::world_size)
    }

    /// The device this rank trains on: under NCCL the GPU of its local rank (the
    /// official multi-node bug used the global rank), else `configured`.
    pub fn device_or(&self, configured: Device) -> Device {
        match &self.group {
            Some(g) if g.backend() == crate::Backend::Nccl => Device::Cuda(g.local_rank()),
            _ => configured,
        }
    }

    /// True on every rank when `flag` is true on any.
    pub fn any(&mut self, flag: bool) -> Result<bool, DistError> {
        let Some(g) = &mut self.group else { return Ok(flag) };
        let mut t = [Tensor::from(if flag { 1f32 } else { 0f32 }).to_device(g.device())];
        g.all_reduce_mean(&mut t)?;
        Ok(t[0].double_value(&[]) > 0.0)
    }

    /// The mean of each value over the ranks.
    pub fn mean<const N: usize>(&mut self, values: [f64; N], device: Device) -> Result<[f64; N], DistError> {
        let Some(g) = &mut self.group else { return Ok(values) };
        let mut t = [Tensor::from_slice(&values).to_device(device)];
        g.all_reduce_mean(&mut t)?;
        let v = Vec::<f64>::try_from(t[0].to_device(Device::Cpu))?;
        Ok(std::array::from_fn(|i| v[i]))
    }

    /// Averages the gradients of `params` over the ranks, in place (bucketed).
    pub fn average_gradients(&mut self, params: &[Tensor]) -> Result<(), DistError> {
        let Some(g) = &mut self.group else { return Ok(()) };
        let mut grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        g.all_reduce_mean(&mut grads)?;
        Ok(())
    }

    /// Rank 0's values of `tensors` on every rank, in place.
    pub fn broadcast_from_lead(&mut self, tensors: &[Tensor]) -> Result<(), DistError> {
        let Some(g) = &mut self.group else { return Ok(()) };
        let mut t: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        tch::no_grad(|| g.broadcast(&mut t, 0))?;
        Ok(())
    }

    /// Waits until every rank gets here.
    pub fn barrier(&mut self) -> Result<(), DistError> {
        if let Some(g) = &mut self.group {
            g.barrier()?;
        }
        Ok(())
    }
}

/// How the ranks of a local launch ended: each one's exit code (`None` when killed by a
/// signal), rank order.
pub type RankExits = Vec<Option<i32>>;

/// Starts `exe args…` as `n` local ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
/// MASTER_PORT as torchrun sets them; a free port for the rendezvous) and waits for all
/// of them. `--threads` shares the cores between the ranks unless `args` sets it. When
/// `stop` is raised, SIGTERM goes to every rank (each finishes its step; rank 0
/// checkpoints). Ranks other than 0 get no stdout. `started(pids, port)` is told once
/// they run. A rank that fails makes the others fail at their next collective.
pub fn launch_local(
    exe: &std::path::Path,
    args: &[String],
    n: usize,
    stop: &std::sync::atomic::AtomicBool,
    started: &mut dyn FnMut(&[u32], u16),
) -> std::io::Result<RankExits> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut args = args.to_vec();
    if !args.iter().any(|a| a == "--threads" || a.starts_with("--threads=")) {
        // libtorch would give every rank all the cores.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        args.extend(["--threads".to_string(), (cores / n).max(1).to_string()]);
    }
    let mut children = Vec::new();
    for rank in 0..n {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if rank > 0 {
            cmd.stdout(std::process::Stdio::null());
        }
        children.push(cmd.spawn()?);
    }
    started(&children.iter().map(|c| c.id()).collect::<Vec<_>>(), port);
    let mut exits: Vec<Option<Option<i32>>> = vec![None; n];
    let mut forwarded = false;
    while exits.iter().any(Option::is_none) {
        for (rank, child) in children.iter_mut().enumerate() {
            if exits[rank].is_none() {
                if let Some(status) = child.try_wait()? {
                    exits[rank] = Some(status.code());
                }
            }
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) && !forwarded {
            // Through kill(1), as the sweep launcher: the workspace denies unsafe code.
            for child in &children {
                let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            }
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(exits.into_iter().map(Option::flatten).collect())
}
