//! A small figure model (panels of series + one legend) and its renderer on plotters,
//! drawn once into SVG and once into PNG so that both show the same thing.
//!
//! Log axes are drawn in log10 space on a linear plotters axis with our own ticks:
//! plotters' log axis puts at most one labelled tick in a range narrower than a
//! decade, and FID ranges (20..150) usually are.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::ReportError;

/// The font the figures are measured and drawn with (a subset of DejaVu Sans, see
/// `assets/DejaVuSans-LICENSE.txt`): embedded because CI machines may have no fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-report.ttf");

fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(ReportError::Plot("the embedded font could not be loaded".into()))
    }
}

/// An RGB colour.
pub type Rgb = (u8, u8, u8);

/// Marker shapes (the paper's scaling plots mark patch size by shape).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    /// ●
    Circle,
    /// ▲
    Triangle,
    /// ■
    Square,
    /// ◆
    Diamond,
}

/// One thing drawn in a panel.
#[derive(Debug, Clone)]
pub enum Series {
    /// A polyline.
    Line {
        /// Points in data units.
        points: Vec<(f64, f64)>,
        /// Colour.
        color: Rgb,
        /// Opacity 0..1.
        alpha: f64,
        /// Stroke width in px.
        width: u32,
        /// Dashed.
        dashed: bool,
    },
    /// Markers.
    Points {
        /// Points in data units.
        points: Vec<(f64, f64)>,
        /// Colour.
        color: Rgb,
        /// Shape.
        marker: Marker,
        /// Filled or outlined.
        filled: bool,
        /// Radius in px.
        size: u32,
    },
    /// A shaded band between two curves sharing x.
    Band {
        /// (x, lower, upper).
        points: Vec<(f64, f64, f64)>,
        /// Colour.
        color: Rgb,
        /// Opacity 0..1.
        alpha: f64,
    },
}

/// An axis.
#[derive(Debug, Clone)]
pub struct Axis {
    /// Label, with units.
    pub label: String,
    /// Logarithmic.
    pub log: bool,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the chart (optional).
    pub title: Option<String>,
    /// x axis.
    pub x: Axis,
    /// y axis.
    pub y: Axis,
    /// What is drawn, back to front.
    pub series: Vec<Series>,
}

/// A legend row.
#[derive(Debug, Clone)]
pub struct LegendEntry {
    /// Text.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// Marker, if any.
    pub marker: Option<(Marker, bool)>,
    /// Line sample: Some(dashed).
    pub line: Option<bool>,
    /// A heading row (bold-ish, no sample).
    pub heading: bool,
}

impl LegendEntry {
    /// A heading.
    pub fn heading(label: impl Into<String>) -> Self {
        LegendEntry { label: label.into(), color: (0, 0, 0), marker: None, line: None, heading: true }
    }
    /// A marker sample.
    pub fn marker(label: impl Into<String>, color: Rgb, m: Marker, filled: bool) -> Self {
        LegendEntry { label: label.into(), color, marker: Some((m, filled)), line: None, heading: false }
    }
    /// A line sample.
    pub fn line(label: impl Into<String>, color: Rgb, dashed: bool) -> Self {
        LegendEntry { label: label.into(), color, marker: None, line: Some(dashed), heading: false }
    }
}

/// A whole figure: a grid of panels and one legend column at the right.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`gflops` → `gflops.svg`, `gflops.png`).
    pub name: String,
    /// Title.
    pub title: String,
    /// Panels, row-major.
    pub panels: Vec<Panel>,
    /// Panels per row.
    pub columns: usize,
    /// Legend rows.
    pub legend: Vec<LegendEntry>,
    /// Size in px (SVG units).
    pub size: (u32, u32),
}

/// Tableau-10 colours (the default of matplotlib, which the paper's plots use).
pub const PALETTE: [Rgb; 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Compact number text for tick labels: plain decimals from 0.001 to 99,999, else
/// `m×10ⁿ` with a Unicode exponent.
pub fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = if a >= 100.0 { 0 } else { (2.0 - a.log10().floor()).max(0.0) as usize };
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        return s.replace('-', "−");
    }
    let e = a.log10().floor() as i32;
    let m = v / 10f64.powi(e);
    let sup = superscript(e);
    if (m - 1.0).abs() < 1e-9 {
        format!("10{sup}")
    } else {
        format!("{}×10{sup}", fmt_tick(m))
    }
}

/// Linear-axis tick text: training steps read as 100k, 2.5M (the paper writes 400K).
pub fn fmt_linear_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 && (v / 1e5).fract() == 0.0 {
        format!("{}M", fmt_tick(v / 1e6))
    } else if a >= 1e4 && (v / 100.0).fract() == 0.0 {
        format!("{}k", fmt_tick(v / 1e3))
    } else {
        fmt_tick(v)
    }
}

fn superscript(e: i32) -> String {
    let digits = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s = String::new();
    if e < 0 {
        s.push('⁻');
    }
    for c in e.unsigned_abs().to_string().chars() {
        s.push(digits[c as usize - '0' as usize]);
    }
    s
}

/// Tick positions (data units) for a log axis over `[lo, hi]`: the sparsest of
/// 10ⁿ, {1, 3}·10ⁿ, {1, 2, 5}·10ⁿ, {1..9}·10ⁿ that gives at least four labels (every
/// k-th power of ten over very wide ranges); the other integer multiples become
/// unlabelled minor grid lines.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = (hi / lo).log10();
    let step = if decades > 9.0 { (decades / 6.0).ceil() as i32 } else { 1 };
    let all = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let within = |mults: &[f64], every: i32| -> Vec<f64> {
        let mut out = Vec::new();
        let mut e = lo.log10().floor() as i32 - 1;
        while f64::from(e) <= hi.log10() + 1.0 {
            if e.rem_euclid(every) == 0 {
                for &m in mults {
                    // m / 10^k rounds correctly (0.3), m · 10^-k does not (0.30000000000000004)
                    let v = if e >= 0 { m * 10f64.powi(e) } else { m / 10f64.powi(-e) };
                    if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                        out.push(v);
                    }
                }
            }
            e += 1;
        }
        out
    };
    let candidates: [&[f64]; 4] = [&[1.0], &[1.0, 3.0], &[1.0, 2.0, 5.0], &all];
    let mut major = within(&[1.0], step);
    if step == 1 {
        for c in candidates {
            major = within(c, 1);
            if major.len() >= 4 {
                break;
            }
        }
        if major.len() < 3 {
            // less than about half a decade: add 1.5, 2.5 etc.
            let halves: Vec<f64> = (2..20).map(|k| k as f64 / 2.0).collect();
            major = within(&halves, 1);
        }
    }
    let minor = if decades < 6.0 {
        within(&all, 1)
            .into_iter()
            .filter(|v| !major.iter().any(|m| (m - v).abs() <= 1e-9 * v))
            .collect()
    } else {
        Vec::new()
    };
    (major, minor)
}

/// Linear ticks: 1-2-5 steps, about `target` of them.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

struct AxisMap {
    log: bool,
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl AxisMap {
    fn new(axis: &Axis, values: &[f64]) -> AxisMap {
        let vals: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (!axis.log || *v > 0.0))
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if !lo.is_finite() {
            (lo, hi) = if axis.log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if axis.log {
            let (mut l0, mut l1) = (lo.log10(), hi.log10());
            if l1 - l0 < 0.2 {
                let mid = (l0 + l1) / 2.0;
                (l0, l1) = (mid - 0.1, mid + 0.1);
            }
            let pad = 0.05 * (l1 - l0);
            let (lo, hi) = (10f64.powf(l0 - pad), 10f64.powf(l1 + pad));
            let (major, minor) = log_ticks(lo, hi);
            AxisMap { log: true, lo: lo.log10(), hi: hi.log10(), major, minor }
        } else {
            if hi - lo < 1e-12 * (1.0 + lo.abs()) {
                let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                (lo, hi) = (lo - d, hi + d);
            }
            let pad = 0.05 * (hi - lo);
            let (lo, hi) = (lo - pad, hi + pad);
            AxisMap { log: false, lo, hi, major: linear_ticks(lo, hi, 6), minor: vec![] }
        }
    }
    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }
    fn ok(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }
    fn ticks(&self) -> Vec<f64> {
        self.major.iter().map(|&v| self.t(v)).collect()
    }
    fn light(&self) -> Vec<f64> {
        self.minor.iter().map(|&v| self.t(v)).collect()
    }
    fn label(&self, tv: f64) -> String {
        let v = if self.log { 10f64.powf(tv) } else { tv };
        // snap to the tick value to avoid 99.9999 from the log round trip
        let snapped = self
            .major
            .iter()
            .copied()
            .find(|m| (m - v).abs() <= 1e-9 * m.abs().max(1e-300))
            .unwrap_or(v);
        if self.log {
            fmt_tick(snapped)
        } else {
            fmt_linear_tick(snapped)
        }
    }
}

/// A linear axis (in transformed units) with our own major and minor ticks.
#[derive(Clone)]
struct Ticked {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl AxisMap {
    fn ticked(&self) -> Ticked {
        Ticked { lo: self.lo, hi: self.hi, major: self.ticks(), minor: self.light() }
    }
}

fn rgba(c: Rgb, a: f64) -> RGBAColor {
    RGBColor(c.0, c.1, c.2).mix(a)
}

type PErr<E> = DrawingAreaErrorKind<E>;

fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    m: Marker,
    filled: bool,
    color: Rgb,
    r: i32,
) -> Result<(), PErr<DB::ErrorType>> {
    let c = RGBColor(color.0, color.1, color.2);
    let style = if filled { c.filled() } else { c.stroke_width(2) };
    let (x, y) = at;
    match m {
        Marker::Circle => area.draw(&Circle::new(at, r, style)),
        Marker::Square => {
            let s = r - 1;
            area.draw(&Rectangle::new([(x - s, y - s), (x + s, y + s)], style))
        }
        Marker::Triangle => {
            let pts = vec![(x, y - r - 1), (x - r, y + r - 1), (x + r, y + r - 1)];
            if filled {
                area.draw(&Polygon::new(pts, style))
            } else {
                let mut p = pts.clone();
                p.push(pts[0]);
                area.draw(&PathElement::new(p, style))
            }
        }
        Marker::Diamond => {
            let r = r + 1;
            let pts = vec![(x, y - r), (x + r, y), (x, y + r), (x - r, y)];
            if filled {
                area.draw(&Polygon::new(pts, style))
            } else {
                let mut p = pts.clone();
                p.push(pts[0]);
                area.draw(&PathElement::new(p, style))
            }
        }
    }
}

fn font(size: f64) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    s: f64,
) -> Result<(), PErr<DB::ErrorType>> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for se in &p.series {
        match se {
            Series::Line { points, .. } | Series::Points { points, .. } => {
                xs.extend(points.iter().map(|q| q.0));
                ys.extend(points.iter().map(|q| q.1));
            }
            Series::Band { points, .. } => {
                xs.extend(points.iter().map(|q| q.0));
                ys.extend(points.iter().flat_map(|q| [q.1, q.2]));
            }
        }
    }
    let empty = xs.is_empty();
    let xm = AxisMap::new(&p.x, &xs);
    let ym = AxisMap::new(&p.y, &ys);
    let px = |v: f64| (v * s).round() as u32;
    let mut b = ChartBuilder::on(area);
    b.margin(px(8.0))
        .margin_right(px(18.0))
        .x_label_area_size(px(52.0))
        .y_label_area_size(px(70.0));
    if let Some(t) = &p.title {
        b.caption(t, font(16.0 * s));
    }
    let mut chart = b.build_cartesian_2d(xm.ticked(), ym.ticked())?;
    chart
        .configure_mesh()
        .x_desc(&p.x.label)
        .y_desc(&p.y.label)
        .axis_desc_style(font(15.0 * s))
        .label_style(font(13.0 * s))
        .x_label_formatter(&|v| xm.label(*v))
        .y_label_formatter(&|v| ym.label(*v))
        .bold_line_style(RGBColor(200, 200, 200).stroke_width(1))
        .light_line_style(RGBColor(236, 236, 236).stroke_width(1))
        .axis_style(RGBColor(90, 90, 90).stroke_width(1))
        .draw()?;
    let tr = |q: &(f64, f64)| (xm.ok(q.0) && ym.ok(q.1)).then(|| (xm.t(q.0), ym.t(q.1)));
    for se in &p.series {
        match se {
            Series::Band { points, color, alpha } => {
                let mut poly: Vec<(f64, f64)> = points
                    .iter()
                    .filter_map(|q| tr(&(q.0, q.2)))
                    .collect();
                let lower: Vec<(f64, f64)> =
                    points.iter().rev().filter_map(|q| tr(&(q.0, q.1))).collect();
                poly.extend(lower);
                if poly.len() >= 3 {
                    chart.draw_series(std::iter::once(Polygon::new(poly, rgba(*color, *alpha).filled())))?;
                }
            }
            Series::Line { points, color, alpha, width, dashed } => {
                let pts: Vec<(f64, f64)> = points.iter().filter_map(tr).collect();
                let style = rgba(*color, *alpha).stroke_width(((*width as f64) * s).round().max(1.0) as u32);
                if *dashed {
                    chart.draw_series(DashedLineSeries::new(pts, (7.0 * s) as u32, (5.0 * s) as u32, style))?;
                } else {
                    chart.draw_series(LineSeries::new(pts, style))?;
                }
            }
            Series::Points { .. } => {}
        }
    }
    // Markers last, on top of lines and bands; drawn in pixel space for exact shapes.
    let plot_area = chart.plotting_area();
    for se in &p.series {
        if let Series::Points { points, color, marker, filled, size } = se {
            for q in points.iter().filter_map(tr) {
                let at = plot_area.map_coordinate(&q);
                let (ox, oy) = plot_area.get_base_pixel();
                let r = ((*size as f64) * s).round() as i32;
                draw_marker(&plot_area.strip_coord_spec(), (at.0 - ox, at.1 - oy), *marker, *filled, *color, r)?;
            }
        }
    }
    if empty {
        let (w, h) = plot_area.dim_in_pixel();
        plot_area.strip_coord_spec().draw(&Text::new(
            "no data",
            (w as i32 / 2 - (30.0 * s) as i32, h as i32 / 2),
            font(16.0 * s).color(&RGBColor(120, 120, 120)),
        ))?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    legend: &[LegendEntry],
    s: f64,
) -> Result<(), PErr<DB::ErrorType>> {
    let row = (21.0 * s) as i32;
    let x0 = (6.0 * s) as i32;
    let mut y = (44.0 * s) as i32;
    for e in legend {
        if e.heading {
            y += (4.0 * s) as i32;
            area.draw(&Text::new(e.label.clone(), (x0, y - (8.0 * s) as i32), font(14.0 * s).color(&RGBColor(60, 60, 60))))?;
            y += row;
            continue;
        }
        let cx = x0 + (14.0 * s) as i32;
        if let Some(dashed) = e.line {
            let c = RGBColor(e.color.0, e.color.1, e.color.2);
            let (a, b) = ((x0, y), (x0 + (28.0 * s) as i32, y));
            if dashed {
                let seg = (6.0 * s) as i32;
                let mut x = a.0;
                while x < b.0 {
                    area.draw(&PathElement::new(vec![(x, y), ((x + seg).min(b.0), y)], c.stroke_width((2.0 * s) as u32)))?;
                    x += seg * 2;
                }
            } else {
                area.draw(&PathElement::new(vec![a, b], c.stroke_width((2.0 * s) as u32)))?;
            }
        }
        if let Some((m, filled)) = e.marker {
            draw_marker(area, (cx, y), m, filled, e.color, (5.0 * s) as i32)?;
        }
        area.draw(&Text::new(e.label.clone(), (x0 + (36.0 * s) as i32, y - (8.0 * s) as i32), font(13.0 * s)))?;
        y += row;
    }
    Ok(())
}

/// Width of the legend column (SVG px).
const LEGEND_W: f64 = 210.0;

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure, s: f64) -> Result<(), PErr<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let title_h = (40.0 * s) as u32;
    let (top, body) = root.split_vertically(title_h);
    top.draw(&Text::new(fig.title.clone(), ((14.0 * s) as i32, (10.0 * s) as i32), font(19.0 * s)))?;
    let legend_w = if fig.legend.is_empty() { 0 } else { (LEGEND_W * s) as u32 };
    let (charts, legend) = body.split_horizontally(w - legend_w);
    let cols = fig.columns.max(1);
    let rows = fig.panels.len().div_ceil(cols).max(1);
    let cells = charts.split_evenly((rows, cols));
    for (cell, p) in cells.iter().zip(&fig.panels) {
        draw_panel(cell, p, s)?;
    }
    if !fig.legend.is_empty() {
        draw_legend(&legend, &fig.legend, s)?;
    }
    root.present()?;
    Ok(())
}

/// Renders `fig` as an SVG document.
pub fn render_svg(fig: &Figure) -> Result<String, ReportError> {
    ensure_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, fig.size).into_drawing_area();
        draw_figure(root, fig, 1.0).map_err(|e| ReportError::Plot(format!("{}: {e}", fig.name)))?;
    }
    Ok(out)
}

/// Renders `fig` as a PNG at `scale` × its SVG size (2 gives crisp lines: plotters
/// does not anti-alias lines in bitmaps).
pub fn render_png(fig: &Figure, path: &Path, scale: f64) -> Result<(), ReportError> {
    ensure_font()?;
    let size = ((fig.size.0 as f64 * scale) as u32, (fig.size.1 as f64 * scale) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    draw_figure(root, fig, scale).map_err(|e| ReportError::Plot(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_read_like_numbers() {
        assert_eq!(fmt_tick(20.0), "20");
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(150.0), "150");
        assert_eq!(fmt_tick(1e12), "10¹²");
        assert_eq!(fmt_tick(3e-5), "3×10⁻⁵");
        assert_eq!(fmt_tick(-2.0), "−2");
        assert_eq!(fmt_linear_tick(400_000.0), "400k");
        assert_eq!(fmt_linear_tick(2_500_000.0), "2.5M");
        assert_eq!(fmt_linear_tick(3000.0), "3000");
    }

    #[test]
    fn log_ticks_fill_sub_decade_ranges() {
        // FID from 18 to 160: 20, 50, 100 at least
        let (major, _) = log_ticks(18.0, 160.0);
        for v in [20.0, 50.0, 100.0] {
            assert!(major.iter().any(|m| (m - v).abs() < 1e-9), "{major:?}");
        }
        // 12 decades: only powers of ten, at most about 7 labels
        let (major, _) = log_ticks(1e3, 1e15);
        assert!(major.len() <= 8 && major.iter().all(|m| (m.log10() - m.log10().round()).abs() < 1e-9), "{major:?}");
        // narrow: still several labels
        let (major, _) = log_ticks(40.0, 60.0);
        assert!(major.len() >= 3, "{major:?}");
        // two thirds of a decade (a loss curve): more than two labels
        let (major, minor) = log_ticks(0.17, 0.65);
        assert_eq!(major, [0.2, 0.3, 0.4, 0.5, 0.6]);
        assert!(minor.is_empty(), "{minor:?}");
        // 3.5 decades of compute: powers of ten only
        let (major, _) = log_ticks(1e5, 3e8);
        assert_eq!(major, [1e5, 1e6, 1e7, 1e8]);
    }
}
