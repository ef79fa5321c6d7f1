//! Output people read or look at: CSV files and SVG plots.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn ensure_parent(path: &Path) -> Result<(), ReportError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| write_err(path, e)),
        None => Ok(()),
    }
}

/// Writes a CSV file with a header row.
pub fn write_csv<R: AsRef<[String]>>(
    path: &Path,
    header: &[&str],
    rows: &[R],
) -> Result<(), ReportError> {
    ensure_parent(path)?;
    let mut w = csv::Writer::from_path(path).map_err(|e| write_err(path, e))?;
    w.write_record(header).map_err(|e| write_err(path, e))?;
    for r in rows {
        w.write_record(r.as_ref()).map_err(|e| write_err(path, e))?;
    }
    w.flush().map_err(|e| write_err(path, e))
}

/// Writes JSON, pretty-printed.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    ensure_parent(path)?;
    let text = serde_json::to_string_pretty(value).map_err(|e| write_err(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| write_err(path, e))
}

/// A named series of points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Per-point labels drawn beside the points (empty for none).
    pub labels: Vec<String>,
    /// Draw a connecting line (else markers only).
    pub line: bool,
    pub color: RGBColor,
}

/// A simple XY chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range, or fitted to the data when `None`.
    pub y_range: Option<(f64, f64)>,
}

/// Colours for series, in order.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Renders `chart` to an SVG file.
pub fn plot_svg(path: &Path, chart: &Chart) -> Result<(), ReportError> {
    ensure_parent(path)?;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| write_err(path, e))?;
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = bounds(all().map(|p| p.0));
    let (y0, y1) = chart.y_range.unwrap_or_else(|| bounds(all().map(|p| p.1)));
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| write_err(path, e))?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .draw()
        .map_err(|e| write_err(path, e))?;
    for s in &chart.series {
        let color = s.color;
        if s.line {
            ctx.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| write_err(path, e))?
            .label(&s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| write_err(path, e))?;
        } else {
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 6, color.filled())))
                .map_err(|e| write_err(path, e))?
                .label(&s.name)
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        }
        for (p, label) in s.points.iter().zip(&s.labels) {
            ctx.draw_series(std::iter::once(Text::new(
                label.clone(),
                (p.0, p.1),
                ("sans-serif", 13).into_font().color(&color),
            )))
            .map_err(|e| write_err(path, e))?;
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| write_err(path, e))?;
    root.present().map_err(|e| write_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_csv_and_svg() {
        let dir = std::env::temp_dir().join(format!("adacompress-report-{}", std::process::id()));
        let csv_path = dir.join("a.csv");
        write_csv(
            &csv_path,
            &["x", "y"],
            &[vec!["1".to_string(), "2".to_string()]],
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&csv_path).unwrap(), "x,y\n1,2\n");
        let svg = dir.join("a.svg");
        let chart = Chart {
            title: "t".into(),
            x_label: "bytes".into(),
            y_label: "agreement".into(),
            series: vec![Series {
                name: "fixed".into(),
                points: vec![(1.0, 0.5), (2.0, 0.9)],
                labels: vec!["q5".into(), "q95".into()],
                line: true,
                color: PALETTE[0],
            }],
            y_range: Some((0.0, 1.0)),
        };
        plot_svg(&svg, &chart).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("q95") && text.contains("fixed"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
