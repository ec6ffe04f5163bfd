//! The report pages: `report.html` (self-contained, no scripts) and `report.md`.
//! Every string that comes from the store is escaped where it is written.

use std::fmt::Write as _;

use crate::build::{metric_label, FitOutcome, Summary};
use crate::data::SweepData;
use crate::plot::Figure;
use crate::ReportOptions;

/// A run's last sample grid.
pub(crate) struct SampleGrid {
    pub run_id: String,
    pub model: Option<String>,
    pub step: i64,
    /// Path relative to the report folder.
    pub file: String,
    pub png: Vec<u8>,
}

pub(crate) struct Page<'a> {
    pub data: &'a SweepData,
    pub summary: &'a Summary,
    pub figures: &'a [Figure],
    pub svgs: &'a [String],
    pub samples: &'a [SampleGrid],
    pub opts: &'a ReportOptions,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell (also safe where Markdown allows HTML).
pub fn escape_md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648) for data URIs.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A number for tables: 4 significant digits, "missing" for none.
fn num(v: Option<f64>) -> String {
    match v {
        None => "missing".into(),
        Some(v) if !v.is_finite() => format!("{v}"),
        Some(v) => {
            let a = v.abs();
            let s = if a != 0.0 && !(1e-3..1e7).contains(&a) {
                format!("{v:.3e}")
            } else {
                let d = if a == 0.0 { 0 } else { (3 - a.log10().floor() as i32).max(0) as usize };
                format!("{v:.d$}")
            };
            s.replace('-', "−")
        }
    }
}

fn int(v: Option<i64>) -> String {
    v.map_or("missing".into(), |v| v.to_string())
}

fn opt(v: Option<&str>) -> String {
    v.map_or("missing".into(), str::to_string)
}

fn params_m(v: Option<i64>) -> String {
    v.map_or("missing".into(), |v| format!("{:.2}", v as f64 / 1e6))
}

struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn html(&self, id: &str) -> String {
        let mut s = format!("<table id=\"{id}\"><thead><tr>");
        for h in &self.head {
            let _ = write!(s, "<th>{}</th>", escape_html(h));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                let cls = if c == "missing" { " class=\"missing\"" } else { "" };
                let _ = write!(s, "<td{cls}>{}</td>", escape_html(c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>\n");
        s
    }
    fn md(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| {} |", self.head.iter().map(|h| escape_md(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|{}", " --- |".repeat(self.head.len()));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.iter().map(|c| escape_md(c)).collect::<Vec<_>>().join(" | "));
        }
        s
    }
}

fn fit_line(name: &str, f: &FitOutcome, metric: &str) -> String {
    match f {
        FitOutcome::Fitted(f) => format!(
            "{name}: {metric} ≈ {} · Gflops^{}; a ∈ [{}, {}], b ∈ [{}, {}] (95% bootstrap, {} resamples, seed {}; n = {})",
            num(Some(f.fit.a)),
            num(Some(f.fit.b)),
            num(Some(f.a_ci[0])),
            num(Some(f.a_ci[1])),
            num(Some(f.b_ci[0])),
            num(Some(f.b_ci[1])),
            f.resamples,
            f.seed,
            f.n
        ),
        FitOutcome::NotFitted { error } => format!("{name}: no fit: {error}"),
    }
}

impl Page<'_> {
    fn metric(&self) -> String {
        self.data.metric.as_deref().map(metric_label).unwrap_or_else(|| "quality".into())
    }

    fn key_lines(&self) -> Vec<String> {
        let s = self.summary;
        let m = self.metric();
        let mut v = Vec::new();
        v.push(match &self.data.metric {
            Some(x) if x == "fid" => "Quality metric: FID (Inception features).".to_string(),
            Some(x) if crate::data::is_validation_metric(x) => format!("Quality metric: {x}, the held-out validation loss (the training objective on fixed held-out images, timesteps and noise, the same for every run; lower is better; not a sample-quality number)."),
            Some(x) => format!("Quality metric: {x} (a Fréchet distance in the features of that extractor; not an FID, so not comparable in value with the paper's FID)."),
            None => "Quality metric: none (no run has an fid or FD_* evaluation or a validation loss).".into(),
        });
        v.push(match s.step {
            Some(st) => format!("Values at step {st}."),
            None => "Values at each run's last evaluation.".into(),
        });
        let c = &s.correlations;
        v.push(format!(
            "Gflops vs {m} over {} runs: Spearman ρ = {}, Pearson r of log Gflops and log {m} = {}{}",
            c.n,
            num(c.spearman),
            num(c.pearson_loglog),
            c.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
        ));
        let p = &s.paper.correlations;
        v.push(format!(
            "The paper's Table 4 (12 models, FID-50K @400K): Spearman ρ = {}, Pearson log-log r = {} (the paper states {}).",
            num(p.spearman),
            num(p.pearson_loglog),
            num(Some(s.paper.stated_correlation))
        ));
        v.push(fit_line("Least squares (log space)", &s.fits.ols, &m));
        v.push(fit_line(&format!("Huber (log space, δ = {})", self.opts.huber_delta), &s.fits.huber, &m));
        v.push(fit_line("Paper Table 4, least squares", &s.paper.ols, "FID"));
        v.push(self.prediction_line());
        v.push(format!("Seeds: {}.", s.replicates.statement));
        v
    }

    /// Mean ± 95 % interval per configuration with at least two seeds.
    fn seeds_table(&self) -> Option<Table> {
        let r = &self.summary.replicates;
        if r.groups.is_empty() {
            return None;
        }
        let rows = r
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.configuration.clone(),
                    g.n.to_string(),
                    num(Some(g.mean)),
                    g.interval.map_or("missing".into(), |i| format!("[{}, {}]", num(Some(i[0])), num(Some(i[1])))),
                    num(g.sd_ln),
                ]
            })
            .collect();
        let head = ["configuration", "seeds", &format!("mean {}", self.metric()), "95% interval (Student t)", "sd of ln"];
        Some(Table { head: head.iter().map(|s| s.to_string()).collect(), rows })
    }

    /// The held-out prediction in one sentence.
    fn prediction_line(&self) -> String {
        let p = &self.summary.predictions;
        let Some(h) = &p.held_out else {
            return format!("Held-out prediction: none ({}).", p.not_made.as_deref().unwrap_or("no quality metric"));
        };
        let level = (h.level * 100.0).round();
        let score = |s: &ditbench_track::Score| match s.median_abs_log_error {
            Some(m) => format!("median |ln error| {} ({}/{} inside the {level}% interval)", num(Some(m)), s.inside, s.checked),
            None => format!("{} pending", s.pending),
        };
        format!(
            "Held-out prediction ({}): {} fitted on {} runs ({} points), predicting the rest: at their last steps {}; over all their evaluations {}.",
            h.hold_out,
            h.formula,
            h.fitted_on.len(),
            h.n_points,
            score(&h.final_score),
            score(&h.score)
        )
    }

    /// The isoFLOP plan in one sentence.
    fn isoflop_line(&self) -> String {
        let iso = &self.summary.isoflop;
        if let Some(why) = &iso.not_made {
            return format!("isoFLOP plan: none ({why}).");
        }
        let k = |e: Option<&crate::isoflop::ExponentEstimate>, missing: Option<&String>| match (e, missing) {
            (Some(e), _) => match e.interval {
                Some(i) => format!("k = {} [{}, {}] ({:.0}% bootstrap)", num(Some(e.k)), num(Some(i.lo)), num(Some(i.hi)), e.level * 100.0),
                None => format!("k = {} (no interval: {})", num(Some(e.k)), e.notes.last().map_or("too few replicates", String::as_str)),
            },
            (None, Some(why)) => format!("none ({why})"),
            (None, None) => "none".into(),
        };
        let fitted = iso.fit.as_ref().map_or(String::new(), |f| format!(" fitted on {} evaluations of {} runs", f.n_points, f.n_runs));
        format!(
            "isoFLOP plan: joint law{fitted}, planned at {} budgets from the smallest run's final training compute to 10× the largest (FLOPs = 6 × Gflops × 10⁹ × images). Compute-optimal size G_opt ∝ C^k: joint law {}; per-budget parabolas through the observed slices {}.",
            iso.budgets.len(),
            k(iso.joint.as_ref(), iso.joint_missing.as_ref()),
            k(iso.parabola.as_ref(), iso.parabola_missing.as_ref())
        )
    }

    /// The best model per budget.
    fn isoflop_table(&self) -> Option<Table> {
        let iso = &self.summary.isoflop;
        if iso.best.is_empty() {
            return None;
        }
        let level = iso.fit.as_ref().map_or(95.0, |f| (f.level * 100.0).round());
        let rows = iso
            .best
            .iter()
            .map(|b| {
                vec![
                    format!("{:.3e}", b.budget),
                    b.label.clone(),
                    num(Some(b.gflops)),
                    b.steps.to_string(),
                    num(Some(b.predicted)),
                    format!("[{}, {}]", num(Some(b.lo)), num(Some(b.hi))),
                    format!("{:.0}%", b.best_share * 100.0),
                    match (b.g_opt, b.g_opt_interval) {
                        (Some(g), Some(i)) => format!("{} [{}, {}]", num(Some(g)), num(Some(i.lo)), num(Some(i.hi))),
                        (g, _) => num(g),
                    },
                    num(b.g_opt_parabola),
                    b.observed_runs.to_string(),
                ]
            })
            .collect();
        let head = [
            "budget (FLOPs)", "best model", "Gflops", "steps", "predicted", &format!("{level}% interval"), "replicates agreeing",
            "G_opt (joint law)", "G_opt (parabola)", "observed runs",
        ];
        Some(Table { head: head.iter().map(|s| s.to_string()).collect(), rows })
    }

    /// The held-out targets and the stored predictions.
    fn prediction_tables(&self) -> Vec<(&'static str, Table)> {
        let p = &self.summary.predictions;
        let mut out = Vec::new();
        if let Some(h) = &p.held_out {
            let level = (h.level * 100.0).round();
            let rows = h
                .targets
                .iter()
                .map(|t| {
                    vec![
                        t.run_id.clone(),
                        t.step.to_string(),
                        num(Some(t.gflops)),
                        num(Some(t.predicted)),
                        format!("[{}, {}]", num(Some(t.lo)), num(Some(t.hi))),
                        num(t.observed),
                        num(t.abs_log_error),
                        t.inside.map_or("missing".into(), |i| if i { "yes".into() } else { "no".into() }),
                    ]
                })
                .collect();
            let head = ["run", "step", "Gflops", "predicted", &format!("{level}% interval"), "observed", "|ln error|", "inside"];
            out.push(("prediction-table", Table { head: head.iter().map(|s| s.to_string()).collect(), rows }));
        }
        if !p.stored.is_empty() {
            let rows = p
                .stored
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.hold_out.clone(),
                        r.metric.clone(),
                        r.form.clone(),
                        r.targets.to_string(),
                        r.score.checked.to_string(),
                        r.score.inside.to_string(),
                        num(r.score.median_abs_log_error),
                    ]
                })
                .collect();
            let head = ["prediction", "hold-out", "metric", "form", "targets", "checked", "inside", "median |ln error|"];
            out.push(("stored-predictions", Table { head: head.iter().map(|s| s.to_string()).collect(), rows }));
        }
        out
    }

    fn runs_table(&self) -> Table {
        let m = self.metric();
        let head = [
            "run", "model", "status", "params (M)", "Gflops", "batch", "steps", "eval step", m.as_str(), "train compute",
            "final loss", "paper Gflops", "paper FID",
        ];
        let rows = self
            .summary
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.clone(),
                    opt(r.model.as_deref()),
                    r.status.clone(),
                    params_m(r.n_params),
                    num(r.gflops),
                    int(r.batch_size),
                    int(r.steps),
                    int(r.quality_step),
                    num(r.quality),
                    num(r.training_compute),
                    num(r.final_loss),
                    num(r.paper_gflops),
                    num(r.paper_fid_50k_400k),
                ]
            })
            .collect();
        Table { head: head.iter().map(|s| s.to_string()).collect(), rows }
    }

    fn paper_table(&self) -> Table {
        let rows = ditbench_family::PAPER_TABLE4
            .iter()
            .map(|e| {
                vec![
                    e.name.to_string(),
                    num(Some(e.gflops)),
                    format!("{:.2}", e.params as f64 / 1e6),
                    num(Some(e.fid_50k_400k)),
                ]
            })
            .collect();
        Table {
            head: ["model", "Gflops", "params (M)", "FID-50K @400K"].iter().map(|s| s.to_string()).collect(),
            rows,
        }
    }

    fn captions(&self) -> Vec<String> {
        let m = self.metric();
        self.figures
            .iter()
            .map(|f| match f.name.as_str() {
                "gflops" => format!("{m} against transformer Gflops, one point per run (colour: model size, marker: patch), with the power-law fit drawn ({}) and its 95% bootstrap band; grey: the paper's Table 4 (FID-50K at 400K steps, 256 px) and its fit.", self.summary.fits.drawn),
                "compute" => format!("{m} against training compute (3 × Gflops × batch × steps), one curve per run; dashed black: the compute-efficient frontier."),
                "steps_by_size" => format!("{m} over training steps, model sizes compared at each patch size."),
                "steps_by_patch" => format!("{m} over training steps, patch sizes compared at each model size."),
                "validation" => "The held-out validation loss of the EMA weights over training steps (the training objective on fixed held-out images, timesteps and noise, the same for every run): the smooth curve the scaling fits can use, beside the noisy training loss.".into(),
                "prediction" => format!("Held-out prediction: the law fitted without the held-out runs ({}), left: each held-out run's {m} as observed (solid) and as predicted (dashed, with the predictive band); right: predicted against observed with each interval (hollow: outside it), dashed diagonal where they agree.", self.summary.predictions.held_out.as_ref().map_or("", |h| h.hold_out.as_str())),
                "isoflop" => format!("isoFLOP profiles from the joint law fitted on every evaluation of every run (training compute C = 6 × Gflops × 10⁹ × images seen). Left: predicted {m} against model Gflops at each fixed budget (lines), the sweep's models on them (hollow; the best filled), the law's continuous optimum (diamond) and each run's observed {m} interpolated where its compute equals the budget (triangles). Right: the compute-optimal size G_opt against C from the joint law (line, with its bootstrap band) and from per-budget parabolas through the observed slices (diamonds, dashed line)."),
                "loss" => "Training loss: raw points faint (min/max per pixel column when drawn; stored in full in data/loss.parquet), exponential moving average solid.".into(),
                _ => String::new(),
            })
            .collect()
    }

    pub fn html(&self) -> String {
        let sweep = escape_html(&self.data.sweep);
        let mut h = String::with_capacity(1 << 20);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>Scaling report: {sweep}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n"
        );
        let _ = write!(
            h,
            "<header><h1>Scaling report: sweep <code>{sweep}</code></h1>\n<p class=\"sub\">{} runs · {} · made by {}</p></header>\n",
            self.summary.runs.len(),
            escape_html(&self.metric()),
            escape_html(&self.summary.generated_by)
        );
        h.push_str("<section id=\"summary\"><h2>Summary</h2><ul>\n");
        for l in self.key_lines() {
            let _ = writeln!(h, "<li>{}</li>", escape_html(&l));
        }
        h.push_str("</ul>\n");
        if !self.summary.missing.is_empty() {
            h.push_str("<p><strong>Not in the Gflops figure</strong> (missing, not zero):</p><ul class=\"missing\">\n");
            for m in &self.summary.missing {
                let _ = writeln!(h, "<li>{}</li>", escape_html(m));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</section>\n<section id=\"figures\"><h2>Figures</h2>\n");
        for ((f, svg), cap) in self.figures.iter().zip(self.svgs).zip(self.captions()) {
            // Inline SVG needs no namespace inside HTML; dropping it keeps the page free of URLs.
            let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
            let _ = write!(
                h,
                "<figure id=\"fig-{}\">\n{}\n<figcaption>{} <span class=\"files\">(figures/{}.svg, .png)</span></figcaption>\n</figure>\n",
                escape_html(&f.name),
                svg,
                escape_html(&cap),
                escape_html(&f.name)
            );
        }
        h.push_str("</section>\n<section id=\"predictions\"><h2>Predictions</h2>\n");
        let _ = writeln!(h, "<p>{}</p>", escape_html(&self.prediction_line()));
        for (id, t) in self.prediction_tables() {
            if id == "stored-predictions" {
                h.push_str("<h3>Stored predictions (<code>ditbench predict</code>), checked against the runs that finished</h3>\n");
            }
            h.push_str(&t.html(id));
        }
        h.push_str("<h3>isoFLOP plan</h3>\n");
        let _ = writeln!(h, "<p>{}</p>", escape_html(&self.isoflop_line()));
        if let Some(t) = self.isoflop_table() {
            h.push_str(&t.html("isoflop-table"));
        }
        h.push_str("</section>\n<section id=\"runs\"><h2>This sweep beside the paper</h2>\n");
        h.push_str("<p>Per run, the quality value shown in the figures (at “eval step”); train compute = 3 × Gflops × batch × eval step. The paper columns are Table 4's Gflops and FID-50K for the same preset (256 px, batch 256, 400K steps), where the run's model is one.</p>\n");
        h.push_str(&self.runs_table().html("runs-table"));
        if let Some(t) = self.seeds_table() {
            h.push_str("<h3>Seeds</h3>\n");
            let _ = writeln!(h, "<p>{}</p>", escape_html(&format!("Runs equal in everything but the seed, as one configuration: {}.", self.summary.replicates.statement)));
            h.push_str(&t.html("seeds-table"));
        }
        h.push_str("<h3>The paper's Table 4</h3>\n");
        h.push_str(&self.paper_table().html("paper-table"));
        h.push_str("</section>\n<section id=\"samples\"><h2>Samples at each run's last checkpoint</h2>\n");
        if self.samples.is_empty() {
            h.push_str("<p class=\"missing\">No sample grids in the store for this sweep.</p>\n");
        }
        h.push_str("<div class=\"grids\">\n");
        for s in self.samples {
            let label = format!("{} · {} · step {}", s.run_id, opt(s.model.as_deref()), s.step);
            let _ = writeln!(
                h,
                "<figure class=\"grid\"><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>",
                escape_html(&format!("samples of {}", s.run_id)),
                base64(&s.png),
                escape_html(&label)
            );
        }
        h.push_str("</div>\n</section>\n");
        if !self.summary.notes.is_empty() {
            h.push_str("<section id=\"notes\"><h2>Notes</h2><ul>\n");
            for n in &self.summary.notes {
                let _ = writeln!(h, "<li>{}</li>", escape_html(n));
            }
            h.push_str("</ul></section>\n");
        }
        h.push_str("<footer>Numbers: summary.json · plotted points: data/*.parquet</footer>\n</body>\n</html>\n");
        h
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Scaling report: sweep {}\n", escape_md(&self.data.sweep));
        let _ = writeln!(m, "{} runs · made by {}\n", self.summary.runs.len(), escape_md(&self.summary.generated_by));
        m.push_str("## Summary\n\n");
        for l in self.key_lines() {
            let _ = writeln!(m, "- {}", escape_md(&l));
        }
        if !self.summary.missing.is_empty() {
            m.push_str("\nNot in the Gflops figure (missing, not zero):\n\n");
            for x in &self.summary.missing {
                let _ = writeln!(m, "- {}", escape_md(x));
            }
        }
        m.push_str("\n## Figures\n\n");
        for (f, cap) in self.figures.iter().zip(self.captions()) {
            let _ = writeln!(m, "![{}](figures/{}.png)\n\n{}\n", escape_md(&f.title), f.name, escape_md(&cap));
        }
        m.push_str("## Predictions\n\n");
        let _ = writeln!(m, "{}\n", escape_md(&self.prediction_line()));
        for (id, t) in self.prediction_tables() {
            if id == "stored-predictions" {
                m.push_str("\n### Stored predictions (`ditbench predict`)\n\n");
            }
            m.push_str(&t.md());
        }
        m.push_str("\n### isoFLOP plan\n\n");
        let _ = writeln!(m, "{}\n", escape_md(&self.isoflop_line()));
        if let Some(t) = self.isoflop_table() {
            m.push_str(&t.md());
        }
        m.push_str("\n## This sweep beside the paper\n\n");
        m.push_str(&self.runs_table().md());
        if let Some(t) = self.seeds_table() {
            m.push_str("\n### Seeds\n\n");
            let _ = writeln!(m, "{}\n", escape_md(&format!("Runs equal in everything but the seed, as one configuration: {}.", self.summary.replicates.statement)));
            m.push_str(&t.md());
        }
        m.push_str("\n### The paper's Table 4\n\n");
        m.push_str(&self.paper_table().md());
        m.push_str("\n## Samples at each run's last checkpoint\n\n");
        if self.samples.is_empty() {
            m.push_str("No sample grids in the store for this sweep.\n");
        }
        for s in self.samples {
            let _ = writeln!(m, "![samples of {}]({})\n\n{}, step {}\n", escape_md(&s.run_id), s.file, escape_md(&s.run_id), s.step);
        }
        if !self.summary.notes.is_empty() {
            m.push_str("\n## Notes\n\n");
            for n in &self.summary.notes {
                let _ = writeln!(m, "- {}", escape_md(n));
            }
        }
        m
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.sub{color:#666;margin-top:0}code{background:#f3f3f3;padding:0 .3em;border-radius:3px}
figure{margin:1.2rem 0}figure svg{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.92rem;margin-top:.3rem}.files{color:#888}
table{border-collapse:collapse;font-size:.8rem;margin:.6rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.2rem .4rem;text-align:right;white-space:nowrap}
th{background:#f6f6f6}td:first-child,th:first-child,td:nth-child(2){text-align:left}
td.missing,.missing{color:#b04040;font-style:italic}
.grids{display:flex;flex-wrap:wrap;gap:1rem}.grid{margin:0;max-width:260px}.grid img{width:100%;image-rendering:pixelated;border:1px solid #ddd}
footer{color:#888;font-size:.85rem;margin-top:2rem}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_html("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(escape_html("a\"b'c&"), "a&quot;b&#39;c&amp;");
        assert_eq!(escape_md("a|b<i>"), "a\\|b&lt;i&gt;");
        assert_eq!(num(None), "missing");
        assert_eq!(num(Some(68.4)), "68.40");
        assert_eq!(num(Some(-0.9161)), "−0.9161");
    }
}
