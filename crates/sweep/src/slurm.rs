//! The Slurm launcher: one sbatch array job per launch, one task per run.
//!
//! Each task runs `ditbench train --run ID` in the background and forwards USR1 (sent
//! `signal_grace_s` before the time limit, `--signal=B:USR1@N`) and TERM (sent by
//! `scontrol requeue`, preemption or `scancel`) to it; the run finishes its step,
//! checkpoints, marks itself preempted and exits with 75. After USR1 (the time limit is
//! near) the script requeues its own task, which resumes from the checkpoint with the
//! same run id and the next attempt number. After TERM it does not: `scontrol requeue`
//! and preemption in REQUEUE mode requeue the task themselves, and a requeue after
//! `scancel` would bring a cancelled task back (Slurm accepts `scontrol requeue` on a
//! job that is still completing). A task whose run failed with an I/O error
//! ([`exit::IO_FAILED`]) requeues itself after a pause (`DITBENCH_IO_RETRY_PAUSE`
//! seconds, default 60) while `launcher.retries` allows; one whose run another live
//! process trains ([`exit::BUSY`]) leaves it to that process. Submitted jobs are
//! recorded in `<store>/<sweep>/slurm/jobs.json`, so that `sweep status` can join the
//! registry with `squeue`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use ditbench_common::exit;
use ditbench_track::Store;

pub use crate::launcher::Submission;
use crate::launcher::{Events, LaunchReport, Launcher, LauncherKind, Overrides};
use crate::spec::{LauncherSpec, PlannedRun, SlurmSpec};
use crate::SweepError;

/// The Slurm launcher: submits a sweep's runs as one array job and returns.
#[derive(Debug, Clone)]
pub struct SlurmLauncher {
    pub settings: SlurmSpec,
    /// The `ditbench` executable the tasks run.
    pub exe: PathBuf,
    pub store: PathBuf,
}

impl SlurmLauncher {
    /// The spec's `[launcher.slurm]` with `gpus_per_run` and the caller's partition,
    /// account and time limit.
    pub fn from_spec(l: &LauncherSpec, o: &Overrides, exe: &Path, store: &Path) -> Self {
        let mut settings = l.slurm.clone();
        settings.gpus_per_run = l.gpus_per_run;
        settings.retries = l.retries;
        if o.partition.is_some() {
            settings.partition = o.partition.clone();
        }
        if o.account.is_some() {
            settings.account = o.account.clone();
        }
        if let Some(t) = &o.time {
            settings.time = t.clone();
        }
        SlurmLauncher { settings, exe: exe.to_path_buf(), store: store.to_path_buf() }
    }
}

impl Launcher for SlurmLauncher {
    fn kind(&self) -> LauncherKind {
        LauncherKind::Slurm
    }

    fn launch(&mut self, _store: &Store, sweep: &str, runs: Vec<PlannedRun>, _events: &mut dyn Events) -> Result<LaunchReport, SweepError> {
        submit(sweep, &runs, &self.exe, &self.store, &self.settings).map(LaunchReport::Submitted)
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The sbatch script for `runs` (pure: no file written, nothing submitted).
pub fn script(sweep: &str, runs: &[PlannedRun], exe: &Path, store: &Path, s: &SlurmSpec) -> String {
    let mut o = String::new();
    let log_dir = store.join(sweep).join("slurm");
    let _ = writeln!(o, "#!/bin/bash");
    let _ = writeln!(o, "#SBATCH --job-name={}", quote(&format!("ditbench-{sweep}")));
    let limit = s.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    let _ = writeln!(o, "#SBATCH --array=0-{}{limit}", runs.len().saturating_sub(1));
    let _ = writeln!(o, "#SBATCH --time={}", s.time);
    if let Some(p) = &s.partition {
        let _ = writeln!(o, "#SBATCH --partition={p}");
    }
    if let Some(a) = &s.account {
        let _ = writeln!(o, "#SBATCH --account={a}");
    }
    if let Some(q) = &s.qos {
        let _ = writeln!(o, "#SBATCH --qos={q}");
    }
    if s.gpus_per_task > 0 {
        let _ = writeln!(o, "#SBATCH --gpus-per-task={}", s.gpus_per_task);
    }
    // One task per data-parallel rank; srun starts them and they meet through Slurm's
    // variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the node list).
    let _ = writeln!(o, "#SBATCH --ntasks={}", s.gpus_per_run.max(1));
    let _ = writeln!(o, "#SBATCH --cpus-per-task={}", s.cpus_per_task);
    if let Some(m) = &s.mem {
        let _ = writeln!(o, "#SBATCH --mem={m}");
    }
    let _ = writeln!(o, "#SBATCH --signal=B:USR1@{}", s.signal_grace_s);
    let _ = writeln!(o, "#SBATCH --requeue");
    let _ = writeln!(o, "#SBATCH --open-mode=append");
    let _ = writeln!(o, "#SBATCH --output={}/%A_%a.out", log_dir.display());
    for e in &s.extra {
        let _ = writeln!(o, "#SBATCH {e}");
    }
    let _ = writeln!(o, "# Written by ditbench sweep run --launcher slurm; one array task per run.");
    let _ = writeln!(o, "set -u");
    let _ = writeln!(o, "RUNS=({})", runs.iter().map(|r| quote(&r.config.run_id)).collect::<Vec<_>>().join(" "));
    let _ = writeln!(o, "RUN=${{RUNS[$SLURM_ARRAY_TASK_ID]}}");
    let _ = writeln!(o, "echo \"ditbench: task $SLURM_ARRAY_TASK_ID run $RUN restart ${{SLURM_RESTART_COUNT:-0}} on $(hostname)\"");
    // Several ranks: srun launches them and passes the signals on to every task.
    let launch = if s.gpus_per_run > 1 { "srun --kill-on-bad-exit=1 " } else { "" };
    let _ = writeln!(
        o,
        "{launch}{} --store {} train --run \"$RUN\" --threads {} &",
        quote(&exe.display().to_string()),
        quote(&store.display().to_string()),
        s.cpus_per_task
    );
    let _ = writeln!(o, "PID=$!");
    let _ = writeln!(o, "TIME_LIMIT=0");
    let _ = writeln!(o, "trap 'TIME_LIMIT=1; kill -USR1 $PID 2>/dev/null' USR1");
    let _ = writeln!(o, "STOPPED=0");
    let _ = writeln!(o, "trap 'STOPPED=1; kill -TERM $PID 2>/dev/null' TERM INT");
    // `wait` returns early when a trap runs: wait until the process is really gone.
    let _ = writeln!(o, "while true; do wait $PID; RC=$?; kill -0 $PID 2>/dev/null || break; done");
    let _ = writeln!(o, "echo \"ditbench: run $RUN exited with $RC\"");
    // This task only: the last task's SLURM_JOB_ID is the array's own id, and requeueing
    // that requeues (and interrupts) every task of the array.
    let preempted = exit::PREEMPTED;
    let _ = writeln!(
        o,
        "if [ $RC -eq {preempted} ] && [ $TIME_LIMIT -eq 1 ]; then scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" || true; fi"
    );
    // Another live process trains the run (exit BUSY): it is that process's; this task
    // changed nothing and leaves it alone.
    let _ = writeln!(
        o,
        "if [ $RC -eq {} ]; then echo \"ditbench: run $RUN is trained by another live process (see its lease); this task leaves it to that one\"; fi",
        exit::BUSY
    );
    // An I/O failure is often transient (a full scratch disk gets cleaned): requeue the
    // task after a pause, as the local launcher relaunches the run, while requeues are
    // left. SLURM_RESTART_COUNT also counts requeues at the time limit, so this bound
    // errs on the side of fewer retries. The pause is a background sleep so that a TERM
    // (scancel) interrupts it, and a stopped task is never requeued.
    let _ = writeln!(
        o,
        "if [ $RC -eq {} ] && [ $STOPPED -eq 0 ] && [ ${{SLURM_RESTART_COUNT:-0}} -lt {} ]; then \
         PAUSE=${{DITBENCH_IO_RETRY_PAUSE:-60}}; echo \"ditbench: run $RUN failed with an I/O error; requeueing this task in $PAUSE s\"; \
         sleep \"$PAUSE\" 2>/dev/null & wait $!; \
         if [ $STOPPED -eq 0 ]; then scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" || true; fi; fi",
        exit::IO_FAILED,
        s.retries
    );
    let _ = writeln!(o, "exit $RC");
    o
}

fn jobs_path(store: &Path, sweep: &str) -> PathBuf {
    store.join(sweep).join("slurm").join("jobs.json")
}

/// Submissions recorded for a sweep.
pub fn submissions(store: &Path, sweep: &str) -> Result<Vec<Submission>, SweepError> {
    let p = jobs_path(store, sweep);
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| SweepError::Launcher(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(SweepError::Io { path: p.display().to_string(), source: e }),
    }
}

/// Writes the script, submits it with `sbatch --parsable`, records the job.
pub fn submit(sweep: &str, runs: &[PlannedRun], exe: &Path, store: &Path, s: &SlurmSpec) -> Result<Submission, SweepError> {
    if runs.is_empty() {
        return Err(SweepError::Launcher("nothing to submit: every run is finished or cancelled".into()));
    }
    let dir = store.join(sweep).join("slurm");
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::Io { path: dir.display().to_string(), source: e })?;
    let n = submissions(store, sweep)?.len();
    let path = dir.join(format!("submit-{n:03}.sbatch"));
    std::fs::write(&path, script(sweep, runs, exe, store, s)).map_err(|e| SweepError::Io { path: path.display().to_string(), source: e })?;
    let out = Command::new("sbatch").arg("--parsable").arg(&path).output().map_err(|e| {
        SweepError::Launcher(format!(
            "sbatch not found or not runnable ({e}); install Slurm's client tools or use --launcher local. The script is at {}",
            path.display()
        ))
    })?;
    if !out.status.success() {
        return Err(SweepError::Launcher(format!(
            "sbatch refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job_id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SweepError::Launcher(format!("sbatch printed no job id: {stdout:?}")));
    }
    let sub = Submission {
        job_id,
        runs: runs.iter().map(|r| r.config.run_id.clone()).collect(),
        script: path,
        submitted_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
    };
    let mut all = submissions(store, sweep)?;
    all.push(sub.clone());
    let jp = jobs_path(store, sweep);
    let tmp = jp.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&all).expect("serialises"))
        .and_then(|_| std::fs::rename(&tmp, &jp))
        .map_err(|e| SweepError::Io { path: jp.display().to_string(), source: e })?;
    Ok(sub)
}

/// Slurm's view of the sweep's tasks: run id → (job id of the task, state, reason),
/// from `squeue` (pending and running tasks only; finished ones are in the registry).
pub fn queue_state(store: &Path, sweep: &str) -> Result<BTreeMap<String, (String, String, String)>, SweepError> {
    let subs = submissions(store, sweep)?;
    let mut out = BTreeMap::new();
    if subs.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = subs.iter().map(|s| s.job_id.as_str()).collect();
    let res = Command::new("squeue")
        .args(["-h", "-r", "-o", "%F|%K|%i|%T|%r", "-j", &ids.join(",")])
        .output()
        .map_err(|e| SweepError::Launcher(format!("squeue not runnable ({e})")))?;
    for line in String::from_utf8_lossy(&res.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 5 {
            continue;
        }
        let (Some(sub), Ok(idx)) = (subs.iter().find(|s| s.job_id == f[0]), f[1].parse::<usize>()) else { continue };
        if let Some(run) = sub.runs.get(idx) {
            out.insert(run.clone(), (f[2].to_string(), f[3].to_string(), f[4].to_string()));
        }
    }
    Ok(out)
}

/// `scancel` every job of the sweep. Slurm sends SIGTERM to running tasks (forwarded
/// to the run, which checkpoints within Slurm's KillWait) and drops pending ones; the
/// script does not requeue a task stopped by TERM. The runs mark themselves preempted
/// when they exit: wait for that with [`wait_until_gone`] before marking them cancelled.
pub fn cancel(store: &Path, sweep: &str) -> Result<usize, SweepError> {
    let subs = submissions(store, sweep)?;
    if subs.is_empty() {
        return Ok(0);
    }
    let st = Command::new("scancel")
        .args(subs.iter().map(|s| s.job_id.as_str()))
        .status()
        .map_err(|e| SweepError::Launcher(format!("scancel not runnable ({e})")))?;
    if !st.success() {
        return Err(SweepError::Launcher(format!("scancel exited with {st}")));
    }
    Ok(subs.len())
}

/// Waits until no task of the sweep's jobs is left in `squeue` (running tasks stopped by
/// `scancel` finish their step and checkpoint first). Returns the tasks still there
/// when `timeout` runs out (empty: all gone).
pub fn wait_until_gone(store: &Path, sweep: &str, timeout: std::time::Duration) -> Result<Vec<String>, SweepError> {
    let t0 = std::time::Instant::now();
    loop {
        let q = queue_state(store, sweep)?;
        if q.is_empty() || t0.elapsed() >= timeout {
            return Ok(q.into_values().map(|(task, state, _)| format!("{task} {state}")).collect());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SweepSpec;

    /// Several ranks per run: that many tasks, started by srun (which forwards the
    /// USR1/TERM the script passes to it); one rank: a single task, no srun.
    #[test]
    fn ranks_per_run_become_tasks_started_by_srun() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sweeps/smoke.toml");
        let spec = SweepSpec::load(&dir).unwrap();
        let runs = spec.expand().unwrap();
        let (exe, store) = (Path::new("/bin/ditbench"), Path::new("/store"));
        let mut s = SlurmSpec { gpus_per_run: 4, ..spec.launcher.slurm.clone() };
        let multi = script("smoke", &runs, exe, store, &s);
        assert!(multi.contains("#SBATCH --ntasks=4\n"), "{multi}");
        let line = multi.lines().find(|l| l.contains(" train --run ")).unwrap();
        assert!(line.starts_with("srun --kill-on-bad-exit=1 ") && line.contains("ditbench"), "{line}");
        s.gpus_per_run = 1;
        let single = script("smoke", &runs, exe, store, &s);
        assert!(single.contains("#SBATCH --ntasks=1\n") && !single.contains("srun"), "{single}");
    }
}
