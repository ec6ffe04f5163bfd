//! Rendering frames: aligned text table, CSV, JSON, Parquet.

use std::io::Write;
use std::path::PathBuf;

use polars::prelude::*;

use crate::{QueryError, Result};

/// Where and how to write a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned text table (the default).
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// A Parquet file at this path (nothing is printed).
    Parquet(PathBuf),
}

/// Formats a float the way the tables print it: integers without a fraction,
/// otherwise up to 6 significant decimals; very small or large values in exponent form.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        return format!("{v:.6e}");
    }
    if v.fract() == 0.0 {
        return format!("{v:.1}");
    }
    let digits = (6 - a.log10().floor() as i32 - 1).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map(|x| format!("{x}.0"))
        .unwrap_or_else(|| s.to_string())
}

fn cell(v: AnyValue<'_>) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(f) => fmt_f64(f),
        AnyValue::Float32(f) => fmt_f64(f.into()),
        other => other.to_string(),
    }
}

fn is_numeric(d: &DataType) -> bool {
    d.is_primitive_numeric()
}

/// An aligned plain-text table with a header and a rule; numbers right-aligned,
/// nulls empty, every row printed.
pub fn format_table(df: &DataFrame) -> String {
    let cols = df.columns();
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(cols.len());
    for c in cols {
        let s = c.as_materialized_series();
        let mut v = Vec::with_capacity(df.height() + 1);
        v.push(c.name().to_string());
        for i in 0..df.height() {
            v.push(s.get(i).map(cell).unwrap_or_default());
        }
        cells.push(v);
    }
    let widths: Vec<usize> = cells
        .iter()
        .map(|c| c.iter().map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let right: Vec<bool> = cols.iter().map(|c| is_numeric(c.dtype())).collect();
    let mut out = String::new();
    for row in 0..=df.height() {
        let mut line = String::new();
        for (j, c) in cells.iter().enumerate() {
            if j > 0 {
                line.push_str("  ");
            }
            let s = &c[row];
            let pad = widths[j] - s.chars().count();
            if right[j] && row > 0 {
                line.push_str(&" ".repeat(pad));
                line.push_str(s);
            } else {
                line.push_str(s);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if row == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    if df.height() == 0 {
        out.push_str("(no rows)\n");
    }
    out
}

/// Writes `df` in `format`: text, CSV and JSON to `out`, Parquet to its file (written
/// to a temporary sibling and renamed, so a failed write leaves no partial file).
pub fn write_output(df: &mut DataFrame, format: &OutputFormat, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| QueryError::Io {
        op: "write",
        path: PathBuf::from("<stdout>"),
        source: e,
    };
    match format {
        OutputFormat::Table => out.write_all(format_table(df).as_bytes()).map_err(io)?,
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            CsvWriter::new(&mut buf).include_header(true).finish(df)?;
            out.write_all(&buf).map_err(io)?;
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            JsonWriter::new(&mut buf)
                .with_json_format(JsonFormat::Json)
                .finish(df)?;
            buf.push(b'\n');
            out.write_all(&buf).map_err(io)?;
        }
        OutputFormat::Parquet(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            let ioerr = |op, e| QueryError::Io {
                op,
                path: path.clone(),
                source: e,
            };
            let file = std::fs::File::create(&tmp).map_err(|e| ioerr("create", e))?;
            let res = ParquetWriter::new(file).finish(df);
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, path).map_err(|e| ioerr("rename", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fmt_f64;

    #[test]
    fn floats() {
        assert_eq!(fmt_f64(68.4), "68.4");
        assert_eq!(fmt_f64(2.0), "2.0");
        assert_eq!(fmt_f64(0.123456789), "0.123457");
        assert_eq!(fmt_f64(1e-7), "1.000000e-7");
        assert_eq!(fmt_f64(f64::NAN), "NaN");
        assert_eq!(fmt_f64(118.6), "118.6");
        assert_eq!(fmt_f64(-0.5), "-0.5");
    }
}
