//! Result tables, printed as Markdown so a run can be pasted into `BENCHMARKS.md`.

use std::fmt;

/// A titled table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            write!(f, "|")?;
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                write!(f, " {cell:<width$} |")?;
            }
            writeln!(f)
        };
        writeln!(f, "{}", self.title)?;
        writeln!(f)?;
        line(f, &self.header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// A target's measured value with `met` / `MISSED`; the value alone when it could not be
/// judged.
pub fn verdict(value: &str, met: Option<bool>) -> String {
    match met {
        Some(true) => format!("{value}: met"),
        Some(false) => format!("{value}: MISSED"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_markdown() {
        let mut t = Table::new("fleet", &["metric", "value"]);
        t.row(vec!["p50".into(), "1.5 ms".into()]);
        let text = t.to_string();
        assert_eq!(
            text,
            "fleet\n\n| metric | value  |\n| ------ | ------ |\n| p50    | 1.5 ms |\n"
        );
    }
}
