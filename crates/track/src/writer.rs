//! The per-run metric writer.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::ipc::writer::StreamWriter;

use crate::error::{IoContext, Result};
use crate::fsutil::sync_dir;
use crate::ids::validate_metric_name;
use crate::segments::{compact, segment_path, summarize, CompactReport, RunData, Table};
use crate::store::Store;
use crate::types::{now, EvalRow, Summary};

/// A segment is closed and the next one started once it grows past this size.
pub const SEGMENT_ROTATE_BYTES: u64 = 64 << 20;

/// How far a [`MetricWriter::flush`] goes before it returns.
///
/// Either way a flushed row is never lost to a crash of the writing process (kill -9,
/// OOM, panic): the kernel holds it. The difference is a crash of the machine itself.
/// [`MetricWriter::sync`] and [`MetricWriter::close`] always make everything durable
/// against power loss, whatever the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `flush` hands the rows to the OS (one `write`); they reach the disk at the next
    /// `sync` (the trainer calls it with every checkpoint), at `close`, or when the
    /// kernel writes them back. A power loss can drop rows logged since the last sync,
    /// which are exactly the steps a resume from the last checkpoint recomputes. This is
    /// the rule SQLite's WAL with `synchronous=NORMAL` follows too.
    #[default]
    Process,
    /// `flush` also fsyncs: a power loss loses nothing flushed (≈ 0.3 ms per flush per
    /// table on this machine's disk).
    Machine,
}

struct Segment {
    writer: StreamWriter<BufWriter<File>>,
    path: PathBuf,
    bytes: u64,
}

impl Segment {
    fn create(run_dir: &Path, table: Table, number: u64, durability: Durability) -> Result<Segment> {
        let dir = table.segment_dir(run_dir);
        if !dir.is_dir() {
            // Both tables' folders at once, made durable by one fsync of the run folder.
            for t in Table::ALL {
                let d = t.segment_dir(run_dir);
                std::fs::create_dir_all(&d).ctx("create segment directory", &d)?;
            }
            if durability == Durability::Machine {
                sync_dir(run_dir)?;
            }
        }
        let path = segment_path(run_dir, table, number);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx("create segment", &path)?;
        let writer = StreamWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            &table.segment_schema(),
        )?;
        Ok(Segment {
            writer,
            path,
            bytes: 0,
        })
    }

    /// Appends a batch and pushes it to the OS; fsyncs the file for `Machine`.
    fn append(&mut self, batch: &RecordBatch, durability: Durability) -> Result<()> {
        self.writer.write(batch)?;
        let buf = self.writer.get_mut();
        buf.flush().ctx("write segment", &self.path)?;
        let file = buf.get_ref();
        if durability == Durability::Machine {
            file.sync_data().ctx("sync segment", &self.path)?;
        }
        self.bytes = file.metadata().map(|m| m.len()).unwrap_or(self.bytes);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.writer.get_ref().get_ref().sync_data().ctx("sync segment", &self.path)
    }
}

#[derive(Default)]
struct MetricBuffer {
    step: Int64Builder,
    wall_time: Float64Builder,
    name: StringBuilder,
    value: Float64Builder,
    attempt: Int64Builder,
    rows: usize,
}

impl MetricBuffer {
    fn finish(&mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.step.finish()),
            Arc::new(self.wall_time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.attempt.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(Table::Metrics.segment_schema(), cols)?)
    }
}

#[derive(Default)]
struct EvalBuffer {
    step: Int64Builder,
    wall_time: Float64Builder,
    metric: StringBuilder,
    value: Float64Builder,
    num_samples: Int64Builder,
    cfg_scale: Float64Builder,
    sampler: StringBuilder,
    sampling_steps: Int64Builder,
    extractor: StringBuilder,
    attempt: Int64Builder,
    /// segments::EVAL_FINGERPRINT_COLUMNS, in order.
    fingerprint: [StringBuilder; 6],
    rows: usize,
}

impl EvalBuffer {
    fn finish(&mut self) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.step.finish()),
            Arc::new(self.wall_time.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.num_samples.finish()),
            Arc::new(self.cfg_scale.finish()),
            Arc::new(self.sampler.finish()),
            Arc::new(self.sampling_steps.finish()),
            Arc::new(self.extractor.finish()),
            Arc::new(self.attempt.finish()),
        ];
        for f in &mut self.fingerprint {
            cols.push(Arc::new(f.finish()));
        }
        self.rows = 0;
        Ok(RecordBatch::try_new(Table::Evals.segment_schema(), cols)?)
    }
}

/// What [`MetricWriter::close`] did.
#[derive(Debug)]
pub struct CloseReport {
    /// Metric points in `metrics.parquet`.
    pub metric_rows: usize,
    /// Eval rows in `evals.parquet`.
    pub eval_rows: usize,
    /// The summaries written to `summaries.json` (of the live history).
    pub summaries: Vec<Summary>,
    /// Truncated or damaged segments met during compaction (readable prefixes kept).
    pub warnings: Vec<String>,
    /// Damaged segments renamed `*.arrows.corrupt`.
    pub quarantined: Vec<PathBuf>,
}

/// Appends a run's metric points and eval rows to Arrow IPC stream segments.
///
/// * [`log`](Self::log) / [`log_at`](Self::log_at) / [`log_eval`](Self::log_eval)
///   only buffer in memory;
/// * [`flush`](Self::flush) appends one record batch per table to the current segment:
///   when it returns, those rows survive a kill -9 (and a power loss too with
///   [`Durability::Machine`]; [`sync`](Self::sync) gives that guarantee on demand);
/// * [`close`](Self::close) flushes, compacts all segments into `metrics.parquet` /
///   `evals.parquet` and writes the run's summaries (`summaries.json`).
///
/// A writer runs under the run's lease ([`crate::Lease`]; no lock, no SQLite), stamps
/// every row with its attempt, and on opening compacts segments left by an earlier
/// writer, keeping the readable prefix of a truncated one. Each writer session writes new
/// segment files, never appending to old ones. Dropping a writer without `close`
/// flushes (best effort) but does not compact.
pub struct MetricWriter {
    store: Store,
    run_id: String,
    dir: PathBuf,
    attempt: i64,
    /// Held when the writer took the lease itself ([`Store::metric_writer`]).
    lease: Option<crate::lease::Lease>,
    next_number: u64,
    metrics_seg: Option<Segment>,
    evals_seg: Option<Segment>,
    mbuf: MetricBuffer,
    ebuf: EvalBuffer,
    flushed_metric_rows: u64,
    flushed_eval_rows: u64,
    recovered: Option<CompactReport>,
    durability: Durability,
}

impl std::fmt::Debug for MetricWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricWriter")
            .field("run_id", &self.run_id)
            .field("dir", &self.dir)
            .finish()
    }
}

impl MetricWriter {
    pub(crate) fn open(
        store: Store,
        dir: PathBuf,
        run_id: String,
        attempt: i64,
        lease: Option<crate::lease::Lease>,
    ) -> Result<MetricWriter> {
        std::fs::create_dir_all(&dir).ctx("create run directory", &dir)?;
        // Whatever an earlier (killed) writer left is compacted first, so that this
        // session starts from a clean folder and numbers its segments after the rest.
        let report = compact(&dir, &run_id)?;
        let recovered = if report.merged_segments > 0 || !report.quarantined.is_empty() {
            let summaries = summarize(&run_id, &live_history(&dir, &run_id, &report.data)?);
            store.replace_summaries(&run_id, &summaries)?;
            Some(report)
        } else {
            None
        };
        let next_number = recovered
            .as_ref()
            .map(|r| r.max_segment)
            .unwrap_or(0)
            .max(max_number(&dir)?)
            + 1;
        Ok(MetricWriter {
            store,
            run_id,
            dir,
            attempt,
            lease,
            next_number,
            metrics_seg: None,
            evals_seg: None,
            mbuf: MetricBuffer::default(),
            ebuf: EvalBuffer::default(),
            flushed_metric_rows: 0,
            flushed_eval_rows: 0,
            recovered,
            durability: Durability::default(),
        })
    }

    /// The attempt its rows are stamped with.
    pub fn attempt(&self) -> i64 {
        self.attempt
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    /// When opening found segments from an earlier, killed writer: what compacting them did.
    pub fn recovered(&self) -> Option<&CompactReport> {
        self.recovered.as_ref()
    }

    /// Buffers a metric point stamped with the current wall time.
    pub fn log(&mut self, step: i64, name: &str, value: f64) -> Result<()> {
        self.log_at(step, now(), name, value)
    }

    /// Buffers a metric point with an explicit wall time (Unix seconds).
    pub fn log_at(&mut self, step: i64, wall_time: f64, name: &str, value: f64) -> Result<()> {
        validate_metric_name(name)?;
        self.mbuf.step.append_value(step);
        self.mbuf.wall_time.append_value(wall_time);
        self.mbuf.name.append_value(name);
        self.mbuf.value.append_value(value);
        self.mbuf.attempt.append_value(self.attempt);
        self.mbuf.rows += 1;
        Ok(())
    }

    /// Buffers an eval row.
    pub fn log_eval(&mut self, row: &EvalRow) -> Result<()> {
        validate_metric_name(&row.metric)?;
        let b = &mut self.ebuf;
        b.step.append_value(row.step);
        b.wall_time.append_value(row.wall_time);
        b.metric.append_value(&row.metric);
        b.value.append_value(row.value);
        b.num_samples.append_value(row.num_samples);
        b.cfg_scale.append_value(row.cfg_scale);
        b.sampler.append_value(&row.sampler);
        b.sampling_steps.append_value(row.sampling_steps);
        b.extractor.append_value(&row.extractor);
        b.attempt.append_value(self.attempt);
        let fp = [&row.extractor_hash, &row.reference_hash, &row.cfg_mode, &row.weights, &row.vae, &row.precision];
        for (builder, v) in b.fingerprint.iter_mut().zip(fp) {
            builder.append_option(v.as_deref());
        }
        b.rows += 1;
        Ok(())
    }

    /// Rows buffered and not yet flushed (metrics + evals).
    pub fn buffered(&self) -> usize {
        self.mbuf.rows + self.ebuf.rows
    }

    /// Rows made durable so far by this writer (metrics, evals).
    pub fn flushed(&self) -> (u64, u64) {
        (self.flushed_metric_rows, self.flushed_eval_rows)
    }

    fn segment(&mut self, table: Table) -> Result<&mut Segment> {
        let slot = match table {
            Table::Metrics => &mut self.metrics_seg,
            Table::Evals => &mut self.evals_seg,
        };
        if slot
            .as_ref()
            .is_some_and(|s| s.bytes > SEGMENT_ROTATE_BYTES)
        {
            // A finished segment goes to disk now, so that `sync` only has the current
            // ones to care about.
            if let Some(old) = slot.take() {
                old.sync()?;
            }
        }
        if slot.is_none() {
            // A fresh number for each new segment; both tables share the sequence.
            let n = self.next_number;
            self.next_number += 1;
            let seg = Segment::create(&self.dir, table, n, self.durability)?;
            if self.durability == Durability::Machine {
                sync_dir(&table.segment_dir(&self.dir))?;
            }
            *slot = Some(seg);
        }
        Ok(slot.as_mut().expect("segment just created"))
    }

    /// Chooses what [`flush`](Self::flush) guarantees (default [`Durability::Process`]).
    pub fn with_durability(mut self, durability: Durability) -> MetricWriter {
        self.durability = durability;
        self
    }

    /// Writes all buffered rows to the current segments. When this returns `Ok`, every
    /// row logged so far survives a crash of this process, and with
    /// [`Durability::Machine`] a crash of the machine too.
    pub fn flush(&mut self) -> Result<()> {
        if self.mbuf.rows > 0 {
            let n = self.mbuf.rows as u64;
            let batch = self.mbuf.finish()?;
            let durability = self.durability;
            self.segment(Table::Metrics)?.append(&batch, durability)?;
            self.flushed_metric_rows += n;
        }
        if self.ebuf.rows > 0 {
            let n = self.ebuf.rows as u64;
            let batch = self.ebuf.finish()?;
            let durability = self.durability;
            self.segment(Table::Evals)?.append(&batch, durability)?;
            self.flushed_eval_rows += n;
        }
        Ok(())
    }

    /// Flushes and makes every row logged so far durable against power loss, whatever
    /// the [`Durability`]: the trainer calls it with each checkpoint, so the metrics on
    /// disk always reach at least the step the run would resume from.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        let mut synced_any = false;
        for (seg, table) in [(&self.metrics_seg, Table::Metrics), (&self.evals_seg, Table::Evals)] {
            if let Some(seg) = seg {
                seg.sync()?;
                sync_dir(&table.segment_dir(&self.dir))?;
                synced_any = true;
            }
        }
        if synced_any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Flushes, compacts the run's segments into Parquet and writes its summaries (of
    /// the live history). A lease the writer took itself is released afterwards.
    pub fn close(mut self) -> Result<CloseReport> {
        self.flush()?;
        for seg in [self.metrics_seg.take(), self.evals_seg.take()]
            .into_iter()
            .flatten()
        {
            // The end-of-stream marker is pushed to the OS but not fsynced: every row
            // was handed over by the flush above, readers accept a segment without the
            // marker, and compaction below durably rewrites the rows as Parquet.
            // (Two fsyncs fewer per run.)
            let mut w = seg.writer;
            w.finish()?;
            w.get_mut().flush().ctx("write segment", &seg.path)?;
        }
        let report = compact(&self.dir, &self.run_id)?;
        let summaries = summarize(&self.run_id, &live_history(&self.dir, &self.run_id, &report.data)?);
        self.store.replace_summaries(&self.run_id, &summaries)?;
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        Ok(CloseReport {
            metric_rows: report.data.metrics.len(),
            eval_rows: report.data.evals.len(),
            summaries,
            warnings: report.data.warnings,
            quarantined: report.quarantined,
        })
    }

    /// Reads the run's tables as they are on disk now (Parquet + flushed segments).
    pub fn read_back(&self) -> Result<RunData> {
        crate::segments::read_run(&self.dir)
    }
}

impl Drop for MetricWriter {
    fn drop(&mut self) {
        if self.buffered() > 0 {
            let _ = self.flush();
        }
    }
}

/// The rows of `data` no later attempt superseded, per the run's event log.
fn live_history(dir: &Path, run_id: &str, data: &RunData) -> Result<RunData> {
    let (events, _) = crate::folder::read_events(dir, run_id)?;
    Ok(data.live(&crate::folder::live_through(&events)))
}

fn max_number(dir: &Path) -> Result<u64> {
    let mut m = 0;
    for t in Table::ALL {
        for s in crate::segments::list_segments(dir, t)? {
            m = m.max(s.number);
        }
        m = m.max(crate::segments::parquet_covered(dir, t)?);
    }
    Ok(m)
}
