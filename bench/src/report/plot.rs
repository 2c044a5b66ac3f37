//! SVG plots of the report, drawn with plotters' SVG backend (text as SVG
//! `<text>` elements: no system fonts needed). Each function returns the
//! SVG document as a string.

use std::fmt::Display;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }
}

const W: u32 = 760;
const H: u32 = 460;

/// The legend every plot draws, at `pos`.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)
}

fn err(e: impl Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

/// A color per series index, distinct for the first ten.
pub fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// `8`, `4K`, `1M`.
pub fn size_label(bytes: f64) -> String {
    let b = bytes.round() as u64;
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}K", b >> 10)
    } else if b >= 10_000
        && b.to_string()
            .trim_start_matches('1')
            .bytes()
            .all(|c| c == b'0')
    {
        // Log-axis ticks: 10000 -> 1e4.
        format!("1e{}", b.to_string().len() - 1)
    } else {
        b.to_string()
    }
}

fn us_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.0}", us)
    } else if us >= 1.0 {
        format!("{:.3}", us)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{:.3}", us)
    }
}

/// Bounds of all points (positive only: the axes are logarithmic).
fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.0.is_finite() && p.1.is_finite());
    let mut b: Option<((f64, f64), (f64, f64))> = None;
    for &(x, y) in pts {
        b = Some(match b {
            None => ((x, x), (y, y)),
            Some(((x0, x1), (y0, y1))) => ((x0.min(x), x1.max(x)), (y0.min(y), y1.max(y))),
        });
    }
    b
}

fn draw_loglog(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    title_size: u32,
) -> anyhow::Result<()> {
    let Some(((x0, x1), (y0, y1))) = bounds(series) else {
        area.titled(&format!("{title} (no data)"), ("sans-serif", title_size))
            .map_err(err)?;
        return Ok(());
    };
    let (x0, x1) = if x0 == x1 {
        (x0 / 2.0, x1 * 2.0)
    } else {
        (x0 / 1.3, x1 * 1.3)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", title_size))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((x0..x1).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| size_label(*x))
        .y_labels(8)
        .y_label_formatter(&|y| us_label(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// Lines on log-log axes: x a size in bytes, y a latency in µs.
pub fn latency_vs_size(title: &str, series: &[Series]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw_loglog(
            &root,
            title,
            "message size (bytes)",
            "round trip (µs)",
            series,
            18,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The x coordinate of a quantile on a percentile plot: `-log10(1 - q)`
/// (50 % at 0.3, 99 % at 2, 99.99 % at 4), the top capped at 5.
pub fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(1e-5).log10()).clamp(0.0, 5.0)
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if x >= 4.99 {
        "max".into()
    } else if p < 99.0 {
        format!("{p:.0}%")
    } else {
        format!("{p}%").chars().take(7).collect()
    }
}

/// Latency CDFs as a percentile plot (HdrHistogram style): x the percentile
/// on a "nines" axis, y the latency in µs (log). Points are
/// `(quantile, µs)`.
pub fn percentiles(title: &str, series: &[Series]) -> anyhow::Result<String> {
    let mapped: Vec<Series> = series
        .iter()
        .map(|s| {
            Series::new(
                s.name.clone(),
                s.points.iter().map(|&(q, v)| (nines(q), v)).collect(),
            )
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let ys = mapped
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.1)
            .filter(|y| *y > 0.0 && y.is_finite());
        let (y0, y1) = ys.fold((f64::INFINITY, 0f64), |(a, b), y| (a.min(y), b.max(y)));
        if y1 <= 0.0 {
            root.titled(&format!("{title} (no data)"), ("sans-serif", 18))
                .map_err(err)?;
        } else {
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(8)
                .margin_right(24)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..5.0, (y0 / 1.5..y1 * 1.5).log_scale())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("round trip (µs)")
                .x_labels(6)
                .x_label_formatter(&|x| percentile_label(*x))
                .y_label_formatter(&|y| us_label(*y))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(err)?;
            for (i, s) in mapped.iter().enumerate() {
                let c = color(i);
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied().filter(|p| p.1 > 0.0),
                        c.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Invocations/s against client threads, one line per series, with the
/// goal as a horizontal line.
pub fn throughput(title: &str, series: &[Series], goal: f64) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xs = series.iter().flat_map(|s| &s.points).map(|p| p.0);
        let x1 = xs.fold(1f64, f64::max);
        let y1 = series
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.1)
            .fold(goal, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.5f64..x1 + 0.5, 0f64..y1 * 1.15 / 1e6)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("client threads")
            .y_desc("M invocations/s")
            .x_labels(x1 as usize + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 && *x >= 1.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let gc = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(
                vec![(0.5, goal / 1e6), (x1 + 0.5, goal / 1e6)],
                gc.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("goal {:.0} M/s (shm)", goal / 1e6))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], gc.stroke_width(1)));
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x, y / 1e6)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The label of bar row `y` (rows at integer positions; none between).
fn row_label(labels: &[String], y: f64) -> String {
    let i = y.round();
    if (y - i).abs() < 1e-6 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// One horizontal bar of stacked segments.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    /// `(segment name, value)`, drawn left to right.
    pub segments: Vec<(String, f64)>,
}

/// Horizontal stacked bars (a breakdown per row), values in ms; one color
/// per segment name, in order of first appearance.
pub fn stacked_bars(title: &str, x_desc: &str, bars: &[Bar]) -> anyhow::Result<String> {
    let mut names: Vec<&str> = Vec::new();
    for b in bars {
        for (n, _) in &b.segments {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let total = |b: &Bar| b.segments.iter().map(|s| s.1.max(0.0)).sum::<f64>();
    let x1 = bars.iter().map(total).fold(0f64, f64::max).max(1e-3);
    let n = bars.len().max(1);
    let height = (140 + 46 * n as u32).max(260);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..x1 * 1.75, -0.5f64..n as f64 - 0.5)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_labels(n)
            .y_label_formatter(&|y| row_label(&labels, *y))
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (ni, name) in names.iter().enumerate() {
            let c = color(ni);
            let mut rects = Vec::new();
            for (bi, b) in bars.iter().enumerate() {
                let mut x = 0.0;
                for (sn, v) in &b.segments {
                    let v = v.max(0.0);
                    if sn == name {
                        let y = bi as f64;
                        rects.push(Rectangle::new([(x, y - 0.3), (x + v, y + 0.3)], c.filled()));
                    }
                    x += v;
                }
            }
            chart
                .draw_series(rects)
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        }
        for (bi, b) in bars.iter().enumerate() {
            let t = total(b);
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{t:.2}"),
                    (t + x1 * 0.01, bi as f64 + 0.1),
                    ("sans-serif", 12),
                )))
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Horizontal bars on a log scale, one per label (values spanning orders
/// of magnitude: µs to ms, tasks/s), each with its value written out.
pub fn log_bars(
    title: &str,
    x_desc: &str,
    labels: &[String],
    values: &[f64],
) -> anyhow::Result<String> {
    let finite: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(0f64, f64::max);
    if finite.is_empty() {
        anyhow::bail!("{title}: nothing to draw");
    }
    let (x0, x1) = (lo / 3.0, hi * 6.0);
    let n = labels.len().max(1);
    let height = (140 + 40 * n as u32).max(240);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(230)
            .build_cartesian_2d((x0..x1).log_scale(), -0.5f64..n as f64 - 0.5)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_labels(n)
            .y_label_formatter(&|y| row_label(labels, *y))
            .disable_y_mesh()
            .draw()
            .map_err(err)?;
        for (i, v) in values.iter().enumerate() {
            if !(v.is_finite() && *v > 0.0) {
                continue;
            }
            let y = i as f64;
            let c = color(i);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y - 0.3), (*v, y + 0.3)],
                    c.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.1}"),
                    (*v * 1.1, y + 0.1),
                    ("sans-serif", 12),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A grid of log-log panels (one per title), each with its own series.
pub fn grid(title: &str, panels: &[(String, Vec<Series>)], cols: usize) -> anyhow::Result<String> {
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols).max(1);
    let (pw, ph) = (380u32, 280u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (pw * cols as u32, ph * rows as u32 + 40))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
        let areas = root.split_evenly((rows, cols));
        for (area, (t, series)) in areas.iter().zip(panels) {
            draw_loglog(area, t, "bytes", "µs", series, 14)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(size_label(8.0), "8");
        assert_eq!(size_label(4096.0), "4K");
        assert_eq!(size_label(1048576.0), "1M");
        assert_eq!(size_label(1000.0), "1000");
        assert_eq!(size_label(1_000_000.0), "1e6");
        assert_eq!(size_label(12_000.0), "12000");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0), 5.0);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "max");
    }

    #[test]
    fn plots_are_svg_with_their_series_names() {
        let s = vec![
            Series::new("rfx hot", vec![(8.0, 0.2), (1024.0, 0.3)]),
            Series::new("raw hot", vec![(8.0, 0.1), (1024.0, 0.2)]),
        ];
        let svg = latency_vs_size("shm", &s).expect("plot");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("rfx hot") && svg.contains("raw hot"), "{svg}");
        let cdf = percentiles(
            "cdf",
            &[Series::new(
                "rfx",
                vec![(0.5, 0.2), (0.99, 0.4), (1.0, 3.0)],
            )],
        )
        .expect("cdf");
        assert!(cdf.contains("99%"), "{cdf}");
        let t = throughput(
            "t",
            &[Series::new("shm", vec![(1.0, 4e6), (2.0, 1.4e6)])],
            2e6,
        )
        .expect("throughput");
        assert!(t.contains("goal 2 M/s"));
        let b = stacked_bars(
            "cold",
            "ms",
            &[Bar {
                label: "shm".into(),
                segments: vec![("spawn".into(), 1.5), ("connect".into(), 2.0)],
            }],
        )
        .expect("bars");
        assert!(b.contains("spawn") && b.contains("3.50"), "{b}");
        let g = grid(
            "coll",
            &[("bcast".into(), s.clone()), ("empty".into(), vec![])],
            2,
        )
        .expect("grid");
        assert!(g.contains("bcast") && g.contains("empty (no data)"));
    }
}
