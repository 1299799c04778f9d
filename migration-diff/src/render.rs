//! The `NNNN_diff.md` document: what migration N changes, from the catalogs
//! before and after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::catalog::{Catalog, Function};
use crate::line_diff::unified;

/// What the document is about.
pub struct Subject<'a> {
    /// Migration version.
    pub version: u32,
    /// Its file name (`0006_operator.sql`).
    pub file: &'a str,
}

fn code(out: &mut String, lang: &str, body: &str) {
    let _ = writeln!(out, "```{lang}\n{}\n```\n", body.trim_end());
}

fn names<'a>(list: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<String> = list.into_iter().map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The markdown document.
pub fn document(subject: &Subject<'_>, before: &Catalog, after: &Catalog) -> String {
    let tables = Changes::between(&before.tables, &after.tables);
    let indexes = Changes::between(&before.indexes, &after.indexes);
    let functions = FunctionChanges::between(before, after);
    let mut out = String::new();
    header(&mut out, subject);
    summary(&mut out, &tables, &indexes, &functions);
    signature_changes(&mut out, &functions.signature_changes);
    table_sections(&mut out, &tables, before, after);
    index_sections(&mut out, &indexes, before, after);
    function_sections(&mut out, &functions);
    format!("{}\n", out.trim_end())
}

/// Names of tables (or indexes) added, changed and removed, in name order.
struct Changes<'c> {
    new: Vec<&'c String>,
    changed: Vec<&'c String>,
    removed: Vec<&'c String>,
}

impl<'c> Changes<'c> {
    /// Name → definition before and after.
    fn between(before: &'c BTreeMap<String, String>, after: &'c BTreeMap<String, String>) -> Self {
        Self {
            new: after.keys().filter(|k| !before.contains_key(*k)).collect(),
            changed: after
                .iter()
                .filter(|(k, def)| before.get(*k).is_some_and(|old| old != *def))
                .map(|(k, _)| k)
                .collect(),
            removed: before.keys().filter(|k| !after.contains_key(*k)).collect(),
        }
    }
}

/// Functions added, changed (old and new) and removed, and the signature
/// changes among them.
struct FunctionChanges<'c> {
    changed: Vec<(&'c Function, &'c Function)>,
    new: Vec<&'c Function>,
    removed: Vec<&'c Function>,
    /// One line each: `old signatures → new signatures`.
    signature_changes: Vec<String>,
}

impl<'c> FunctionChanges<'c> {
    fn between(before: &'c Catalog, after: &'c Catalog) -> Self {
        let changed: Vec<(&Function, &Function)> = after
            .functions
            .iter()
            .filter_map(|(k, f)| {
                before
                    .functions
                    .get(k)
                    .filter(|old| old.definition != f.definition)
                    .map(|old| (old, f))
            })
            .collect();
        let new: Vec<&Function> = after
            .functions
            .iter()
            .filter(|(k, _)| !before.functions.contains_key(*k))
            .map(|(_, f)| f)
            .collect();
        let removed: Vec<&Function> = before
            .functions
            .iter()
            .filter(|(k, _)| !after.functions.contains_key(*k))
            .map(|(_, f)| f)
            .collect();
        let signature_changes = Self::signatures(before, after, &changed, &new, &removed);
        Self {
            changed,
            new,
            removed,
            signature_changes,
        }
    }

    /// A signature changed when a name lost or gained an overload while
    /// existing on both sides, or kept its arguments but changed its result.
    fn signatures(
        before: &Catalog,
        after: &Catalog,
        changed: &[(&Function, &Function)],
        new_functions: &[&Function],
        removed_functions: &[&Function],
    ) -> Vec<String> {
        let old_names: BTreeSet<&str> =
            before.functions.values().map(|f| f.name.as_str()).collect();
        let new_names: BTreeSet<&str> = after.functions.values().map(|f| f.name.as_str()).collect();
        let mut signature_changes: Vec<String> = Vec::new();
        for name in old_names.intersection(&new_names) {
            let old: Vec<&Function> = removed_functions
                .iter()
                .copied()
                .filter(|f| f.name == *name)
                .collect();
            let new: Vec<&Function> = new_functions
                .iter()
                .copied()
                .filter(|f| f.name == *name)
                .collect();
            if !old.is_empty() || !new.is_empty() {
                let sigs = |fs: &[&Function]| {
                    fs.iter()
                        .map(|f| format!("`{}`", f.signature()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let from = if old.is_empty() {
                    "(kept overloads only)".to_string()
                } else {
                    sigs(&old)
                };
                let to = if new.is_empty() {
                    "(overload removed)".to_string()
                } else {
                    sigs(&new)
                };
                signature_changes.push(format!("{from} → {to}"));
            }
        }
        for (old, new) in changed {
            if old.result != new.result {
                signature_changes.push(format!("`{}` → `{}`", old.signature(), new.signature()));
            }
        }
        signature_changes
    }
}

/// The title and what the document compares.
fn header(out: &mut String, subject: &Subject<'_>) {
    let before_text = match subject.version {
        0 | 1 => "an empty schema".to_string(),
        2 => "the schema after migration 0001".to_string(),
        n => format!("the schema after migrations 0001–{:04}", n - 1),
    };
    let _ = writeln!(
        out,
        "# Migration {v:04}: schema diff\n\n\
         Generated by `scripts/generate_migration_diff {v}` from `{file}`: {before_text}\n\
         compared with the schema after migration {v:04}. `<schema>` stands for the provider's schema.\n\
         Regenerate this file whenever the migration changes; do not edit it by hand.\n",
        v = subject.version,
        file = subject.file,
    );
}

/// `## Summary`: the names of what changed, per kind of object.
fn summary(
    out: &mut String,
    tables: &Changes<'_>,
    indexes: &Changes<'_>,
    functions: &FunctionChanges<'_>,
) {
    let fnames = |fs: &[&Function]| names(fs.iter().map(|f| &f.name));
    let _ = writeln!(out, "## Summary\n");
    for (kind, c) in [("tables", tables), ("indexes", indexes)] {
        for (what, list) in [
            ("New", &c.new),
            ("Changed", &c.changed),
            ("Removed", &c.removed),
        ] {
            let _ = writeln!(out, "- {what} {kind}: {}", names(list.iter().copied()));
        }
    }
    let changed: Vec<&Function> = functions.changed.iter().map(|(_, f)| *f).collect();
    let _ = writeln!(out, "- Changed functions: {}", fnames(&changed));
    let _ = writeln!(out, "- New functions: {}", fnames(&functions.new));
    let _ = writeln!(out, "- Removed functions: {}", fnames(&functions.removed));
    let _ = writeln!(
        out,
        "- Signature changes: {}\n",
        functions.signature_changes.len()
    );
}

/// `## Signature changes`, when there are any.
fn signature_changes(out: &mut String, changes: &[String]) {
    if changes.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Signature changes\n\nCallers must change with these.\n"
    );
    for s in changes {
        let _ = writeln!(out, "- {s}");
    }
    out.push('\n');
}

/// New tables in full, changed ones as diffs, removed ones by name.
fn table_sections(out: &mut String, tables: &Changes<'_>, before: &Catalog, after: &Catalog) {
    if !tables.new.is_empty() {
        let _ = writeln!(out, "## New tables\n");
        for t in &tables.new {
            let _ = writeln!(out, "### `{t}`\n");
            code(out, "sql", &after.tables[*t]);
        }
    }
    if !tables.changed.is_empty() {
        let _ = writeln!(out, "## Changed tables\n");
        for t in &tables.changed {
            let _ = writeln!(out, "### `{t}`\n");
            code(out, "diff", &unified(&before.tables[*t], &after.tables[*t]));
        }
    }
    if !tables.removed.is_empty() {
        let _ = writeln!(
            out,
            "## Removed tables\n\n{}\n",
            names(tables.removed.iter().copied())
        );
    }
}

/// New indexes in one block, changed ones as diffs, removed ones by name.
fn index_sections(out: &mut String, indexes: &Changes<'_>, before: &Catalog, after: &Catalog) {
    if !indexes.new.is_empty() {
        let _ = writeln!(out, "## New indexes\n");
        let defs: Vec<&str> = indexes
            .new
            .iter()
            .map(|i| after.indexes[*i].as_str())
            .collect();
        code(out, "sql", &defs.join("\n"));
    }
    if !indexes.changed.is_empty() {
        let _ = writeln!(out, "## Changed indexes\n");
        for i in &indexes.changed {
            code(
                out,
                "diff",
                &unified(&before.indexes[*i], &after.indexes[*i]),
            );
        }
    }
    if !indexes.removed.is_empty() {
        let _ = writeln!(
            out,
            "## Removed indexes\n\n{}\n",
            names(indexes.removed.iter().copied())
        );
    }
}

/// Changed functions as diffs, new ones in full, removed ones by signature.
fn function_sections(out: &mut String, functions: &FunctionChanges<'_>) {
    if !functions.changed.is_empty() {
        let _ = writeln!(out, "## Changed functions\n");
        for (old, new) in &functions.changed {
            let _ = writeln!(out, "### `{}({})`\n", new.name, new.args);
            code(out, "diff", &unified(&old.definition, &new.definition));
        }
    }
    if !functions.new.is_empty() {
        let _ = writeln!(out, "## New functions\n");
        for f in &functions.new {
            let _ = writeln!(out, "### `{}({})`\n", f.name, f.args);
            code(out, "sql", &f.definition);
        }
    }
    if !functions.removed.is_empty() {
        let _ = writeln!(out, "## Removed functions\n");
        for f in &functions.removed {
            let _ = writeln!(out, "- `{}`", f.signature());
        }
        out.push('\n');
    }
}
