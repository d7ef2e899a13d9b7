//! Detection's figures (`crate::figure`): both populations' score histograms
//! with the threshold marked, the ROC curve with its AUROC in the legend, and a
//! training-set scan's per-class numbers.

use super::roc::{Histogram, Separation};
use super::scan::ClassScan;
use crate::figure::{Chart, Figure, Labels, Mark, Marker, Series, style};

/// `clean` and `poisoned` name the two populations in the legend; the marker
/// names the threshold and what it flags.
pub fn histogram_figure(title: &str, score: &str, h: &Histogram, names: [&str; 2], marker: Option<Marker>) -> Figure {
    let series = vec![
        Series::histogram(
            format!("{} ({})", names[0], h.clean.iter().sum::<usize>()),
            &h.edges,
            &h.clean,
            style::CLEAN,
        ),
        Series::histogram(
            format!("{} ({})", names[1], h.poisoned.iter().sum::<usize>()),
            &h.edges,
            &h.poisoned,
            style::POISON,
        ),
    ];
    let mut chart = Chart::new(Labels::new(title, score, "images"), series);
    let highest = h.clean.iter().chain(&h.poisoned).copied().max().unwrap_or(0);
    chart.y = Some((0.0, (highest.max(1) as f64) * 1.1));
    chart.markers.extend(marker);
    Figure::Chart(chart)
}

/// A detector's histograms: clean against triggered inputs, its threshold marked.
pub fn separation_histogram(title: &str, score: &str, s: &Separation) -> Figure {
    let label = format!("threshold {:.3}: TPR {:.1} %, FPR {:.1} %", s.threshold, 100.0 * s.tpr, 100.0 * s.fpr);
    let marker = Marker { x: s.threshold, label };
    histogram_figure(title, score, &s.histogram, ["clean", "triggered"], Some(marker))
}

/// The ROC curve, its AUROC in the legend, beside chance's diagonal.
pub fn roc_figure(title: &str, s: &Separation) -> Figure {
    let curve = s.roc.iter().map(|p| (100.0 * p.fpr, 100.0 * p.tpr)).collect();
    let series = vec![
        Series::line(format!("ROC (AUROC {:.3})", s.auroc), curve, style::POISON),
        Series::line("chance (AUROC 0.5)", vec![(0.0, 0.0), (100.0, 100.0)], style::MUTED),
    ];
    let mut chart = Chart::new(Labels::new(title, "false positive rate (%)", "true positive rate (%)"), series);
    chart.y = Some((0.0, 100.0));
    Figure::Chart(chart)
}

/// Which number of a class a series shows.
type Pick = fn(&ClassScan) -> f64;

/// A scan's per-class TPR, FPR and AUROC (classes without poison have no TPR
/// or AUROC: those points are left out).
pub fn classes_figure(title: &str, classes: &[ClassScan]) -> Figure {
    let picks: [(&str, Pick, _); 3] = [
        ("TPR (%)", |c| c.tpr, style::POISON),
        ("FPR (%)", |c| c.fpr, style::CLEAN),
        ("AUROC (%)", |c| c.auroc, style::REHAB),
    ];
    let series = picks
        .into_iter()
        .map(|(name, value, colour)| {
            let points = classes.iter().map(|c| (c.class as f64, 100.0 * value(c))).filter(|p| p.1.is_finite());
            Series { name: name.into(), points: points.collect(), colour, mark: Mark::LinePoints }
        })
        .collect();
    let mut chart = Chart::new(Labels::new(title, "class (as trained)", "share (%)"), series);
    chart.y = Some((0.0, 100.0));
    Figure::Chart(chart)
}
