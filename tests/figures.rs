//! Each figure kind written as SVG and PNG: both files exist, the PNG is the
//! figure's size, and the SVG holds the title, the axis labels and, where there
//! is one, the colour bar's values.

mod common;
mod svg;

use std::path::Path;
use trojanscope::figure::{
    Chart, Figure, HeatmapChart, ImageGrid, Labels, Mark, Marker, Panel, Scale, Series, Values, style,
};

/// Writes `figure` as NAME.svg and NAME.png; returns the SVG's text elements
/// after checking both files.
fn written(figure: &Figure, dir: &Path, name: &str) -> Vec<String> {
    let [svg, png] = figure.save(dir, name).unwrap();
    assert_eq!([svg, png], ["svg", "png"].map(|ext| dir.join(format!("{name}.{ext}"))));
    let text = svg::figure_svg(dir, name);
    // Panels are pixels: one embedded PNG each.
    if let Figure::Grid(grid) = figure {
        assert_eq!(text.matches("data:image/png;base64,").count(), grid.panels.len());
    }
    svg::svg_texts(&text)
}

fn has(texts: &[String], text: &str) -> bool {
    texts.iter().any(|t| t == text)
}

#[test]
fn every_figure_kind_is_written_as_svg_and_png_with_its_labels() {
    let dir = common::scratch("figures");
    let curve = |f: fn(f64) -> f64| (0..=32).map(|x| (x as f64, f(x as f64))).collect::<Vec<_>>();
    let mut chart = Chart::new(
        Labels::new("conv2 pruned by activation (Fine-Pruning)", "units pruned", "accuracy (%)"),
        vec![
            Series::line("clean", curve(|x| 98.0 - x * 0.2), style::CLEAN),
            Series::line("poison (ASR)", curve(|x| 100.0 - x * 3.0), style::POISON),
            Series::line("rehab", curve(|x| 10.0 + x * 2.0), style::REHAB),
        ],
    );
    chart.y = Some((0.0, 100.0));
    chart.markers.push(Marker { x: 20.0, label: "best DER 0.91".into() });
    let svg = written(&Figure::Chart(chart), &dir, "line");
    for label in [
        "conv2 pruned by activation (Fine-Pruning)",
        "units pruned",
        "accuracy (%)",
        "best DER 0.91",
        "poison (ASR)",
        "rehab",
    ] {
        assert!(has(&svg, label), "{label} missing from {svg:?}");
    }
    // Tick labels on both axes.
    assert!(has(&svg, "100") && has(&svg, "0") && has(&svg, "30"), "{svg:?}");

    let mut front = Series::line("Pareto front", vec![(1.0, 40.0), (2.0, 12.0), (4.0, 3.0)], style::POISON);
    front.mark = Mark::LinePoints;
    let tried = Series {
        name: "sets tried".into(),
        points: vec![(1.0, 70.0), (3.0, 30.0), (5.0, 9.0)],
        colour: style::MUTED,
        mark: Mark::Points,
    };
    let scatter = Chart::new(Labels::new("circuit search", "units ablated", "poison accuracy (%)"), vec![tried, front]);
    let svg = written(&Figure::Chart(scatter), &dir, "scatter");
    assert!(
        ["circuit search", "units ablated", "poison accuracy (%)", "Pareto front", "sets tried"]
            .iter()
            .all(|l| has(&svg, l))
    );

    let rows = ["conv1", "conv2", "fc1", "fc2"].map(String::from).to_vec();
    let mut values: Vec<f32> = (0..4 * 64).map(|i| (i % 64) as f32 * 1.5).collect();
    values[2 * 64 + 16..3 * 64].fill(f32::NAN);
    values[3 * 64 + 10..].fill(f32::NAN);
    values[32] = f32::NAN;
    let heatmap = HeatmapChart::new(
        Labels::new("patching: denoise", "unit", "layer"),
        rows,
        64,
        values,
        Scale::new(Values::Sequential { low: 0.0, high: 100.0 }, "backdoor restored (%)"),
    );
    let svg = written(&Figure::Heatmap(heatmap), &dir, "heatmap");
    for label in
        ["patching: denoise", "unit", "layer", "conv1", "fc2", "backdoor restored (%)", "0", "25", "50", "75", "100"]
    {
        assert!(has(&svg, label), "{label} missing from {svg:?}");
    }

    let scale = Scale::new(Values::Diverging { span: 0.25 }, "weight");
    let map = |seed: f32| image::RgbImage::from_fn(3, 3, |x, y| scale.colour(seed * (x as f32 - y as f32) / 8.0));
    let panels = (0..10)
        .map(|l| Panel { title: format!("label {l} · anomaly {:.2}", l as f32 / 3.0), image: map(l as f32 / 10.0) })
        .collect();
    let grid = ImageGrid {
        title: "conv1 kernels".into(),
        panels,
        columns: 5,
        scale: Some(scale),
        note: "3 × 3 kernels, one per unit".into(),
    };
    let svg = written(&Figure::Grid(grid), &dir, "grid");
    for label in
        ["conv1 kernels", "label 8 · anomaly 2.67", "weight", "−0.25", "0.00", "0.25", "3 × 3 kernels, one per unit"]
    {
        assert!(has(&svg, label), "{label} missing from {svg:?}");
    }
}

#[test]
fn detection_histograms_are_filled_bars_with_the_threshold_and_the_roc_names_its_auroc() {
    use trojanscope::engine::detect::figures::{roc_figure, separation_histogram};
    use trojanscope::engine::detect::roc::{Separation, Side};
    let dir = common::scratch("figures-detect");
    // Flagged above 0.5: 2 of 3 triggered (66.7 %) and 2 of 4 clean (50 %); 10 of
    // the 12 (clean, triggered) pairs ranked right: AUROC 0.833.
    let s = Separation::at(&[0.1, 0.2, 0.6, 0.7], &[0.8, 0.9, 0.4], Side::High, 0.5);
    let histogram = separation_histogram("SCALE-UP on the poisoned model", "consistency", &s);
    let svg = written(&histogram, &dir, "histogram");
    for label in [
        "SCALE-UP on the poisoned model",
        "consistency",
        "images",
        "clean (4)",
        "triggered (3)",
        "threshold 0.500: TPR 66.7 %, FPR 50.0 %",
    ] {
        assert!(has(&svg, label), "{label} missing from {svg:?}");
    }
    // Each population's bars: one filled, translucent outline.
    let text = svg::figure_svg(&dir, "histogram");
    let filled = text.split("<polygon").skip(1).filter(|p| p.contains("opacity=\"0.3")).count();
    assert_eq!(filled, 2, "{text}");

    let svg = written(&roc_figure("STRIP", &s), &dir, "roc");
    for label in ["ROC (AUROC 0.833)", "chance (AUROC 0.5)", "false positive rate (%)", "true positive rate (%)"] {
        assert!(has(&svg, label), "{label} missing from {svg:?}");
    }
}
