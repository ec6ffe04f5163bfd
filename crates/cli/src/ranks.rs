//! Local data-parallel launch: one process per rank, as torchrun would start them.

use anyhow::{Context, Result};
use ditbench_train::run;

use crate::train::{EXIT_FAILED, EXIT_PREEMPTED};

/// `--nproc-per-node N` (train, sample): runs this same command as N ranks (RANK, WORLD_SIZE,
/// LOCAL_RANK, MASTER_ADDR, MASTER_PORT as torchrun sets them) and waits. Stop signals
/// are passed on (every rank checkpoints through rank 0 and exits as preempted); when a
/// rank fails the others fail at their next collective, and the exit code is the first
/// failure's. Ranks other than 0 keep quiet.
pub fn launch(n: usize) -> Result<i32> {
    let exe = std::env::current_exe().context("locating the ditbench binary")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A free port for the rendezvous store: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let stop = run::install_stop_flag()?;
    let mut args = args;
    if !args.iter().any(|a| a == "--threads" || a.starts_with("--threads=")) {
        // Share the cores between the ranks (libtorch would give each all of them).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        args.extend(["--threads".to_string(), (cores / n).max(1).to_string()]);
    }
    let mut children = Vec::new();
    for rank in 0..n {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if rank > 0 {
            cmd.stdout(std::process::Stdio::null());
        }
        children.push(cmd.spawn().with_context(|| format!("starting rank {rank}"))?);
    }
    eprintln!("launched {n} ranks (pids {:?}), rendezvous 127.0.0.1:{port}", children.iter().map(|c| c.id()).collect::<Vec<_>>());
    let mut codes: Vec<Option<i32>> = vec![None; n];
    let mut forwarded = false;
    while codes.iter().any(Option::is_none) {
        for (rank, child) in children.iter_mut().enumerate() {
            if codes[rank].is_none() {
                if let Some(status) = child.try_wait()? {
                    codes[rank] = Some(status.code().unwrap_or(EXIT_FAILED));
                }
            }
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) && !forwarded {
            for child in &children {
                let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            }
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let codes: Vec<i32> = codes.into_iter().map(|c| c.unwrap_or(EXIT_FAILED)).collect();
    Ok(match codes.iter().find(|&&c| c != 0 && c != EXIT_PREEMPTED) {
        Some(&c) => {
            eprintln!("ranks exited with {codes:?}");
            c
        }
        None if codes.contains(&EXIT_PREEMPTED) => EXIT_PREEMPTED,
        None => 0,
    })
}
