//! A sweep in the store: registration, live status, which runs to (re)launch, cancel.

use ditbench_track::{read_run, RunSpec, Status, StatusChange, Store};

use crate::spec::{PlannedRun, SweepSpec};
use crate::SweepError;

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The sweep name used (differs from the spec's with `--new`).
    pub sweep: String,
    pub runs: Vec<PlannedRun>,
    pub new_runs: usize,
}

fn same_spec(a: &str, b: &str) -> bool {
    // Formatting and comments do not matter; content does.
    match (a.parse::<toml::Table>(), b.parse::<toml::Table>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Registers the sweep and its runs (status queued; config.toml written for new runs).
/// Refused, with every reason, when a launch would refuse any run. Idempotent for the
/// same spec. A registered sweep of the same name with a different
/// spec is refused, unless `new_name` is set: then the spec is registered under the next
/// free name `<name>-2`, `<name>-3`…, and nothing of the old sweep is touched.
pub fn register(store: &Store, spec: &SweepSpec, new_name: bool, git: (Option<String>, Option<bool>)) -> Result<Registration, SweepError> {
    // Whether sweep `name` is registered with a spec other than this one, from its
    // folder (a launcher never opens the store's index).
    let conflicts = |name: &str| -> Result<bool, SweepError> {
        match store.sweep_spec(name) {
            Ok(Some(old)) => Ok(!same_spec(&old, &spec.text)),
            Ok(None) | Err(ditbench_track::Error::UnknownSweep(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    let mut spec = spec.clone();
    if conflicts(&spec.name)? {
        if !new_name {
            return Err(SweepError::Refused(format!(
                "sweep `{}` is already registered with a different spec (frozen copy: {}); \
                 nothing was changed. Rename the sweep in the spec, or pass --new to register this spec as a new sweep",
                spec.name,
                store.root().join(&spec.name).join("sweep.toml").display()
            )));
        }
        // The first `<name>-N` that is free or holds this very spec.
        let base = spec.name.clone();
        let mut i = 2;
        while conflicts(&format!("{base}-{i}"))? {
            i += 1;
        }
        spec = spec.renamed(&format!("{base}-{i}"))?;
    }
    // Nothing is registered while any run would be refused at launch.
    let runs = spec.launchable()?;
    store.register_sweep(&spec.name, Some(&spec.text))?;
    let mut new_runs = 0;
    for r in &runs {
        let c = &r.config;
        let is_new = store.register_run(&RunSpec::from_config(c, git.0.clone(), git.1))?;
        if is_new || !store.run_dir(&c.sweep, &c.run_id).join("config.toml").exists() {
            store.write_config(&c.run_id, &c.to_toml())?;
            new_runs += usize::from(is_new);
        }
    }
    write_run_list(store, &spec.name, &runs)?;
    Ok(Registration { sweep: spec.name.clone(), runs, new_runs })
}

/// The file in a sweep's folder that lists its run ids in plan order.
pub const RUN_LIST_FILE: &str = "runs.json";

/// Writes `<sweep>/runs.json`: the sweep's run ids in plan order, so that the sweep
/// folder says which runs are its own without its spec being expanded again. Written
/// (atomically) after every run is registered, so each id it names has its folder.
fn write_run_list(store: &Store, sweep: &str, runs: &[PlannedRun]) -> Result<(), SweepError> {
    let ids: Vec<&str> = runs.iter().map(|r| r.config.run_id.as_str()).collect();
    let path = store.root().join(sweep).join(RUN_LIST_FILE);
    let text = serde_json::to_vec_pretty(&ids).expect("a list of strings serialises");
    ditbench_common::write_atomic(&path, &text).map_err(|e| SweepError::Io { path: path.display().to_string(), source: e })
}

/// Which runs `sweep resume` relaunches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Select {
    pub queued: bool,
    pub preempted: bool,
    pub failed: bool,
    /// Runs still marked running (their process died with the machine).
    pub running: bool,
    pub cancelled: bool,
}

impl Select {
    /// Everything not finished and not cancelled: what `sweep run` and a plain
    /// `sweep resume` launch.
    pub const UNFINISHED: Select = Select { queued: true, preempted: true, failed: true, running: true, cancelled: false };

    pub fn picks(&self, s: Status) -> bool {
        match s {
            Status::Queued => self.queued,
            Status::Preempted => self.preempted,
            Status::Failed => self.failed,
            Status::Running => self.running,
            Status::Cancelled => self.cancelled,
            Status::Finished => false,
        }
    }
}

/// The runs of `reg` whose registry status `select` picks.
pub fn select_runs(store: &Store, runs: &[PlannedRun], select: Select) -> Result<Vec<PlannedRun>, SweepError> {
    let mut out = vec![];
    for r in runs {
        let rec = store.run(&r.config.run_id)?;
        if select.picks(rec.status) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// One row of `ditbench sweep status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatusRow {
    pub id: String,
    pub model: String,
    pub patch: i64,
    pub gflops: f64,
    pub status: String,
    pub attempt: i64,
    /// Last logged step and the run's total.
    pub step: Option<i64>,
    pub steps: u64,
    pub loss: Option<f64>,
    /// Last FID / FD value and its metric name.
    pub quality: Option<(String, f64)>,
    pub images_per_s: Option<f64>,
    /// Seconds left at the last measured speed (running runs only).
    pub eta_s: Option<f64>,
    pub error: Option<String>,
}

/// Status of every run of the sweep, from the registry and each run's flushed metrics.
pub fn status(store: &Store, sweep: &str, runs: &[PlannedRun]) -> Result<Vec<StatusRow>, SweepError> {
    let mut rows = vec![];
    for r in runs {
        let c = &r.config;
        let rec = match store.run(&c.run_id) {
            Ok(rec) => rec,
            Err(ditbench_track::Error::UnknownRun(_)) => {
                rows.push(StatusRow {
                    id: c.run_id.clone(),
                    model: c.model.name.clone(),
                    patch: c.model.patch_size,
                    gflops: c.model.gflops(),
                    status: "unregistered".into(),
                    attempt: 0,
                    step: None,
                    steps: c.train.steps,
                    loss: None,
                    quality: None,
                    images_per_s: None,
                    eta_s: None,
                    error: None,
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // The live history: after a resume, rows an earlier attempt logged past the
        // checkpoint are superseded (else `step` could show a step the run went back from).
        let data = read_run(&store.run_dir(sweep, &c.run_id))
            .ok()
            .map(|d| d.live(&ditbench_track::live_through(&store.run_events(&c.run_id).unwrap_or_default())));
        let last = |name: &str| -> Option<(i64, f64)> {
            let m = &data.as_ref()?.metrics;
            (0..m.len()).map(|i| m.point(i)).filter(|p| p.name == name).max_by_key(|p| p.step).map(|p| (p.step, p.value))
        };
        let loss = last("loss");
        let ips = last("images_per_s").map(|x| x.1);
        let quality = data.as_ref().and_then(|d| {
            d.evals.rows().into_iter().filter(|e| e.metric == "fid" || e.metric.starts_with("FD_")).max_by_key(|e| e.step).map(|e| (e.metric, e.value))
        });
        let step = loss.map(|l| l.0);
        let eta_s = match (rec.status, step, ips) {
            (Status::Running, Some(s), Some(v)) if v > 0.0 => Some((c.train.steps as i64 - s).max(0) as f64 * c.train.batch_size as f64 / v),
            _ => None,
        };
        rows.push(StatusRow {
            id: c.run_id.clone(),
            model: c.model.name.clone(),
            patch: c.model.patch_size,
            gflops: c.model.gflops(),
            status: rec.status.as_str().to_string(),
            attempt: rec.attempt,
            step,
            steps: c.train.steps,
            loss: loss.map(|l| l.1),
            quality,
            images_per_s: ips,
            eta_s,
            error: rec.error.clone(),
        });
    }
    Ok(rows)
}

/// Marks every run that has not finished as cancelled (a running run's process is
/// stopped by its launcher first; see the CLI). Returns the ids cancelled.
pub fn cancel(store: &Store, runs: &[PlannedRun]) -> Result<Vec<String>, SweepError> {
    let mut done = vec![];
    for r in runs {
        let rec = match store.run(&r.config.run_id) {
            Ok(rec) => rec,
            Err(ditbench_track::Error::UnknownRun(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if matches!(rec.status, Status::Queued | Status::Preempted | Status::Failed | Status::Running) {
            store.set_status(&rec.id, &StatusChange::new(Status::Cancelled).message("cancelled by `ditbench sweep cancel`"))?;
            done.push(rec.id);
        }
    }
    Ok(done)
}
