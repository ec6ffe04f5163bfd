//! `--nproc-per-node N` (train, sample): the same command as N local ranks, through
//! `ditbench_c10d::launch_local`; this prints and picks the exit code.

use anyhow::{Context, Result};
use ditbench_c10d::launch_local;
use ditbench_common::exit;
use ditbench_train::run;

/// Runs this process's command as `n` ranks and waits. The exit code is the first
/// failure's, else preempted when a rank was, else 0.
pub fn launch(n: usize) -> Result<i32> {
    let exe = std::env::current_exe().context("locating the ditbench binary")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stop = run::install_stop_flag()?;
    let exits = launch_local(&exe, &args, n, &stop, &mut |pids, port| {
        eprintln!("launched {n} ranks (pids {pids:?}), rendezvous 127.0.0.1:{port}");
    })
    .context("starting the ranks")?;
    let codes: Vec<i32> = exits.into_iter().map(|c| c.unwrap_or(exit::FAILED)).collect();
    Ok(match codes.iter().find(|&&c| c != exit::OK && c != exit::PREEMPTED) {
        Some(&c) => {
            eprintln!("ranks exited with {codes:?}");
            c
        }
        None if codes.contains(&exit::PREEMPTED) => exit::PREEMPTED,
        None => exit::OK,
    })
}
