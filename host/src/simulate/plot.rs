//! PNG plots of a run: provisioning time against cluster index (with a moving average), and queue depth over time.
//!
//! Drawn with plotters' bitmap backend; text uses DejaVu Sans, embedded in the
//! binary (host/assets/fonts, Bitstream Vera license beside it) so plots look
//! the same on any machine without a font lookup.

use super::stats::moving_average;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1200, 600);

/// A plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What failed.
    pub message: String,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font always parses; a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.display().to_string(),
        message,
    }
}

fn upper(max: f64) -> f64 {
    if max <= 0.0 { 1.0 } else { max * 1.1 }
}

/// Provisioning seconds of each provisioned cluster by creation index, with a
/// trailing moving average over `window` clusters.
pub fn provisioning(path: &Path, series: &[(usize, f64)], window: usize) -> Result<(), PlotError> {
    register_font();
    let e = err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let n = series.last().map_or(1, |(i, _)| i + 1);
    let ymax = upper(series.iter().map(|(_, s)| *s).fold(0.0, f64::max));
    let mut chart = ChartBuilder::on(&root)
        .caption("Cluster provisioning time", ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0..n, 0.0..ymax)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("cluster index (creation order)")
        .y_desc("seconds")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(
            series
                .iter()
                .map(|(i, s)| Circle::new((*i, *s), 2, BLUE.mix(0.5).filled())),
        )
        .map_err(|x| e(x.to_string()))?
        .label("one cluster")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    let values: Vec<f64> = series.iter().map(|(_, s)| *s).collect();
    let avg = moving_average(&values, window);
    chart
        .draw_series(LineSeries::new(
            series.iter().zip(avg).map(|((i, _), a)| (*i, a)),
            RED.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?
        .label(format!("moving average ({window} clusters)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Total workqueue depth over time.
pub fn queue_depth(path: &Path, series: &[(f64, u64)]) -> Result<(), PlotError> {
    register_font();
    let e = err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let tmax = upper(series.last().map_or(0.0, |(t, _)| *t));
    let dmax = series.iter().map(|(_, d)| *d).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(&root)
        .caption("Workqueue depth (all controllers)", ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..tmax, 0..(dmax + dmax / 10 + 1))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("keys waiting")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            series.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
    }

    #[test]
    fn plots_are_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("provisioning.png");
        let series: Vec<(usize, f64)> = (0..50).map(|i| (i, 10.0 + (i % 7) as f64)).collect();
        provisioning(&p, &series, 5).unwrap();
        assert!(png(&p));
        let q = dir.path().join("queue.png");
        queue_depth(&q, &[(0.0, 0), (1.0, 12), (2.0, 3)]).unwrap();
        assert!(png(&q));
        // Empty runs still plot (an interrupted run with nothing provisioned).
        provisioning(&p, &[], 1).unwrap();
        queue_depth(&q, &[]).unwrap();
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let e = provisioning(Path::new("/nonexistent/dir/p.png"), &[(0, 1.0)], 1).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/p.png"), "{e}");
    }
}
