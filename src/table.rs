//! Plain tables rendered as aligned text, CSV or Markdown (CLI output, reports and
//! exports share them).

use crate::engine::metrics::Metrics;
use crate::engine::swap::SwapRow;
use crate::engine::uncertainty::Rate;

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

    /// The table without its CSV-only columns (an interval's ends, headed
    /// `…_lo` and `…_hi`: a person reads them in the CSV, not beside each number).
    fn for_reading(&self) -> Table {
        let shown: Vec<bool> = self.headers.iter().map(|h| !h.ends_with("_lo") && !h.ends_with("_hi")).collect();
        let keep = |cells: &[String]| -> Vec<String> {
            let shown = |i: usize| shown.get(i).copied().unwrap_or(true);
            cells.iter().enumerate().filter(|(i, _)| shown(*i)).map(|(_, c)| c.clone()).collect()
        };
        Table { headers: keep(&self.headers), rows: self.rows.iter().map(|r| keep(r)).collect() }
    }

    /// Columns padded to line up; text left-aligned, numbers right-aligned.
    pub fn to_text(&self) -> String {
        let table = self.for_reading();
        let widths = table.widths();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| if looks_numeric(c) { format!("{c:>w$}") } else { format!("{c:<w$}") })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(&table.headers), widths.iter().map(|&w| "─".repeat(w)).collect::<Vec<_>>().join("  ")];
        out.extend(table.rows.iter().map(|r| line(r)));
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
        let table = self.for_reading();
        let row = |cells: &[String]| {
            format!("| {} |", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
        };
        let rule = format!("|{}|", vec!["---"; table.headers.len()].join("|"));
        let mut out = vec![row(&table.headers), rule];
        out.extend(table.rows.iter().map(|r| row(r)));
        out.join("\n") + "\n"
    }
}

fn looks_numeric(cell: &str) -> bool {
    let t = cell.trim_start_matches(['+', '-']).trim_end_matches('*');
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

/// The rates of `metrics_row`, in its order.
const ROW_RATES: [Rate; 4] = [Rate::Clean, Rate::Poison, Rate::AsrNonTarget, Rate::Rehab];

/// A row of the study's metrics: name, clean, poison (ASR), ASR excluding the
/// target, rehab, then each one's 95 % interval (CSV only; empty where unknown).
pub fn metrics_row(name: &str, m: &Metrics) -> Vec<String> {
    let mut row = vec![name.to_string()];
    row.extend(ROW_RATES.map(|r| pct(r.of(m))));
    row.extend(interval_cells(ROW_RATES.map(|r| m.interval(r))));
    row
}

/// The `_lo`, `_hi` cells of each interval.
pub fn interval_cells(intervals: impl IntoIterator<Item = Option<[f64; 2]>>) -> Vec<String> {
    intervals
        .into_iter()
        .flat_map(|i| i.map_or([String::new(), String::new()], |[lo, hi]| [pct(lo), pct(hi)]))
        .collect()
}

/// The headings of `metrics_row`'s cells after the first.
pub fn metrics_headers() -> Vec<String> {
    let mut headers: Vec<String> = ["clean", "poison (ASR)", "ASR excl. target", "rehab"].map(String::from).into();
    headers.extend(interval_headers(["clean", "poison", "asr_non_target", "rehab"]));
    headers
}

/// `NAME_lo`, `NAME_hi` for each name.
pub fn interval_headers<S: std::fmt::Display>(names: impl IntoIterator<Item = S>) -> Vec<String> {
    names.into_iter().flat_map(|n| [format!("{n}_lo"), format!("{n}_hi")]).collect()
}

/// The header of `metrics_row`'s rows, under `first`.
pub fn metrics_table(first: &str) -> Table {
    let mut table = Table::new([first]);
    table.headers.extend(metrics_headers());
    table
}

/// `b − a`'s row of signed changes, each marked `*` when its 95 % interval
/// (paired where both were measured here on the same images) excludes zero;
/// the intervals in the CSV-only cells.
pub fn change_row(name: &str, a: &Metrics, b: &Metrics) -> Vec<String> {
    let mut row = vec![name.to_string()];
    row.extend(ROW_RATES.map(|r| marked_delta(r.of(b) - r.of(a), b.differs(a, r))));
    row.extend(interval_cells(ROW_RATES.map(|r| b.difference(a, r).map(|i| [i.lo, i.hi]))));
    row
}

/// A signed change, `*` after it when it is significant.
pub fn marked_delta(value: f64, significant: bool) -> String {
    format!("{}{}", delta(value), if significant { "*" } else { "" })
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
