//! A run folder's own records, the source of truth about the run:
//!
//! ```text
//! run.json        what the run is (id, sweep, model, patch, params count, Gflops, git),
//!                 created exclusively when the run is registered, never rewritten
//! events.jsonl    append-only status changes, one JSON object per line
//! params.json     typed parameters, rewritten by rename
//! summaries.json  per-metric summaries of the live history, rewritten by rename
//! ```
//!
//! Every file is either appended to by the run's one writer or written to a temporary
//! name and renamed, so a reader (on any host) sees a complete file or the previous
//! one, and a kill at any moment leaves at most a partial last line of the event log,
//! which readers skip and the next writer cuts off before appending.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{temp_sibling, write_atomic};
use crate::types::{Event, ParamRow, ParamValue, RunRecord, RunSpec, Source, Status, Summary};

/// What the run is; created once, exclusively.
pub const RUN_FILE: &str = "run.json";
/// The append-only event log.
pub const EVENTS_FILE: &str = "events.jsonl";
/// Typed parameters.
pub const PARAMS_FILE: &str = "params.json";
/// Summaries of the live history.
pub const SUMMARIES_FILE: &str = "summaries.json";
/// Version of the run folder's record files this build writes.
pub const FOLDER_FORMAT: u32 = 1;

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunFile {
    pub format: u32,
    pub id: String,
    pub sweep: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub patch: Option<i64>,
    #[serde(default)]
    pub n_params: Option<i64>,
    #[serde(default)]
    pub gflops: Option<f64>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub git_dirty: Option<bool>,
    pub created_at: f64,
}

impl RunFile {
    pub(crate) fn new(spec: &RunSpec, created_at: f64) -> RunFile {
        RunFile {
            format: FOLDER_FORMAT,
            id: spec.id.clone(),
            sweep: spec.sweep.clone(),
            model: spec.model.clone(),
            patch: spec.patch,
            n_params: spec.n_params,
            gflops: spec.gflops,
            git_commit: spec.git_commit.clone(),
            git_dirty: spec.git_dirty,
            created_at,
        }
    }
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventLine {
    time: f64,
    status: String,
    attempt: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ParamLine {
    key: String,
    kind: String,
    value: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SummaryLine {
    metric: String,
    source: String,
    last: Option<f64>,
    last_step: i64,
    min: Option<f64>,
    min_step: i64,
    max: Option<f64>,
    max_step: i64,
    count: i64,
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Creates `run.json` exclusively: `Ok(true)` when this call created it, `Ok(false)`
/// when it already existed. A link(2) of a complete temporary file, so that a reader
/// never sees a half-written file and two registrations cannot both win (link is
/// atomic on NFS too, where O_EXCL may not be).
pub(crate) fn create_run_file(dir: &Path, run: &RunFile) -> Result<bool> {
    let path = dir.join(RUN_FILE);
    let text = serde_json::to_vec_pretty(run).map_err(|e| corrupt(&path, e))?;
    create_exclusive(&path, &text, Sync::File)
}

/// How far a record file is made durable before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Handed to the OS only: survives a killed process, not a power loss. For files
    /// whose loss after a power cut costs nothing (a lease: its holder died with the
    /// machine; a registration event: a run without events reads as queued).
    None,
    /// The file's content is fsynced (never half a file after a power loss); its name
    /// may still be lost, which a re-registration or the next event recreates.
    File,
    /// The content and the folder's entry: the record survives a power loss.
    Entry,
}

/// Writes `bytes` to a temporary sibling and links it to `path`; `Ok(false)` when
/// `path` already exists. The temporary file is always removed.
pub(crate) fn create_exclusive(path: &Path, bytes: &[u8], sync: Sync) -> Result<bool> {
    let tmp = unique_temp(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        if sync != Sync::None {
            f.sync_all().ctx("sync", &tmp)?;
        }
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // NFS may answer a retransmitted, successful link with an error: the link
            // count of the temporary file says what really happened.
            Err(e) => match std::fs::metadata(&tmp) {
                Ok(m) if std::os::unix::fs::MetadataExt::nlink(&m) == 2 => Ok(true),
                _ => Err(Error::Io { op: "link", path: path.to_path_buf(), source: e }),
            },
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if let (Ok(true), Sync::Entry) = (&result, sync) {
        if let Some(dir) = path.parent() {
            let _ = crate::fsutil::sync_dir(dir);
        }
    }
    result
}

/// A temporary sibling unique across hosts and processes (host, pid, counter).
pub(crate) fn unique_temp(path: &Path) -> PathBuf {
    let t = temp_sibling(path);
    let name = t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    t.with_file_name(format!("{name}-{}", ditbench_common::hostname()))
}

pub(crate) fn read_run_file(dir: &Path) -> Result<RunFile> {
    let path = dir.join(RUN_FILE);
    let bytes = std::fs::read(&path).ctx("read", &path)?;
    let run: RunFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, format!("not a run record ({e})")))?;
    if run.format > FOLDER_FORMAT {
        return Err(corrupt(&path, format!("format {} is newer than this ditbench reads ({FOLDER_FORMAT}); upgrade ditbench", run.format)));
    }
    Ok(run)
}

/// Appends one event to the run's log: one `write` of one line, then fsync (status
/// changes are rare, and each must survive what comes after it). A partial last line
/// left by a killed writer is cut off first; only the run's writer appends, so
/// nobody else is writing it meanwhile.
pub(crate) fn append_event(dir: &Path, ev: &Event, sync: Sync) -> Result<()> {
    let created = append_event_to(&dir.join(EVENTS_FILE), ev, sync)?;
    if created && sync == Sync::Entry {
        let _ = crate::fsutil::sync_dir(dir);
    }
    Ok(())
}

/// [`append_event`] to a given file; `Ok(true)` when this created it.
pub(crate) fn append_event_to(path: &Path, ev: &Event, sync: Sync) -> Result<bool> {
    let path = path.to_path_buf();
    let line = EventLine {
        time: ev.time,
        status: ev.status.as_str().to_string(),
        attempt: ev.attempt,
        host: ev.host.clone(),
        device: ev.device.clone(),
        pid: ev.pid,
        job: ev.job.clone(),
        from_step: ev.from_step,
        message: ev.message.clone(),
    };
    let mut bytes = serde_json::to_vec(&line).map_err(|e| corrupt(&path, e))?;
    bytes.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&path).ctx("open event log", &path)?;
    let len = f.metadata().ctx("stat event log", &path)?.len();
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::Start(len - 1)).ctx("read event log", &path)?;
        f.read_exact(&mut last).ctx("read event log", &path)?;
        if last[0] != b'\n' {
            let mut all = Vec::new();
            f.seek(SeekFrom::Start(0)).ctx("read event log", &path)?;
            f.read_to_end(&mut all).ctx("read event log", &path)?;
            let keep = all.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            f.set_len(keep as u64).ctx("cut the partial last line of", &path)?;
        }
    }
    f.write_all(&bytes).ctx("append to event log", &path)?;
    if sync != Sync::None {
        f.sync_data().ctx("sync event log", &path)?;
    }
    Ok(len == 0)
}

/// The events of a run, in order, and a warning per line that could not be read. A
/// last line without its newline (a writer killed mid-append) is not an event yet.
pub(crate) fn read_events(dir: &Path, run_id: &str) -> Result<(Vec<Event>, Vec<String>)> {
    let path = dir.join(EVENTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::Io { op: "read", path, source: e }),
    };
    let mut events = Vec::new();
    let mut warnings = Vec::new();
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<EventLine>(line)
            .map_err(|e| e.to_string())
            .and_then(|l| l.status.parse::<Status>().map(|s| (l, s)).map_err(|e| e.to_string()));
        match parsed {
            Ok((l, status)) => events.push(Event {
                run_id: run_id.to_string(),
                time: l.time,
                status,
                attempt: l.attempt,
                host: l.host,
                device: l.device,
                pid: l.pid,
                job: l.job,
                from_step: l.from_step,
                message: l.message,
            }),
            Err(e) => warnings.push(format!("{} line {}: unreadable event ({e}); skipped", path.display(), i + 1)),
        }
    }
    Ok((events, warnings))
}

/// The run's current state, from what it is and what happened to it: the last event
/// gives the status, the highest attempt the attempt, the last start and end their
/// times.
pub(crate) fn derive_record(run: &RunFile, events: &[Event]) -> RunRecord {
    let mut r = RunRecord {
        id: run.id.clone(),
        sweep: run.sweep.clone(),
        model: run.model.clone(),
        patch: run.patch,
        n_params: run.n_params,
        gflops: run.gflops,
        status: Status::Queued,
        attempt: 0,
        host: None,
        device: None,
        git_commit: run.git_commit.clone(),
        git_dirty: run.git_dirty,
        created_at: run.created_at,
        started_at: None,
        ended_at: None,
        error: None,
    };
    for e in events {
        r.status = e.status;
        r.attempt = r.attempt.max(e.attempt);
        if e.host.is_some() {
            r.host = e.host.clone();
        }
        if e.device.is_some() {
            r.device = e.device.clone();
        }
        match e.status {
            Status::Running => {
                r.started_at = Some(e.time);
                r.ended_at = None;
                r.error = None;
            }
            Status::Queued => r.error = None,
            Status::Finished => {
                r.ended_at = Some(e.time);
                r.error = None;
            }
            Status::Failed | Status::Preempted | Status::Cancelled => {
                r.ended_at = Some(e.time);
                r.error = e.message.clone();
            }
        }
    }
    r
}

/// For each attempt whose rows were superseded by a later resume: the last step of
/// its rows that stays in the live history. An attempt that started from step S
/// supersedes the rows of every earlier attempt past S (it recomputes those steps);
/// an attempt with no later resume keeps all its rows.
pub fn live_through(events: &[Event]) -> BTreeMap<i64, i64> {
    let starts: Vec<(i64, i64)> = events
        .iter()
        .filter(|e| e.status == Status::Running)
        .filter_map(|e| e.from_step.map(|s| (e.attempt, s)))
        .collect();
    let mut attempts: Vec<i64> = events.iter().map(|e| e.attempt).collect();
    attempts.sort_unstable();
    attempts.dedup();
    let mut out = BTreeMap::new();
    for a in attempts {
        if let Some(bound) = starts.iter().filter(|(b, _)| *b > a).map(|(_, s)| *s).min() {
            out.insert(a, bound);
        }
    }
    out
}

/// Whether a row of `attempt` at `step` is in the live history (see [`live_through`]).
/// Rows without an attempt (written before attempts were recorded) always are.
pub fn is_live(bounds: &BTreeMap<i64, i64>, attempt: Option<i64>, step: i64) -> bool {
    match attempt.and_then(|a| bounds.get(&a)) {
        Some(&bound) => step <= bound,
        None => true,
    }
}

fn param_json(v: &ParamValue) -> serde_json::Value {
    match v {
        ParamValue::Int(i) => (*i).into(),
        ParamValue::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        ParamValue::Str(s) => s.clone().into(),
        ParamValue::Bool(b) => (*b).into(),
    }
}

fn param_value(path: &Path, p: &ParamLine) -> Result<ParamValue> {
    let bad = || corrupt(path, format!("parameter {:?} of kind {} has value {}", p.key, p.kind, p.value));
    Ok(match p.kind.as_str() {
        "int" => ParamValue::Int(p.value.as_i64().ok_or_else(bad)?),
        "float" => ParamValue::Float(if p.value.is_null() { f64::NAN } else { p.value.as_f64().ok_or_else(bad)? }),
        "bool" => ParamValue::Bool(p.value.as_bool().ok_or_else(bad)?),
        "str" => ParamValue::Str(p.value.as_str().ok_or_else(bad)?.to_string()),
        _ => return Err(bad()),
    })
}

pub(crate) fn read_params(dir: &Path, run_id: &str) -> Result<Vec<ParamRow>> {
    let path = dir.join(PARAMS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io { op: "read", path, source: e }),
    };
    let lines: Vec<ParamLine> = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, format!("not a parameter list ({e})")))?;
    let mut rows = lines
        .iter()
        .map(|p| Ok(ParamRow { run_id: run_id.to_string(), key: p.key.clone(), value: param_value(&path, p)? }))
        .collect::<Result<Vec<_>>>()?;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

/// Sets (inserts or replaces) parameters: the merged list is written by rename.
pub(crate) fn write_params<K: AsRef<str>>(dir: &Path, run_id: &str, params: &[(K, ParamValue)]) -> Result<()> {
    let mut merged: BTreeMap<String, ParamValue> =
        read_params(dir, run_id)?.into_iter().map(|p| (p.key, p.value)).collect();
    for (k, v) in params {
        crate::ids::validate_metric_name(k.as_ref())?;
        merged.insert(k.as_ref().to_string(), v.clone());
    }
    let lines: Vec<ParamLine> =
        merged.iter().map(|(k, v)| ParamLine { key: k.clone(), kind: v.kind().to_string(), value: param_json(v) }).collect();
    let path = dir.join(PARAMS_FILE);
    let bytes = serde_json::to_vec_pretty(&lines).map_err(|e| corrupt(&path, e))?;
    write_atomic(&path, &bytes)
}

pub(crate) fn read_summaries(dir: &Path, run_id: &str) -> Result<Vec<Summary>> {
    let path = dir.join(SUMMARIES_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io { op: "read", path, source: e }),
    };
    let lines: Vec<SummaryLine> = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, format!("not a summary list ({e})")))?;
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok(lines
        .into_iter()
        .map(|l| Summary {
            run_id: run_id.to_string(),
            metric: l.metric,
            source: if l.source == "eval" { Source::Eval } else { Source::Metric },
            last: nan(l.last),
            last_step: l.last_step,
            min: nan(l.min),
            min_step: l.min_step,
            max: nan(l.max),
            max_step: l.max_step,
            count: l.count,
        })
        .collect())
}

pub(crate) fn write_summaries(dir: &Path, summaries: &[Summary]) -> Result<()> {
    let finite = |v: f64| Some(v).filter(|v| v.is_finite());
    let lines: Vec<SummaryLine> = summaries
        .iter()
        .map(|s| SummaryLine {
            metric: s.metric.clone(),
            source: s.source.as_str().to_string(),
            last: finite(s.last),
            last_step: s.last_step,
            min: finite(s.min),
            min_step: s.min_step,
            max: finite(s.max),
            max_step: s.max_step,
            count: s.count,
        })
        .collect();
    let path = dir.join(SUMMARIES_FILE);
    let bytes = serde_json::to_vec_pretty(&lines).map_err(|e| corrupt(&path, e))?;
    write_atomic(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(status: Status, attempt: i64, from: Option<i64>) -> Event {
        Event {
            run_id: "r".into(),
            time: 0.0,
            status,
            attempt,
            host: None,
            device: None,
            pid: None,
            job: None,
            from_step: from,
            message: None,
        }
    }

    #[test]
    fn a_resume_supersedes_the_rows_past_its_checkpoint() {
        // Attempt 1 ran to 137 and was killed; attempt 2 resumed from 130 and was
        // killed at 170; attempt 3 resumed from 150.
        let evs = [
            ev(Status::Queued, 0, None),
            ev(Status::Running, 1, Some(0)),
            ev(Status::Running, 2, Some(130)),
            ev(Status::Running, 3, Some(150)),
        ];
        let b = live_through(&evs);
        assert_eq!(b.get(&1), Some(&130));
        assert_eq!(b.get(&2), Some(&150));
        assert_eq!(b.get(&3), None);
        assert!(is_live(&b, Some(1), 130) && !is_live(&b, Some(1), 131));
        assert!(is_live(&b, Some(2), 150) && !is_live(&b, Some(2), 151));
        assert!(is_live(&b, Some(3), 10_000));
        // A later resume from an earlier checkpoint supersedes more of attempt 1.
        let evs2 = [ev(Status::Running, 1, Some(0)), ev(Status::Running, 2, Some(130)), ev(Status::Running, 3, Some(60))];
        assert_eq!(live_through(&evs2).get(&1), Some(&60));
        assert!(is_live(&b, None, 999), "rows from before attempts were recorded stay live");
    }

    #[test]
    fn a_partial_last_event_is_skipped_and_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = ev(Status::Running, 1, Some(0));
        append_event(dir.path(), &e, Sync::Entry).unwrap();
        let path = dir.path().join(EVENTS_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"time":1.0,"status":"fin"#).unwrap();
        drop(f);
        let (evs, warns) = read_events(dir.path(), "r").unwrap();
        assert_eq!((evs.len(), warns.len()), (1, 0));
        e.status = Status::Finished;
        append_event(dir.path(), &e, Sync::Entry).unwrap();
        let (evs, warns) = read_events(dir.path(), "r").unwrap();
        assert_eq!(evs.iter().map(|e| e.status).collect::<Vec<_>>(), [Status::Running, Status::Finished]);
        assert!(warns.is_empty(), "{warns:?}");
    }

    #[test]
    fn run_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RunSpec { id: "a".into(), sweep: "s".into(), ..Default::default() };
        assert!(create_run_file(dir.path(), &RunFile::new(&spec, 1.0)).unwrap());
        assert!(!create_run_file(dir.path(), &RunFile::new(&spec, 2.0)).unwrap());
        assert_eq!(read_run_file(dir.path()).unwrap().created_at, 1.0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    }
}
