//! Line charts as standalone SVG: categorical x axis, one line per series with a legend. The
//! y axis is linear from zero, or logarithmic when the values span more than
//! `LOG_SCALE_RATIO` (peers 30x apart stay readable). Small on purpose: the report needs
//! lines, ticks and labels only.

use std::fmt::Write;

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 320.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Largest over smallest positive value beyond which the y axis is logarithmic.
const LOG_SCALE_RATIO: f64 = 20.0;

/// How values map to the plot's height.
#[derive(Debug, PartialEq)]
enum Scale {
    /// From 0 to `top`, ticks every `step`.
    Linear { top: f64, step: f64 },
    /// From 10^`lo` to 10^`hi`, ticks at 1, 2 and 5 times each power of ten.
    Log { lo: i32, hi: i32 },
}

impl Scale {
    fn of(values: impl Iterator<Item = f64> + Clone) -> Scale {
        let max = values.clone().fold(0.0, f64::max);
        let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        if max > 0.0 && max / min > LOG_SCALE_RATIO {
            return Scale::Log {
                lo: min.log10().floor() as i32,
                hi: max.log10().ceil() as i32,
            };
        }
        let step = tick_step(if max > 0.0 { max } else { 1.0 });
        Scale::Linear {
            top: (max / step).ceil().max(1.0) * step,
            step,
        }
    }

    /// Where `v` sits, 0 at the bottom and 1 at the top (log: values at or below zero at 0).
    fn fraction(&self, v: f64) -> f64 {
        match *self {
            Scale::Linear { top, .. } => v / top,
            Scale::Log { lo, hi } if v > 0.0 => {
                ((v.log10() - lo as f64) / (hi - lo).max(1) as f64).max(0.0)
            }
            Scale::Log { .. } => 0.0,
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Scale::Linear { top, step } => {
                let mut ticks = Vec::new();
                let mut v = 0.0;
                while v <= top + step / 2.0 {
                    ticks.push(v);
                    v += step;
                }
                ticks
            }
            Scale::Log { lo, hi } => (lo..=hi)
                .flat_map(|p| {
                    let base = 10f64.powi(p);
                    let each: &[f64] = if p == hi { &[1.0] } else { &[1.0, 2.0, 5.0] };
                    each.iter().map(move |m| m * base).collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}

/// One line: a name and a value (or a gap) per x category.
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A tick step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart as an SVG document.
pub fn line_chart(
    title: &str,
    x_title: &str,
    y_title: &str,
    xs: &[String],
    series: &[Series],
) -> String {
    let scale = Scale::of(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .copied(),
    );
    let y_title = match scale {
        Scale::Log { .. } => format!("{y_title} (log scale)"),
        Scale::Linear { .. } => y_title.to_string(),
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_at = |i: usize| {
        if xs.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (xs.len() - 1) as f64
        }
    };
    let y_at = |v: f64| TOP + plot_h * (1.0 - scale.fraction(v));
    let mut svg = String::new();
    let w = &mut svg;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        w,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for v in scale.ticks() {
        let y = y_at(v);
        let _ = writeln!(
            w,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            label(v)
        );
    }
    for (i, x) in xs.iter().enumerate() {
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_at(i),
            TOP + plot_h + 18.0,
            escape(x)
        );
    }
    let _ = writeln!(
        w,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>"##,
        TOP + plot_h
    );
    let _ = writeln!(
        w,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h
    );
    let _ = writeln!(
        w,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(x_title)
    );
    let _ = writeln!(
        w,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&y_title)
    );
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (x_at(i), y_at(v))))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            w,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in &points {
            let _ = writeln!(
                w,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
            );
        }
        let ly = TOP + 10.0 + 20.0 * k as f64;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            w,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
            lx + 18.0
        );
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(43_000.0), 10_000.0);
    }

    #[test]
    fn wide_ranges_get_a_log_axis() {
        let linear = Scale::of([10.0, 200.0].into_iter());
        assert_eq!(
            linear,
            Scale::Linear {
                top: 200.0,
                step: 50.0
            }
        );
        let log = Scale::of([3_000.0, 150_000.0, 0.0].into_iter());
        assert_eq!(log, Scale::Log { lo: 3, hi: 6 });
        assert_eq!(log.fraction(1_000.0), 0.0);
        assert!((log.fraction(100_000.0) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(log.ticks().first(), Some(&1_000.0));
        assert_eq!(log.ticks().last(), Some(&1_000_000.0));
        let svg = line_chart(
            "t",
            "clients",
            "ops/s",
            &["1".into(), "4".into()],
            &[Series {
                name: "a".into(),
                values: vec![Some(3_000.0), Some(150_000.0)],
            }],
        );
        assert!(svg.contains("ops/s (log scale)"));
    }

    #[test]
    fn chart_has_a_line_and_a_legend_entry_per_series() {
        let svg = line_chart(
            "t <1>",
            "clients",
            "ops/s",
            &["1".into(), "4".into()],
            &[
                Series {
                    name: "a".into(),
                    values: vec![Some(1.0), Some(2.0)],
                },
                Series {
                    name: "b".into(),
                    values: vec![None, Some(3.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
