//! Plain tables rendered as aligned text, CSV or Markdown (CLI output, reports and
//! exports share them).

use crate::engine::metrics::Metrics;
use crate::engine::swap::SwapRow;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        widths
    }

    /// Columns padded to line up; text left-aligned, numbers right-aligned.
    pub fn to_text(&self) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| if looks_numeric(c) { format!("{c:>w$}") } else { format!("{c:<w$}") })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(&self.headers), widths.iter().map(|&w| "─".repeat(w)).collect::<Vec<_>>().join("  ")];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n") + "\n"
    }

    pub fn to_csv(&self) -> String {
        std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|r| r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    pub fn to_markdown(&self) -> String {
        let row = |cells: &[String]| {
            format!("| {} |", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
        };
        let rule = format!("|{}|", vec!["---"; self.headers.len()].join("|"));
        let mut out = vec![row(&self.headers), rule];
        out.extend(self.rows.iter().map(|r| row(r)));
        out.join("\n") + "\n"
    }
}

fn looks_numeric(cell: &str) -> bool {
    let t = cell.trim_start_matches(['+', '-']);
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) { format!("\"{}\"", cell.replace('"', "\"\"")) } else { cell.to_string() }
}

/// A percentage with two decimals, as the study reports them.
pub fn pct(value: f64) -> String {
    format!("{value:.2}")
}

/// A signed change in percentage points.
pub fn delta(value: f64) -> String {
    format!("{value:+.2}")
}

/// A row of the study's metrics: name, clean, poison (ASR), ASR excluding the target, rehab.
pub fn metrics_row(name: &str, m: &Metrics) -> Vec<String> {
    vec![name.to_string(), pct(m.clean_acc), pct(m.poison_acc), pct(m.asr_non_target), pct(m.rehab_acc)]
}

/// The header of `metrics_row`'s rows, under `first`.
pub fn metrics_table(first: &str) -> Table {
    Table::new([first, "clean", "poison (ASR)", "ASR excl. target", "rehab"])
}

/// One row per unit of a sweep.
pub fn sweep_table(rows: &[crate::engine::sweep::SweepRow]) -> Table {
    let mut table = metrics_table("unit");
    for r in rows {
        table.rows.push(metrics_row(&format!("{}:{}", r.layer, r.unit), &r.metrics));
    }
    table
}

/// A layer-swap table: one row per subset of layers copied from the donor.
pub fn swap_table(rows: &[SwapRow]) -> Table {
    let mut table = metrics_table("layers swapped");
    for r in rows {
        let name = if r.layers.is_empty() {
            "none".to_string()
        } else {
            r.layers.iter().map(|l| format!("{l} ({})", l.torch_index())).collect::<Vec<_>>().join(" + ")
        };
        table.rows.push(metrics_row(&name, &r.metrics));
    }
    table
}
