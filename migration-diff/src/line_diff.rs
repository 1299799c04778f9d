//! A line diff with full context (longest common subsequence), enough for
//! function bodies and table definitions of a few hundred lines.

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both versions.
    Same(&'a str),
    /// Only in the old version.
    Removed(&'a str),
    /// Only in the new version.
    Added(&'a str),
}

/// Every line of `old` and `new` in order, marked same, removed or added.
pub fn diff<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

/// The diff as the body of a markdown `diff` block: `' '`, `-` or `+`, then the line.
pub fn unified(old: &str, new: &str) -> String {
    let mut out = String::new();
    for line in diff(old, new) {
        let (mark, text) = match line {
            Line::Same(t) => (' ', t),
            Line::Removed(t) => ('-', t),
            Line::Added(t) => ('+', t),
        };
        out.push(mark);
        out.push_str(text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_changes_and_keeps_context() {
        assert_eq!(unified("a\nb\nc\n", "a\nB\nc\nd\n"), " a\n-b\n+B\n c\n+d\n");
    }

    #[test]
    fn identical_texts_have_no_markers() {
        assert!(
            diff("x\ny", "x\ny")
                .iter()
                .all(|l| matches!(l, Line::Same(_)))
        );
    }

    #[test]
    fn empty_sides() {
        assert_eq!(unified("", "a\n"), "+a\n");
        assert_eq!(unified("a\n", ""), "-a\n");
    }
}
