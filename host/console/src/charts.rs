//! The three panels of deploy/kibana as SVG, drawn by plotters: events
//! per tool over time (stacked areas), severity (a donut), top namespaces
//! and pods (horizontal bars). The numbers behind every chart are also in
//! the page as a table (for screen readers, and for tests that read the
//! DOM).

use plotters::prelude::*;

/// A chart's label: what may appear inside SVG text as-is (names of tools,
/// namespaces, pods and severities are DNS-like; anything else is
/// replaced, so no index content becomes markup).
pub(crate) fn label(text: &str) -> String {
    text.chars()
        .take(48)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | ' ') { c } else { '?' })
        .collect()
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(crate) fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// CSS hex of [`color`], for legends in HTML.
pub(crate) fn css_color(index: usize) -> String {
    let RGBColor(r, g, b) = color(index);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn drawn(result: Result<(), String>, svg: String, what: &str) -> String {
    match result {
        Ok(()) => svg,
        Err(e) => {
            tracing::warn!("drawing {what}: {e}");
            String::new()
        }
    }
}

/// Stacked areas: `series[i]` = (name, count per bucket), buckets labelled
/// by `buckets`. The top of each band is the running total.
pub(crate) fn stacked_area(buckets: &[String], series: &[(String, Vec<u64>)]) -> String {
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (720, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = buckets.len().max(2);
        let mut totals = vec![vec![0u64; n]; series.len()];
        for (i, (_, counts)) in series.iter().enumerate() {
            for (b, count) in counts.iter().enumerate().take(n) {
                totals[i][b] = count + if i > 0 { totals[i - 1][b] } else { 0 };
            }
        }
        let top = totals.last().and_then(|t| t.iter().max().copied()).unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0..(n - 1), 0u64..(top + top / 10 + 1))
            .map_err(|e| e.to_string())?;
        let step = (n / 6).max(1);
        chart
            .configure_mesh()
            // A tick per bucket, a label on every `step`th.
            .x_labels(n)
            .x_label_formatter(&|i| {
                if i % step == 0 { buckets.get(*i).cloned().unwrap_or_default() } else { String::new() }
            })
            .label_style(("sans-serif", 14))
            .y_desc("events")
            .draw()
            .map_err(|e| e.to_string())?;
        // The highest band first, so each lower one is drawn over it.
        for (i, band) in totals.iter().enumerate().rev() {
            let color = color(i);
            chart
                .draw_series(
                    AreaSeries::new(band.iter().enumerate().map(|(b, v)| (b, *v)), 0, color.mix(0.85))
                        .border_style(color),
                )
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    })();
    drawn(result, svg, "events over time")
}

/// A donut of `parts` (name, count).
pub(crate) fn donut(parts: &[(String, u64)]) -> String {
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (320, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let parts: Vec<&(String, u64)> = parts.iter().filter(|(_, n)| *n > 0).collect();
        if parts.is_empty() {
            return root.present().map_err(|e| e.to_string());
        }
        let sizes: Vec<f64> = parts.iter().map(|(_, n)| *n as f64).collect();
        let colors: Vec<RGBColor> = (0..parts.len()).map(color).collect();
        let labels: Vec<String> = parts.iter().map(|(name, _)| label(name)).collect();
        let center = (160, 140);
        let radius = 110.0;
        let mut pie = Pie::new(&center, &radius, &sizes, &colors, &labels);
        pie.start_angle(-90.0);
        pie.donut_hole(60.0);
        pie.label_style(("sans-serif", 13).into_font().color(&BLACK));
        root.draw(&pie).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })();
    drawn(result, svg, "severity donut")
}

/// Horizontal bars of `parts` (name, count), largest first.
pub(crate) fn bars(parts: &[(String, u64)]) -> String {
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let height = 40 + 30 * parts.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (380, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let top = parts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
        let rows = parts.len().max(1);
        let names: Vec<String> = parts.iter().map(|(name, _)| label(name)).collect();
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(150)
            .build_cartesian_2d(0u64..(top + top / 10 + 1), 0f64..rows as f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .label_style(("sans-serif", 14))
            .y_labels(rows * 2 + 1)
            .y_label_formatter(&|y| {
                // A label at the middle of each bar (row i spans i..i+1).
                let row = y - 0.5;
                if (row - row.round()).abs() < 1e-6 && row >= 0.0 && (row.round() as usize) < rows {
                    names.get(rows - 1 - row.round() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(parts.iter().enumerate().map(|(i, (_, n))| {
                let y = (rows - 1 - i) as f64;
                // The legend's colour for the same row.
                Rectangle::new([(0, y + 0.15), (*n, y + 0.85)], color(i).filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })();
    drawn(result, svg, "top namespaces")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels_and_no_foreign_markup() {
        let area = stacked_area(
            &["10:00".into(), "10:05".into(), "10:10".into()],
            &[("falco".into(), vec![1, 4, 2]), ("tetragon".into(), vec![0, 3, 1])],
        );
        assert!(area.starts_with("<svg") && area.contains("10:05"), "{area}");
        let donut = donut(&[("high".into(), 3), ("<script>".into(), 1)]);
        assert!(donut.contains("high") && !donut.contains("<script>"), "{donut}");
        let bars = bars(&[("ctem-test".into(), 9), ("default".into(), 2)]);
        assert!(bars.contains("ctem-test") && bars.contains("default"), "{bars}");
    }
}
