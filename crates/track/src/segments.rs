//! Metric and eval tables on disk: Arrow IPC stream segments while a run writes,
//! Parquet after compaction, and the reader that merges the two.
//!
//! Layout inside a run folder:
//!
//! ```text
//! metrics/NNNNNN.arrows   metric points (step, wall_time, name, value), one stream per writer session
//! evals/NNNNNN.arrows     eval rows, same numbering
//! metrics.parquet         run_id + the metric columns, after compaction
//! evals.parquet           run_id + the eval columns, after compaction
//! ```
//!
//! Each Parquet file records in its key-value metadata (`ditbench.segments_through`) the
//! highest segment number it contains. Segments at or below that number are already in
//! the Parquet file and are ignored (and deleted by the next compaction), so a crash at
//! any point of a compaction never loses or duplicates rows.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{sync_dir, temp_sibling};
use crate::types::{EvalRow, MetricPoint, Source, Summary};

/// Segment file extension.
pub const SEGMENT_EXT: &str = "arrows";
/// Key-value metadata key in Parquet files: highest segment number included.
pub const COVERED_KEY: &str = "ditbench.segments_through";
/// Suffix given to a segment whose content is damaged (not merely truncated); it is
/// kept beside the others for inspection and never read again.
pub const QUARANTINE_SUFFIX: &str = "corrupt";

/// The two tables of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// metrics/ and metrics.parquet.
    Metrics,
    /// evals/ and evals.parquet.
    Evals,
}

impl Table {
    /// Both tables.
    pub const ALL: [Table; 2] = [Table::Metrics, Table::Evals];

    /// "metrics" or "evals".
    pub fn name(self) -> &'static str {
        match self {
            Table::Metrics => "metrics",
            Table::Evals => "evals",
        }
    }

    /// The segment folder of this table in a run folder.
    pub fn segment_dir(self, run_dir: &Path) -> PathBuf {
        run_dir.join(self.name())
    }

    /// The Parquet file of this table in a run folder.
    pub fn parquet_path(self, run_dir: &Path) -> PathBuf {
        run_dir.join(format!("{}.parquet", self.name()))
    }

    /// Schema of a segment (no run_id column; the folder names the run).
    pub fn segment_schema(self) -> SchemaRef {
        let mut fields = match self {
            Table::Metrics => vec![
                Field::new("step", DataType::Int64, false),
                Field::new("wall_time", DataType::Float64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("value", DataType::Float64, false),
            ],
            Table::Evals => vec![
                Field::new("step", DataType::Int64, false),
                Field::new("wall_time", DataType::Float64, false),
                Field::new("metric", DataType::Utf8, false),
                Field::new("value", DataType::Float64, false),
                Field::new("num_samples", DataType::Int64, false),
                Field::new("cfg_scale", DataType::Float64, false),
                Field::new("sampler", DataType::Utf8, false),
                Field::new("sampling_steps", DataType::Int64, false),
                Field::new("extractor", DataType::Utf8, false),
            ],
        };
        // The attempt that wrote the row: a resume supersedes earlier attempts' rows
        // past its checkpoint (folder::live_through). Null in rows written before
        // attempts were recorded.
        fields.push(Field::new("attempt", DataType::Int64, true));
        if self == Table::Evals {
            // The rest of an eval row's fingerprint (crate::Fingerprint). Null in rows
            // written before they were recorded.
            for name in EVAL_FINGERPRINT_COLUMNS {
                fields.push(Field::new(name, DataType::Utf8, true));
            }
        }
        let meta = HashMap::from([("ditbench.table".to_string(), self.name().to_string())]);
        fields.shrink_to_fit();
        Arc::new(Schema::new_with_metadata(fields, meta))
    }

    /// Schema of the Parquet file: `run_id` then the segment columns.
    pub fn parquet_schema(self) -> SchemaRef {
        let seg = self.segment_schema();
        let mut fields = vec![Field::new("run_id", DataType::Utf8, false)];
        fields.extend(seg.fields().iter().map(|f| f.as_ref().clone()));
        Arc::new(Schema::new(fields))
    }
}

/// The nullable text columns an eval row carries after `attempt`: the fields of its
/// [`crate::Fingerprint`] that the first eval tables did not have.
pub const EVAL_FINGERPRINT_COLUMNS: [&str; 6] =
    ["extractor_hash", "reference_hash", "cfg_mode", "weights", "vae", "precision"];

/// Path of segment `n` of a table.
pub fn segment_path(run_dir: &Path, table: Table, n: u64) -> PathBuf {
    table
        .segment_dir(run_dir)
        .join(format!("{n:06}.{SEGMENT_EXT}"))
}

/// A segment file found in a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its number.
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
    /// True for a quarantined (`.corrupt`) segment, which is never read.
    pub quarantined: bool,
}

/// Lists the segments of a table, sorted by number (quarantined ones included).
pub fn list_segments(run_dir: &Path, table: Table) -> Result<Vec<SegmentFile>> {
    let dir = table.segment_dir(run_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                op: "list segments",
                path: dir,
                source: e,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.ctx("list segments", &dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (stem, quarantined) =
            if let Some(s) = name.strip_suffix(&format!(".{SEGMENT_EXT}.{QUARANTINE_SUFFIX}")) {
                (s, true)
            } else if let Some(s) = name.strip_suffix(&format!(".{SEGMENT_EXT}")) {
                (s, false)
            } else {
                continue;
            };
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(number) = stem.parse() else { continue };
        out.push(SegmentFile {
            number,
            path: entry.path(),
            quarantined,
        });
    }
    out.sort_by_key(|s| (s.number, s.quarantined));
    Ok(out)
}

/// True when the run folder holds any live (non-quarantined) segment.
pub fn has_segments(run_dir: &Path) -> Result<bool> {
    for t in Table::ALL {
        if list_segments(run_dir, t)?.iter().any(|s| !s.quarantined) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a segment ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentState {
    /// Every byte belongs to a complete message.
    Complete,
    /// The file ends inside a message (a writer was killed mid-write, or is writing
    /// now): the complete messages before it were read.
    Truncated {
        /// Bytes of complete messages.
        valid_bytes: u64,
        /// File size.
        total_bytes: u64,
    },
    /// The content is damaged; the batches before the damage were read.
    Corrupt(String),
}

/// The readable content of one segment.
#[derive(Debug)]
pub struct SegmentContent {
    /// Complete record batches, in order.
    pub batches: Vec<RecordBatch>,
    /// How the file ended.
    pub state: SegmentState,
}

const CONTINUATION: u32 = 0xFFFF_FFFF;
const MAX_META: usize = 16 << 20;

/// Finds the end of the last complete IPC message, without decoding the data.
/// Returns (valid bytes, Ok(()) for complete/truncated or Err(reason) when damaged,
/// truncated flag).
fn frame_scan(bytes: &[u8]) -> (usize, bool, Option<String>) {
    let mut o = 0usize;
    let len = bytes.len();
    loop {
        if o == len {
            return (o, false, None);
        }
        if len - o < 4 {
            return (o, true, None);
        }
        let word = u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let (meta_len, head) = if word == CONTINUATION {
            if len - o < 8 {
                return (o, true, None);
            }
            (
                i32::from_le_bytes([bytes[o + 4], bytes[o + 5], bytes[o + 6], bytes[o + 7]]),
                8,
            )
        } else {
            (word as i32, 4)
        };
        if meta_len == 0 {
            // End-of-stream marker.
            return (o + head, false, None);
        }
        if meta_len < 0 || meta_len as usize > MAX_META {
            return (
                o,
                false,
                Some(format!("invalid message length {meta_len} at byte {o}")),
            );
        }
        let meta_start = o + head;
        let meta_end = meta_start + meta_len as usize;
        if meta_end > len {
            return (o, true, None);
        }
        let msg = match arrow::ipc::root_as_message(&bytes[meta_start..meta_end]) {
            Ok(m) => m,
            Err(e) => {
                return (
                    o,
                    false,
                    Some(format!("unreadable message header at byte {o}: {e}")),
                )
            }
        };
        let body = msg.bodyLength();
        if body < 0 {
            return (o, false, Some(format!("negative body length at byte {o}")));
        }
        let end = match meta_end.checked_add(body as usize) {
            Some(e) => e,
            None => return (o, false, Some(format!("body length overflow at byte {o}"))),
        };
        if end > len {
            return (o, true, None);
        }
        o = end;
    }
}

/// Reads a segment: every complete batch, and how the file ended. Fails only when
/// the file cannot be read at all (I/O error, e.g. permissions).
pub fn read_segment(path: &Path, table: Table) -> Result<SegmentContent> {
    let bytes = std::fs::read(path).ctx("read segment", path)?;
    let (valid, truncated, damage) = frame_scan(&bytes);
    let mut batches = Vec::new();
    let mut state = match (&damage, truncated) {
        (Some(d), _) => SegmentState::Corrupt(d.clone()),
        (None, true) => SegmentState::Truncated {
            valid_bytes: valid as u64,
            total_bytes: bytes.len() as u64,
        },
        (None, false) => SegmentState::Complete,
    };
    if valid == 0 {
        if bytes.is_empty() {
            state = SegmentState::Truncated {
                valid_bytes: 0,
                total_bytes: 0,
            };
        }
        return Ok(SegmentContent { batches, state });
    }
    let expected = table.segment_schema();
    match StreamReader::try_new(Cursor::new(&bytes[..valid]), None) {
        Ok(reader) => {
            if !known_columns(&reader.schema(), &expected) {
                return Ok(SegmentContent {
                    batches,
                    state: SegmentState::Corrupt(format!(
                        "schema {:?} is not the {} segment schema",
                        column_names(&reader.schema()),
                        table.name()
                    )),
                });
            }
            for b in reader {
                match b.map_err(Error::from).and_then(|b| conform(&b, expected.clone())) {
                    Ok(b) => batches.push(b),
                    Err(e) => {
                        state = SegmentState::Corrupt(format!("undecodable batch: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => state = SegmentState::Corrupt(format!("unreadable schema: {e}")),
    }
    Ok(SegmentContent { batches, state })
}

fn column_names(s: &Schema) -> Vec<String> {
    s.fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect()
}

/// Column-wise metric points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricColumns {
    /// Steps.
    pub step: Vec<i64>,
    /// Wall times (Unix seconds).
    pub wall_time: Vec<f64>,
    /// Metric names.
    pub name: Vec<String>,
    /// Values.
    pub value: Vec<f64>,
    /// Attempt that wrote each row (`None` before attempts were recorded).
    pub attempt: Vec<Option<i64>>,
}

impl MetricColumns {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.step.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }
    /// Row `i` as a point.
    pub fn point(&self, i: usize) -> MetricPoint {
        MetricPoint {
            step: self.step[i],
            wall_time: self.wall_time[i],
            name: self.name[i].clone(),
            value: self.value[i],
        }
    }
    /// All rows as points.
    pub fn points(&self) -> Vec<MetricPoint> {
        (0..self.len()).map(|i| self.point(i)).collect()
    }
    fn extend_from(&mut self, b: &RecordBatch) -> Result<()> {
        let step = col_i64(b, "step")?;
        let wall = col_f64(b, "wall_time")?;
        let name = col_str(b, "name")?;
        let value = col_f64(b, "value")?;
        let attempt = col_attempt(b)?;
        for i in 0..b.num_rows() {
            self.step.push(step.value(i));
            self.wall_time.push(wall.value(i));
            self.name.push(name.value(i).to_string());
            self.value.push(value.value(i));
            self.attempt.push(attempt.and_then(|a| a.is_valid(i).then(|| a.value(i))));
        }
        Ok(())
    }
}

/// Column-wise eval rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalColumns {
    /// Steps.
    pub step: Vec<i64>,
    /// Wall times.
    pub wall_time: Vec<f64>,
    /// Metric names.
    pub metric: Vec<String>,
    /// Values.
    pub value: Vec<f64>,
    /// Number of samples.
    pub num_samples: Vec<i64>,
    /// CFG scales.
    pub cfg_scale: Vec<f64>,
    /// Samplers.
    pub sampler: Vec<String>,
    /// Sampling steps.
    pub sampling_steps: Vec<i64>,
    /// Feature extractors.
    pub extractor: Vec<String>,
    /// Attempt that wrote each row (`None` before attempts were recorded).
    pub attempt: Vec<Option<i64>>,
    /// Hashes of the feature network's weights (`None`: not recorded).
    pub extractor_hash: Vec<Option<String>>,
    /// Hashes of the reference statistics.
    pub reference_hash: Vec<Option<String>>,
    /// Guidance modes ("paper", "all").
    pub cfg_mode: Vec<Option<String>>,
    /// Weights sampled ("ema", "raw").
    pub weights: Vec<Option<String>>,
    /// VAEs ("none" in pixel space).
    pub vae: Vec<Option<String>>,
    /// Sampling precisions ("fp32", "bf16").
    pub precision: Vec<Option<String>>,
}

impl EvalColumns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.step.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> EvalRow {
        EvalRow {
            step: self.step[i],
            wall_time: self.wall_time[i],
            metric: self.metric[i].clone(),
            value: self.value[i],
            num_samples: self.num_samples[i],
            cfg_scale: self.cfg_scale[i],
            sampler: self.sampler[i].clone(),
            sampling_steps: self.sampling_steps[i],
            extractor: self.extractor[i].clone(),
            extractor_hash: self.extractor_hash[i].clone(),
            reference_hash: self.reference_hash[i].clone(),
            cfg_mode: self.cfg_mode[i].clone(),
            weights: self.weights[i].clone(),
            vae: self.vae[i].clone(),
            precision: self.precision[i].clone(),
        }
    }
    /// All rows.
    pub fn rows(&self) -> Vec<EvalRow> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }
    fn extend_from(&mut self, b: &RecordBatch) -> Result<()> {
        let step = col_i64(b, "step")?;
        let wall = col_f64(b, "wall_time")?;
        let metric = col_str(b, "metric")?;
        let value = col_f64(b, "value")?;
        let ns = col_i64(b, "num_samples")?;
        let cfg = col_f64(b, "cfg_scale")?;
        let sampler = col_str(b, "sampler")?;
        let ss = col_i64(b, "sampling_steps")?;
        let ex = col_str(b, "extractor")?;
        let attempt = col_attempt(b)?;
        let fp = EVAL_FINGERPRINT_COLUMNS
            .iter()
            .map(|n| col_opt_str(b, n))
            .collect::<Result<Vec<_>>>()?;
        let opt = |c: Option<&StringArray>, i: usize| c.and_then(|c| c.is_valid(i).then(|| c.value(i).to_string()));
        for i in 0..b.num_rows() {
            self.attempt.push(attempt.and_then(|a| a.is_valid(i).then(|| a.value(i))));
            self.step.push(step.value(i));
            self.wall_time.push(wall.value(i));
            self.metric.push(metric.value(i).to_string());
            self.value.push(value.value(i));
            self.num_samples.push(ns.value(i));
            self.cfg_scale.push(cfg.value(i));
            self.sampler.push(sampler.value(i).to_string());
            self.sampling_steps.push(ss.value(i));
            self.extractor.push(ex.value(i).to_string());
            self.extractor_hash.push(opt(fp[0], i));
            self.reference_hash.push(opt(fp[1], i));
            self.cfg_mode.push(opt(fp[2], i));
            self.weights.push(opt(fp[3], i));
            self.vae.push(opt(fp[4], i));
            self.precision.push(opt(fp[5], i));
        }
        Ok(())
    }
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    let c = b.column_by_name(name).ok_or_else(|| Error::Corrupt {
        path: PathBuf::new(),
        reason: format!("batch has no column {name:?}"),
    })?;
    if c.null_count() > 0 {
        return Err(Error::Corrupt {
            path: PathBuf::new(),
            reason: format!("column {name:?} has nulls"),
        });
    }
    c.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Corrupt {
            path: PathBuf::new(),
            reason: format!("column {name:?} has type {}", c.data_type()),
        })
}
fn col_i64<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(b, name)
}
fn col_f64<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    column(b, name)
}
fn col_str<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(b, name)
}
/// A nullable text column, absent in files written before it existed.
fn col_opt_str<'a>(b: &'a RecordBatch, name: &str) -> Result<Option<&'a StringArray>> {
    match b.column_by_name(name) {
        None => Ok(None),
        Some(c) => c.as_any().downcast_ref::<StringArray>().map(Some).ok_or_else(|| Error::Corrupt {
            path: PathBuf::new(),
            reason: format!("column {name:?} has type {}", c.data_type()),
        }),
    }
}
fn col_attempt(b: &RecordBatch) -> Result<Option<&Int64Array>> {
    match b.column_by_name("attempt") {
        None => Ok(None),
        Some(c) => c.as_any().downcast_ref::<Int64Array>().map(Some).ok_or_else(|| Error::Corrupt {
            path: PathBuf::new(),
            reason: format!("column \"attempt\" has type {}", c.data_type()),
        }),
    }
}

/// Whether a file's columns are `expected`'s or an older version of them: every
/// column after the required ones is nullable and was added at the end (first
/// `attempt`, then the eval fingerprint columns), so a file written before a column
/// existed holds a prefix of today's columns that includes every required one. Such
/// files are read with nulls in the missing columns ([`conform`]).
fn known_columns(found: &Schema, expected: &Schema) -> bool {
    let required = expected.fields().iter().take_while(|f| !f.is_nullable()).count();
    let n = found.fields().len();
    (required..=expected.fields().len()).contains(&n)
        && found
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Takes `b`'s columns in `schema`'s order, filling a missing nullable column
/// (`attempt` and the fingerprint columns in older files) with nulls.
fn conform(b: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match b.column_by_name(f.name()) {
            Some(c) => Ok(c.clone()),
            None if f.is_nullable() => Ok(arrow::array::new_null_array(f.data_type(), b.num_rows())),
            None => Err(Error::Corrupt { path: PathBuf::new(), reason: format!("missing column {}", f.name()) }),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Corrupt { reason, .. } => Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        e => e,
    }
}

/// A compacted table file read back: its batches and the segments it covers.
struct ParquetContent {
    batches: Vec<RecordBatch>,
    covered: u64,
}

fn read_parquet(path: &Path, table: Table) -> Result<Option<ParquetContent>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                op: "open",
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let pq = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let covered = covered_of(builder.metadata().file_metadata().key_value_metadata());
    let expected = table.parquet_schema();
    if !known_columns(builder.schema(), &expected) {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "columns {:?} are not the {} table's",
                column_names(builder.schema()),
                table.name()
            ),
        });
    }
    let reader = builder.with_batch_size(64 * 1024).build().map_err(pq)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    }
    Ok(Some(ParquetContent { batches, covered }))
}

fn covered_of(kv: Option<&Vec<KeyValue>>) -> u64 {
    kv.and_then(|kv| kv.iter().find(|k| k.key == COVERED_KEY))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest segment number already inside a table's Parquet file (0 if none).
pub fn parquet_covered(run_dir: &Path, table: Table) -> Result<u64> {
    let path = table.parquet_path(run_dir);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::Io {
                op: "open",
                path,
                source: e,
            })
        }
    };
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new(file).map_err(|source| {
            Error::Parquet {
                path: path.clone(),
                source,
            }
        })?;
    use parquet::file::reader::FileReader;
    Ok(covered_of(
        reader.metadata().file_metadata().key_value_metadata(),
    ))
}

/// Everything a run's folder holds for one table, read without modifying anything.
#[derive(Debug)]
struct TableRead {
    /// Batches in segment schema (no run_id), in write order.
    batches: Vec<RecordBatch>,
    /// Highest segment number seen (covered or read), including quarantined ones.
    max_number: u64,
    /// Live segments that were read (their numbers and states).
    segments: Vec<(SegmentFile, SegmentState)>,
    /// Segments at or below the Parquet file's coverage (already compacted).
    stale: Vec<SegmentFile>,
    /// True when at least one live segment above the coverage exists.
    pending: bool,
}

fn strip_run_id(b: &RecordBatch, table: Table) -> Result<RecordBatch> {
    conform(b, table.segment_schema())
}

fn read_table(run_dir: &Path, table: Table) -> Result<TableRead> {
    // List segments before reading the Parquet file: a compaction that runs meanwhile
    // renames a Parquet file covering them before it deletes them (see read_run).
    let segs = list_segments(run_dir, table)?;
    let pq_path = table.parquet_path(run_dir);
    let pq = read_parquet(&pq_path, table)?;
    let covered = pq.as_ref().map(|p| p.covered).unwrap_or(0);
    let mut batches = Vec::new();
    if let Some(pq) = pq {
        for b in &pq.batches {
            batches.push(strip_run_id(b, table).map_err(|e| with_path(e, &pq_path))?);
        }
    }
    let mut max_number = covered;
    let mut segments = Vec::new();
    let mut stale = Vec::new();
    let mut pending = false;
    for s in segs {
        max_number = max_number.max(s.number);
        if s.quarantined {
            continue;
        }
        if s.number <= covered {
            stale.push(s);
            continue;
        }
        pending = true;
        let content = read_segment(&s.path, table)?;
        batches.extend(content.batches);
        segments.push((s, content.state));
    }
    Ok(TableRead {
        batches,
        max_number,
        segments,
        stale,
        pending,
    })
}

/// A run's metric and eval tables, merged from Parquet and pending segments.
#[derive(Debug, Default)]
pub struct RunData {
    /// Metric points in write order.
    pub metrics: MetricColumns,
    /// Eval rows in write order.
    pub evals: EvalColumns,
    /// Segments that were truncated or damaged (the readable prefix is included).
    pub warnings: Vec<String>,
    /// True when some rows came from segments not yet compacted.
    pub pending: bool,
}

fn describe(s: &SegmentFile, state: &SegmentState) -> Option<String> {
    match state {
        SegmentState::Complete => None,
        SegmentState::Truncated { valid_bytes, total_bytes } => Some(format!(
            "segment {} is truncated ({valid_bytes} of {total_bytes} bytes readable); its readable prefix is kept",
            s.path.display()
        )),
        SegmentState::Corrupt(r) => Some(format!(
            "segment {} is damaged ({r}); the batches before the damage are kept",
            s.path.display()
        )),
    }
}

impl RunData {
    /// The live history (see [`crate::folder::live_through`]): the rows no later
    /// attempt superseded, in write order.
    pub fn live(&self, bounds: &std::collections::BTreeMap<i64, i64>) -> RunData {
        let keep = |attempt: &[Option<i64>], step: &[i64]| -> Vec<bool> {
            attempt.iter().zip(step).map(|(a, s)| crate::folder::is_live(bounds, *a, *s)).collect()
        };
        fn pick<T: Clone>(v: &[T], k: &[bool]) -> Vec<T> {
            v.iter().zip(k).filter(|(_, k)| **k).map(|(x, _)| x.clone()).collect()
        }
        let (m, e) = (&self.metrics, &self.evals);
        let km = keep(&m.attempt, &m.step);
        let ke = keep(&e.attempt, &e.step);
        RunData {
            metrics: MetricColumns {
                step: pick(&m.step, &km),
                wall_time: pick(&m.wall_time, &km),
                name: pick(&m.name, &km),
                value: pick(&m.value, &km),
                attempt: pick(&m.attempt, &km),
            },
            evals: EvalColumns {
                step: pick(&e.step, &ke),
                wall_time: pick(&e.wall_time, &ke),
                metric: pick(&e.metric, &ke),
                value: pick(&e.value, &ke),
                num_samples: pick(&e.num_samples, &ke),
                cfg_scale: pick(&e.cfg_scale, &ke),
                sampler: pick(&e.sampler, &ke),
                sampling_steps: pick(&e.sampling_steps, &ke),
                extractor: pick(&e.extractor, &ke),
                attempt: pick(&e.attempt, &ke),
                extractor_hash: pick(&e.extractor_hash, &ke),
                reference_hash: pick(&e.reference_hash, &ke),
                cfg_mode: pick(&e.cfg_mode, &ke),
                weights: pick(&e.weights, &ke),
                vae: pick(&e.vae, &ke),
                precision: pick(&e.precision, &ke),
            },
            warnings: self.warnings.clone(),
            pending: self.pending,
        }
    }
}

/// Reads a run's tables from its folder without changing anything: the Parquet files
/// plus every segment they do not cover yet (a truncated tail contributes its complete
/// batches). Safe to call while the run is being written or compacted.
pub fn read_run(run_dir: &Path) -> Result<RunData> {
    let mut last_err = None;
    for _ in 0..5 {
        match read_run_once(run_dir) {
            Ok(d) => return Ok(d),
            // A segment vanished between listing and reading: a compaction finished
            // meanwhile. Read again.
            Err(Error::Io { source, path, op })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                last_err = Some(Error::Io { source, path, op });
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Corrupt {
        path: run_dir.to_path_buf(),
        reason: "unstable".into(),
    }))
}

fn read_run_once(run_dir: &Path) -> Result<RunData> {
    let mut data = RunData::default();
    let m = read_table(run_dir, Table::Metrics)?;
    let e = read_table(run_dir, Table::Evals)?;
    for b in &m.batches {
        data.metrics.extend_from(b)?;
    }
    for b in &e.batches {
        data.evals.extend_from(b)?;
    }
    for (s, st) in m.segments.iter().chain(e.segments.iter()) {
        if let Some(w) = describe(s, st) {
            data.warnings.push(w);
        }
    }
    data.pending = m.pending || e.pending;
    Ok(data)
}

/// What a compaction did.
#[derive(Debug, Default)]
pub struct CompactReport {
    /// The run's tables after compaction.
    pub data: RunData,
    /// Segments merged into Parquet.
    pub merged_segments: usize,
    /// Segments that were damaged and renamed `*.arrows.corrupt`.
    pub quarantined: Vec<PathBuf>,
    /// Highest segment number seen in either table (the next writer session uses more).
    pub max_segment: u64,
}

/// Writes the table to a temporary sibling of `path` and fsyncs it; returns the temporary path.
fn write_parquet_tmp(
    path: &Path,
    table: Table,
    run_id: &str,
    batches: &[RecordBatch],
    covered: u64,
) -> Result<PathBuf> {
    let tmp = temp_sibling(path);
    let pq = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let schema = table.parquet_schema();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            COVERED_KEY.to_string(),
            covered.to_string(),
        )]));
    // Dictionaries pay off for the repeated strings (run id, metric name, sampler) and
    // not for steps, times and values, which are nearly all distinct: hashing every one
    // of them into a dictionary that is then abandoned was a fifth of compaction.
    for f in schema.fields() {
        if f.data_type() != &DataType::Utf8 {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
    }
    let props = props.build();
    let written = (|| {
        let file = File::create(&tmp).ctx("create", &tmp)?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq)?;
        for b in batches {
            let rid: ArrayRef = Arc::new(StringArray::from(vec![run_id; b.num_rows()]));
            let mut cols = vec![rid];
            cols.extend(b.columns().iter().cloned());
            let out = RecordBatch::try_new(schema.clone(), cols)?;
            w.write(&out).map_err(pq)?;
        }
        let file = w.into_inner().map_err(pq)?;
        file.sync_all().ctx("sync", &tmp)
    })();
    if let Err(e) = written {
        // A full disk or a quota: leave nothing behind (the segments still hold the rows).
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Compacts a run folder: merges every pending segment of each table into its Parquet
/// file (written to a temporary file, fsynced, renamed over the old one), then deletes
/// the merged segments; damaged segments are renamed `*.arrows.corrupt` instead.
/// The caller must hold the run's lease.
pub fn compact(run_dir: &Path, run_id: &str) -> Result<CompactReport> {
    let mut report = CompactReport::default();
    // 0. Temporary files of a compaction that was killed (we hold the lease: no live
    //    writer owns them).
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if Table::ALL
                .iter()
                .any(|t| name.starts_with(&format!(".{}.parquet.tmp-", t.name())))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // 1. Read both tables and write each changed one to a fsynced temporary file.
    let mut reads = Vec::new();
    let mut renames = Vec::new();
    for table in Table::ALL {
        let read = read_table(run_dir, table)?;
        report.max_segment = report.max_segment.max(read.max_number);
        if read.pending {
            let covered = read
                .segments
                .iter()
                .map(|(s, _)| s.number)
                .max()
                .unwrap_or(0);
            let path = table.parquet_path(run_dir);
            let tmp = match write_parquet_tmp(&path, table, run_id, &read.batches, covered) {
                Ok(t) => t,
                Err(e) => {
                    // The other table's temporary goes too: nothing half-done stays.
                    for (t, _) in &renames {
                        let _ = std::fs::remove_file(t);
                    }
                    return Err(e);
                }
            };
            renames.push((tmp, path));
            report.merged_segments += read.segments.len();
        }
        reads.push((table, read));
    }
    // 2. Rename them into place and make the renames durable (one directory fsync).
    for (tmp, path) in &renames {
        std::fs::rename(tmp, path).ctx("rename into place", path)?;
    }
    if !renames.is_empty() {
        sync_dir(run_dir)?;
    }
    // 3. The Parquet files now cover every segment read: retire those. Nothing here
    //    needs to be durable: a segment that reappears after a power loss is at or
    //    below its Parquet file's coverage, so it is ignored and retired again.
    for (table, read) in reads {
        let seg_dir = table.segment_dir(run_dir);
        for (s, state) in &read.segments {
            if let Some(w) = describe(s, state) {
                report.data.warnings.push(w);
            }
            let corrupt = matches!(state, SegmentState::Corrupt(_));
            retire(s, corrupt, &mut report)?;
        }
        for s in &read.stale {
            // Already inside the Parquet file (an earlier compaction stopped before
            // retiring it). A damaged one is still quarantined rather than deleted.
            let corrupt = matches!(
                read_segment(&s.path, table)?.state,
                SegmentState::Corrupt(_)
            );
            retire(s, corrupt, &mut report)?;
        }
        // An empty segment folder is removed, so that readers can tell a compacted run
        // by the folder's absence (the writer recreates it for its first segment).
        if seg_dir.is_dir() {
            let _ = std::fs::remove_dir(&seg_dir);
        }
        match table {
            Table::Metrics => {
                for b in &read.batches {
                    report.data.metrics.extend_from(b)?;
                }
            }
            Table::Evals => {
                for b in &read.batches {
                    report.data.evals.extend_from(b)?;
                }
            }
        }
    }
    Ok(report)
}

/// Deletes a compacted segment, or renames a damaged one `*.arrows.corrupt`.
fn retire(s: &SegmentFile, corrupt: bool, report: &mut CompactReport) -> Result<()> {
    if corrupt {
        let q = s
            .path
            .with_extension(format!("{SEGMENT_EXT}.{QUARANTINE_SUFFIX}"));
        std::fs::rename(&s.path, &q).ctx("quarantine segment", &s.path)?;
        report.quarantined.push(q);
    } else {
        std::fs::remove_file(&s.path).ctx("remove compacted segment", &s.path)?;
    }
    Ok(())
}

/// Per-metric summaries of a run's tables (see [`Summary`]).
pub fn summarize(run_id: &str, data: &RunData) -> Vec<Summary> {
    let mut out = Vec::new();
    let mut add = |source: Source, names: &[String], steps: &[i64], values: &[f64]| {
        let mut idx: HashMap<&str, usize> = HashMap::new();
        let mut acc: Vec<Summary> = Vec::new();
        for i in 0..names.len() {
            let (step, v) = (steps[i], values[i]);
            let k = *idx.entry(names[i].as_str()).or_insert_with(|| {
                acc.push(Summary {
                    run_id: run_id.to_string(),
                    metric: names[i].clone(),
                    source,
                    last: v,
                    last_step: step,
                    min: f64::NAN,
                    min_step: step,
                    max: f64::NAN,
                    max_step: step,
                    count: 0,
                });
                acc.len() - 1
            });
            let s = &mut acc[k];
            s.count += 1;
            if step >= s.last_step {
                s.last_step = step;
                s.last = v;
            }
            if !v.is_nan() {
                if s.min.is_nan() || v < s.min {
                    s.min = v;
                    s.min_step = step;
                }
                if s.max.is_nan() || v > s.max {
                    s.max = v;
                    s.max_step = step;
                }
            }
        }
        acc.sort_by(|a, b| a.metric.cmp(&b.metric));
        out.extend(acc);
    };
    add(
        Source::Metric,
        &data.metrics.name,
        &data.metrics.step,
        &data.metrics.value,
    );
    add(
        Source::Eval,
        &data.evals.metric,
        &data.evals.step,
        &data.evals.value,
    );
    out
}
