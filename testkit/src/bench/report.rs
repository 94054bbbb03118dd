//! The benchmark's output: sections of rows, each a figure with an optional target, rendered as
//! an aligned plain-text table (Markdown-compatible, so it pastes into docs/BENCHMARKS.md) or as
//! JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use super::stores::StoreKind;

/// What a figure measures in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    PerSecond,
    Micros,
    MegabytesPerSecond,
    Mebibytes,
    Ratio,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::PerSecond => "/s",
            Unit::Micros => "µs",
            Unit::MegabytesPerSecond => "MB/s",
            Unit::Mebibytes => "MiB",
            Unit::Ratio => "x",
        }
    }

    /// Enough digits to compare, not more than the noise deserves.
    fn format(self, value: f64) -> String {
        let digits = match value.abs() {
            v if v >= 100.0 => 0,
            v if v >= 10.0 => 1,
            v if v >= 1.0 => 2,
            _ => 3,
        };
        let sep = if self == Unit::Ratio { "" } else { " " };
        format!("{value:.digits$}{sep}{}", self.suffix())
    }
}

/// The bound a figure must respect.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub value: f64,
    pub unit: Unit,
    pub target: Option<Target>,
    /// Sample count and side figures (p99, rates) that help read the value.
    pub note: String,
}

impl Row {
    pub fn new(label: impl Into<String>, value: f64, unit: Unit) -> Self {
        Self {
            label: label.into(),
            value,
            unit,
            target: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// `Some(true)` if the figure meets its target, `None` if it has none.
    pub fn passes(&self) -> Option<bool> {
        self.target.map(|t| match t {
            Target::AtMost(limit) => self.value <= limit,
            Target::AtLeast(limit) => self.value >= limit,
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::AtMost(limit)) => format!("<= {}", self.unit.format(limit)),
            Some(Target::AtLeast(limit)) => format!(">= {}", self.unit.format(limit)),
        }
    }
}

/// A titled group of rows.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

/// Everything one run measured, with what it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Which store every deployment of the run used (`"store"` in `--json`).
    pub store: StoreKind,
    /// Free-text lines about the run: server binary, store, work directory, mode.
    pub context: Vec<String>,
    pub sections: Vec<Section>,
}

impl Report {
    /// Targets met and targets set.
    pub fn score(&self) -> (usize, usize) {
        let verdicts = self.rows().filter_map(Row::passes);
        verdicts.fold((0, 0), |(met, set), ok| (met + ok as usize, set + 1))
    }

    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.sections.iter().flat_map(|s| s.rows.iter())
    }

    /// The table: one Markdown table per section, columns padded to line up.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        for line in &self.context {
            let _ = writeln!(out, "{line}");
        }
        out.push_str(&render_sections(&self.sections));
        let (met, set) = self.score();
        let _ = writeln!(out, "\n{met} of {set} targets met.");
        out
    }
}

/// Each section as a titled Markdown table, every table with the same column widths so that
/// figures line up down the whole report.
pub fn render_sections(sections: &[Section]) -> String {
    let mut out = String::new();
    let header = ["measurement", "figure", "target", "result", "notes"];
    let cells: Vec<Vec<[String; 5]>> = sections
        .iter()
        .map(|s| {
            s.rows
                .iter()
                .map(|r| {
                    let verdict = match r.passes() {
                        None => "",
                        Some(true) => "pass",
                        Some(false) => "MISS",
                    };
                    [
                        r.label.clone(),
                        r.unit.format(r.value),
                        r.target_text(),
                        verdict.to_owned(),
                        r.note.clone(),
                    ]
                })
                .collect()
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in cells.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: [&str; 5]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .enumerate()
            // Figures and targets right-aligned so the decimal points line up.
            .map(|(i, (c, w))| match i {
                1 | 2 => format!("{c:>w$}"),
                _ => format!("{c:<w$}"),
            })
            .collect();
        format!("| {} |", padded.join(" | ")).trim_end().to_owned()
    };
    for (section, rows) in sections.iter().zip(&cells) {
        let _ = writeln!(out, "\n{}\n", section.title);
        let _ = writeln!(out, "{}", line(header));
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        for row in rows {
            let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_rendering() {
        let fast = Row::new("p50", 4.2, Unit::Ms).target(Target::AtMost(5.0));
        let slow = Row::new("rate", 150.0, Unit::PerSecond).target(Target::AtLeast(200.0));
        let free = Row::new("rss", 3.5, Unit::Mebibytes);
        assert_eq!(fast.passes(), Some(true));
        assert_eq!(slow.passes(), Some(false));
        assert_eq!(free.passes(), None);
        let report = Report {
            store: StoreKind::Sqlite,
            context: vec!["ctx".into()],
            sections: vec![Section {
                title: "S".into(),
                rows: vec![fast, slow, free],
            }],
        };
        let table = report.to_table();
        assert!(table.contains("4.20 ms"));
        assert!(table.contains(">= 200 /s"));
        assert!(table.contains("MISS"));
        assert!(table.ends_with("1 of 2 targets met.\n"));
    }
}
