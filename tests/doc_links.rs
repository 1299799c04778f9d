//! Every relative link in the project's Markdown documents resolves: the
//! file or directory it names exists (relative to the document), and an
//! anchor (`#section`, alone or after a file) names a heading of the target
//! document, as GitHub writes heading anchors. Absolute URLs (`http:`,
//! `https:`, `mailto:`, any `scheme:`) are not checked. No database needed.
//!
//! Documents: every `*.md` at the repository root and one directory down
//! (README.md, RELIABILITY.md, BENCHMARKS.md, docs/, migrations/, schema/,
//! pg-stress/, ...), never under `target/` or hidden directories. Links are
//! inline (`[text](target)`, `![alt](target)`) and reference definitions
//! (`[name]: target`), outside fenced code blocks and inline code.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `*.md` at the root and one directory down, sorted.
fn documents(root: &Path) -> Vec<PathBuf> {
    let is_md = |p: &Path| p.is_file() && p.extension().is_some_and(|e| e == "md");
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if is_md(&path) {
            out.push(path);
        } else if path.is_dir() && !name.starts_with('.') && name != "target" {
            for inner in fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                if is_md(&inner) {
                    out.push(inner);
                }
            }
        }
    }
    out.sort();
    out
}

/// GitHub's anchor for a heading's text: lowercase; every character but
/// letters, digits (Unicode ones included), spaces, hyphens and underscores
/// removed; each space a hyphen.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of headings in order, duplicates numbered as GitHub does
/// (`a`, `a-1`, `a-2`; a generated name already taken moves on).
fn anchors<'a>(headings: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for heading in headings {
        let original = slug(&plain_text(heading));
        let mut anchor = original.clone();
        while occurrences.contains_key(&anchor) {
            let n = occurrences.get_mut(&original).unwrap();
            *n += 1;
            anchor = format!("{original}-{n}");
        }
        occurrences.insert(anchor.clone(), 0);
        out.push(anchor);
    }
    out
}

/// A heading's text as rendered: links and images reduced to their text,
/// code backticks and emphasis asterisks dropped.
fn plain_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        match link_at(rest, open) {
            Some((text, _, end)) => {
                let before = rest[..open].strip_suffix('!').unwrap_or(&rest[..open]);
                out.push_str(before);
                out.push_str(text);
                rest = &rest[end..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out.replace(['`', '*'], "")
}

/// An inline link starting with the `[` at `open`: its text, its target
/// (angle brackets and title removed) and the byte offset just past it.
fn link_at(s: &str, open: usize) -> Option<(&str, &str, usize)> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    let close = loop {
        match bytes.get(i)? {
            b'\\' => i += 1,
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    break i;
                }
            }
            _ => {}
        }
        i += 1;
    };
    if bytes.get(close + 1) != Some(&b'(') {
        return None;
    }
    let start = close + 2;
    let mut depth = 1usize;
    let mut j = start;
    while depth > 0 {
        match bytes.get(j)? {
            b'\\' => j += 1,
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        j += 1;
    }
    Some((&s[open + 1..close], destination(&s[start..j - 1]), j))
}

/// A link destination without its title and angle brackets.
fn destination(raw: &str) -> &str {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('<') {
        return inner.split('>').next().unwrap_or("");
    }
    raw.split_whitespace().next().unwrap_or("")
}

/// The line with its inline code spans blanked out (same length, so byte
/// offsets stay valid). A backtick run opens a span closed by a run of the
/// same length; an unclosed run is literal.
fn without_code_spans(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = line.as_bytes().to_vec();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let mut j = i + run;
        let mut closed = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if other == run {
                    closed = Some(j + other);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => {
                out[i..end].fill(b' ');
                i = end;
            }
            None => i += run,
        }
    }
    String::from_utf8(out).unwrap()
}

/// A document read once: its lines outside fenced code (1-based line
/// number, text with code spans blanked) and its heading anchors.
struct Document {
    prose: Vec<(usize, String)>,
    anchors: Vec<String>,
}

fn parse(text: &str) -> Document {
    let mut prose = Vec::new();
    let mut headings = Vec::new();
    let mut fence: Option<(u8, usize)> = None;
    let mut previous: Option<String> = None; // the last prose line, for setext headings
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let run_of = |c: u8| trimmed.bytes().take_while(|&b| b == c).count();
        if let Some((c, n)) = fence {
            if indent < 4 && run_of(c) >= n && trimmed.trim_end().bytes().all(|b| b == c) {
                fence = None;
            }
            previous = None;
            continue;
        }
        if indent < 4
            && let Some(c) = [b'`', b'~'].into_iter().find(|&c| run_of(c) >= 3)
        {
            fence = Some((c, run_of(c)));
            previous = None;
            continue;
        }
        let clean = without_code_spans(line);
        let setext = indent < 4
            && !trimmed.trim_end().is_empty()
            && (trimmed.trim_end().bytes().all(|b| b == b'=')
                || trimmed.trim_end().bytes().all(|b| b == b'-'));
        if setext && let Some(text) = previous.take() {
            headings.push(text);
            continue;
        }
        if indent < 4 && trimmed.starts_with('#') {
            let level = run_of(b'#');
            let after = &trimmed[level..];
            if level <= 6 && (after.is_empty() || after.starts_with([' ', '\t'])) {
                let body = after.trim();
                // An optional closing sequence of #s after a space.
                let body = match body.trim_end_matches('#') {
                    b if b.is_empty() || b.ends_with([' ', '\t']) => b.trim_end(),
                    _ => body,
                };
                headings.push(body.to_string());
                prose.push((index + 1, clean));
                previous = None;
                continue;
            }
        }
        previous = (!line.trim().is_empty()).then(|| line.trim().to_string());
        prose.push((index + 1, clean));
    }
    let anchors = anchors(headings.iter().map(String::as_str));
    Document { prose, anchors }
}

/// Every link target of a document's prose, with its line.
fn links(document: &Document) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (line_number, line) in &document.prose {
        // Reference definitions: `[name]: target`.
        let t = line.trim_start();
        if line.len() - t.len() < 4
            && t.starts_with('[')
            && !t.starts_with("[^")
            && let Some(close) = t.find(']')
            && t[close + 1..].starts_with(':')
        {
            out.push((*line_number, destination(&t[close + 2..]).to_string()));
            continue;
        }
        // Inline links: `[text](target)`; the text may begin on an earlier
        // line, so look for `](` and read the target from there.
        let mut from = 0;
        while let Some(at) = line[from..].find("](") {
            let start = from + at + 2;
            let bytes = line.as_bytes();
            let mut depth = 1usize;
            let mut j = start;
            while j < bytes.len() && depth > 0 {
                match bytes[j] {
                    b'\\' => j += 1,
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            if depth == 0 {
                out.push((*line_number, destination(&line[start..j - 1]).to_string()));
            }
            from = j.min(line.len()).max(start);
        }
    }
    out
}

/// `%20`-style escapes decoded (as GitHub does before resolving).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme:` before any `/`, `?` or `#`: an absolute URL, not checked.
fn is_absolute_url(target: &str) -> bool {
    match target.find(':') {
        Some(colon) => {
            let scheme = &target[..colon];
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

#[test]
fn every_relative_link_and_anchor_in_the_documents_resolves() {
    let root = root();
    let paths = documents(&root);
    for expected in [
        "README.md",
        "RELIABILITY.md",
        "BENCHMARKS.md",
        "docs/testing.md",
    ] {
        assert!(
            paths.contains(&root.join(expected)),
            "{expected} not among the documents checked: {paths:?}"
        );
    }
    let mut parsed: BTreeMap<PathBuf, Document> = BTreeMap::new();
    let mut load = |path: &Path| -> Option<Vec<String>> {
        let path = path.canonicalize().ok()?;
        if !parsed.contains_key(&path) {
            parsed.insert(path.clone(), parse(&fs::read_to_string(&path).ok()?));
        }
        Some(parsed[&path].anchors.clone())
    };

    let mut broken = Vec::new();
    let mut checked = 0;
    for path in &paths {
        let document = parse(&fs::read_to_string(path).unwrap());
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        for (line, target) in links(&document) {
            if target.is_empty() || is_absolute_url(&target) {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(percent_decode(anchor))),
                None => (target.as_str(), None),
            };
            let file = percent_decode(file.split('?').next().unwrap());
            let resolved = if file.is_empty() {
                path.clone()
            } else if let Some(from_root) = file.strip_prefix('/') {
                root.join(from_root)
            } else {
                path.parent().unwrap().join(&file)
            };
            if !resolved.exists() {
                broken.push(format!(
                    "{name}:{line}: {target}: no such file or directory"
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            // Anchors are checked in Markdown documents only (a source
            // file's `#L10` is GitHub's line anchor).
            if !(resolved.is_file() && resolved.extension().is_some_and(|e| e == "md")) {
                continue;
            }
            let anchors = load(&resolved).unwrap();
            if !anchors.contains(&anchor) {
                let close: Vec<&String> = anchors
                    .iter()
                    .filter(|a| a.starts_with(anchor.get(..4).unwrap_or(&anchor)))
                    .collect();
                broken.push(format!(
                    "{name}:{line}: {target}: no heading with anchor #{anchor} (similar: {close:?})"
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("Failover, multi-host URLs and crashes"),
        "failover-multi-host-urls-and-crashes"
    );
    assert_eq!(
        slug(
            "Network latency: duroxide-pg vs the published duroxide-pg 0.1.38 (delay proxy for both)"
        ),
        "network-latency-duroxide-pg-vs-the-published-duroxide-pg-0138-delay-proxy-for-both"
    );
    assert_eq!(slug("snake_case and 100 %"), "snake_case-and-100-");
    // Unicode letters stay; a dash between spaces leaves two hyphens.
    assert_eq!(slug("Überblick — Café"), "überblick--café");
    assert_eq!(
        anchors(["The dashboard: `duroxide-pg ui`"]),
        ["the-dashboard-duroxide-pg-ui"]
    );
    assert_eq!(
        anchors(["[Linked](x.md) *title*", "**Bold** and `code`"]),
        ["linked-title", "bold-and-code"]
    );
    // Duplicates are numbered; a generated name already taken moves on.
    assert_eq!(anchors(["A", "A", "A"]), ["a", "a-1", "a-2"]);
    assert_eq!(anchors(["A", "A-1", "A"]), ["a", "a-1", "a-2"]);
}

#[test]
fn links_are_found_outside_code_only() {
    let text = "# Title\n\nSee [one](a.md) and `[not](b.md)` and [two](c.md#x \"t\").\n\
                ```md\n[fenced](d.md)\n```\n[ref]: e.md\nSetext\n---\n~~~\n[tilde](f.md)\n~~~\n\
                [multi\nline](g.md) ``[x](h.md)``\n";
    let document = parse(text);
    let found: Vec<String> = links(&document).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["a.md", "c.md#x", "e.md", "g.md"]);
    assert_eq!(document.anchors, ["title", "setext"]);
    assert!(is_absolute_url("https://x.org/a#b") && is_absolute_url("mailto:a@b"));
    assert!(!is_absolute_url("../a.md#b:c") && !is_absolute_url("#x"));
}
