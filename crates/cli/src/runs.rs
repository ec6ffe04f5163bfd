//! `ditbench runs …`: the run store's query commands. Parsing and printing only; the
//! logic lives in `ditbench-query` (reading) and `ditbench-track` (the store).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ditbench_query::{format_table, write_output, OutputFormat, RunStore};

/// `ditbench runs`: query the run store (read-only).
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// The `runs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// Run one read-only Polars SQL query over the tables runs, params, params_wide,
    /// metrics, evals (the live history: one row per run, step and name after a resume),
    /// metrics_all, evals_all (every row, with its attempt), summaries, events, sweeps.
    ///
    /// SELECT, WITH … SELECT, UNION/INTERSECT/EXCEPT, VALUES and SHOW TABLES; anything
    /// else (DELETE, CREATE TABLE, …) and table functions such as read_parquet are refused.
    ///
    /// Example: ditbench runs query "SELECT r.model, r.patch, min(s.min) AS best_fid
    /// FROM summaries s JOIN runs r ON s.run_id = r.run_id WHERE s.metric = 'fid'
    /// GROUP BY r.model, r.patch ORDER BY best_fid"
    Query {
        /// The SQL statement.
        sql: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
    /// List runs with their status.
    List {
        #[command(flatten)]
        scope: Scope,
        /// Only runs with this status (queued, running, finished, failed, preempted, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// A SQL condition over the runs' columns and parameters, e.g. "patch = 2 AND lr > 0.0001" (Polars SQL does not parse 1e-4).
        #[arg(long = "where", value_name = "EXPR")]
        where_expr: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Show one run: registry fields, status history, parameters, summaries, last
    /// checkpoint and config.
    Show {
        /// The run id.
        id: String,
    },
    /// Compare runs side by side: one row per field, parameter and metric, one column per run.
    ///
    /// Quality numbers (evals) are shown side by side only when they were made alike
    /// (equal fingerprints: sample count, extractor and reference statistics, sampler,
    /// guidance, EMA or raw weights, VAE, precision); otherwise the command fails and
    /// names the fields that differ.
    Compare {
        /// Two or more run ids.
        #[arg(required = true, num_args = 2..)]
        ids: Vec<String>,
        /// Show evaluations made differently side by side anyway, with their
        /// fingerprints and the fields that differ.
        #[arg(long)]
        allow_mixed: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Export a whole table (runs, params, params_wide, metrics, evals, metrics_all, evals_all, summaries, events, sweeps).
    Export {
        /// The table.
        table: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
}

/// Which runs a command sees.
#[derive(clap::Args, Debug)]
pub struct Scope {
    /// Only the runs of this sweep.
    #[arg(long)]
    pub sweep: Option<String>,
}

/// Output format flags (at most one; the default is an aligned table).
#[derive(clap::Args, Debug)]
#[group(multiple = false)]
pub struct Output {
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
    /// Print a JSON array of row objects.
    #[arg(long)]
    pub json: bool,
    /// Write a Parquet file instead of printing.
    #[arg(long, value_name = "FILE")]
    pub parquet: Option<PathBuf>,
}

impl Output {
    fn format(&self) -> OutputFormat {
        if let Some(p) = &self.parquet {
            OutputFormat::Parquet(p.clone())
        } else if self.csv {
            OutputFormat::Csv
        } else if self.json {
            OutputFormat::Json
        } else {
            OutputFormat::Table
        }
    }
}

/// Runs a `runs` subcommand against the store at `store`, printing to stdout.
pub fn run(store: &Path, args: RunsArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(store, args, &mut out)
}

/// Like [`run`], writing to `out` (warnings go to stderr).
pub fn run_to(store: &Path, args: RunsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let open = |sweep: Option<&str>| {
        RunStore::open(store, sweep)
            .with_context(|| format!("opening run store {}", store.display()))
    };
    let rs;
    match args.command {
        RunsCommand::Query { sql, scope, output } => {
            rs = open(scope.sweep.as_deref())?;
            let mut df = rs.sql(&sql)?;
            emit(&mut df, &output, out)?;
        }
        RunsCommand::List {
            scope,
            status,
            where_expr,
            output,
        } => {
            rs = open(scope.sweep.as_deref())?;
            let mut df = rs.list(status.as_deref(), where_expr.as_deref())?;
            emit(&mut df, &output, out)?;
        }
        RunsCommand::Show { id } => {
            rs = open(None)?;
            let d = rs.show(&id)?;
            for (k, v) in &d.fields {
                if !v.is_empty() {
                    writeln!(out, "{k:<11} {v}")?;
                }
            }
            writeln!(out, "{:<11} {}", "folder", d.dir.display())?;
            let ckpt = d.last_checkpoint.as_ref().map(|p| p.display().to_string());
            writeln!(
                out,
                "{:<11} {}",
                "checkpoint",
                ckpt.as_deref().unwrap_or("(none)")
            )?;
            for n in &d.notes {
                writeln!(out, "note: {n}")?;
            }
            writeln!(out, "\nstatus history:\n{}", format_table(&d.events))?;
            if d.params.height() > 0 {
                writeln!(out, "params:\n{}", format_table(&d.params))?;
            }
            writeln!(out, "summaries:\n{}", format_table(&d.summaries))?;
            match &d.config {
                Some(c) => writeln!(out, "config.toml:\n{}", c.trim_end())?,
                None => writeln!(out, "config.toml: (none)")?,
            }
        }
        RunsCommand::Compare { ids, allow_mixed, output } => {
            rs = open(None)?;
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<String> = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
            if ids.len() < 2 {
                bail!("compare needs two different run ids");
            }
            let mut df = rs.compare(&ids, allow_mixed)?;
            emit(&mut df, &output, out)?;
        }
        RunsCommand::Export {
            table,
            scope,
            output,
        } => {
            rs = open(scope.sweep.as_deref())?;
            let mut df = rs.table(&table)?.collect().context("reading the table")?;
            emit(&mut df, &output, out)?;
        }
    }
    for w in rs.take_warnings() {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn emit(
    df: &mut ditbench_query::DataFrame,
    output: &Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let format = output.format();
    write_output(df, &format, out)?;
    if let OutputFormat::Parquet(p) = &format {
        eprintln!("wrote {} rows to {}", df.height(), p.display());
    }
    Ok(())
}
