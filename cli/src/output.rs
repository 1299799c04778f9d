//! How results reach the terminal: aligned text tables for people, JSON for
//! scripts (`--json`). Every command prints through here.

use serde_json::Value;

/// A text table: a header row and data rows, columns padded to align.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as text: headers in capitals, a two-space gutter, no
    /// trailing spaces. An empty table prints its headers and `(none)`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.trim_end().to_string()
        };
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_uppercase()).collect();
        let mut out = line(&headers);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        if self.rows.is_empty() {
            out.push_str("(none)\n");
        }
        out
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value always serialises")
    );
}

/// Shortens `text` to at most `max` characters (an ellipsis marks the cut) and
/// shows line breaks as `\n`, so one value stays on one table line.
pub fn clip(text: &str, max: usize) -> String {
    let flat = text.replace('\n', "\\n");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `-` for a missing value.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["id", "status"]);
        t.row(vec!["a".into(), "Running".into()]);
        t.row(vec!["longer-id".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID         STATUS\na          Running\nlonger-id\n"
        );
    }

    #[test]
    fn empty_table_says_none() {
        assert_eq!(Table::new(&["id"]).render(), "ID\n(none)\n");
    }

    #[test]
    fn clip_cuts_long_text_and_flattens_lines() {
        assert_eq!(clip("a\nb", 10), "a\\nb");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
