//! The maintainer scripts against a real PostgreSQL: the migration diff
//! generator (a fixture migration and every committed diff), the CI check
//! that catches a missing diff, and the test-schema cleanup.

use duroxide_pg_testkit::harness as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use duroxide_pg::{PostgresConfig, PostgresProvider};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fresh, empty temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::fresh_schema_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the diff generator for `version` of `dir` and returns the document.
fn generate(dir: &Path, version: u32) -> String {
    let tmp = temp_dir("diffout");
    let out = tmp.join("diff.md");
    let run = Command::new(env!("CARGO_BIN_EXE_migration-diff"))
        .env("DATABASE_URL", common::database_url())
        .arg(version.to_string())
        .arg("--migrations-dir")
        .arg(dir)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = std::fs::read_to_string(out).unwrap();
    std::fs::remove_dir_all(tmp).unwrap();
    doc
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn diff_of_a_fixture_migration_is_the_documented_markdown() {
    let doc = generate(&fixture_dir(), 2);
    let expected = std::fs::read_to_string(fixture_dir().join("expected_0002_diff.md")).unwrap();
    assert_eq!(
        doc, expected,
        "regenerate the fixture only if the format changed on purpose"
    );
    // What the format promises, independent of the golden file.
    assert!(doc.contains("```diff\n CREATE OR REPLACE FUNCTION widget_name(p_id bigint)\n"));
    assert!(doc.contains("\n+    color text NOT NULL DEFAULT 'red'::text,\n"));
    assert!(doc.contains("\n-    SELECT w.name FROM widgets w WHERE w.id = p_id\n"));
    assert!(doc.contains("`count_widgets() → bigint` → `count_widgets(p_color text) → bigint`"));
    assert!(doc.contains("### `paints`\n\n```sql\nCREATE TABLE paints ("));
    assert!(doc.contains("CREATE INDEX widgets_color_idx ON widgets USING btree (color);"));
    assert!(
        !doc.contains("dxdiff_"),
        "temporary schema name leaked into the document"
    );
}

#[test]
fn committed_migration_diffs_are_current() {
    let dir = repo().join("migrations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_suffix("_diff.md") else {
            continue;
        };
        let version: u32 = version.parse().unwrap();
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert_eq!(
            generate(&dir, version),
            committed,
            "{name} is stale: run scripts/generate_migration_diff {version}"
        );
        checked += 1;
    }
    assert!(checked >= 1, "no committed diff documents found");
}

/// Every file under `dir` (relative path → contents).
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), text);
            }
        }
    }
    out
}

/// `schema/` is what the migrations make: regenerated into a temporary
/// folder, every generated file matches the committed one, and nothing is
/// missing or left over.
#[test]
fn committed_schema_files_are_current() {
    let tmp = temp_dir("schemafiles");
    let run = Command::new(env!("CARGO_BIN_EXE_migration-diff"))
        .env("DATABASE_URL", common::database_url())
        .arg("--migrations-dir")
        .arg(repo().join("migrations"))
        .arg("--schema-files")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let generated = tree(&tmp);
    let mut committed = tree(&repo().join("schema"));
    // The folder's README is written by hand.
    committed.remove(Path::new("README.md"));
    std::fs::remove_dir_all(&tmp).unwrap();
    let names =
        |t: &std::collections::BTreeMap<PathBuf, String>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&generated),
        "schema/ has other files than the migrations make: run scripts/generate_schema"
    );
    for (path, text) in &generated {
        assert_eq!(
            &committed[path],
            text,
            "schema/{} is stale: run scripts/generate_schema",
            path.display()
        );
    }
    assert!(generated.len() > 40, "{:?}", names(&generated));
}

/// Every stored function carries its contract: a COMMENT with what it
/// does, its locks, the rows it touches, the errors it raises and who
/// calls it.
#[test]
fn every_function_states_its_contract() {
    let dir = repo().join("schema/functions");
    for (path, text) in tree(&dir) {
        let comment = text
            .split("COMMENT ON FUNCTION ")
            .nth(1)
            .unwrap_or_else(|| panic!("{} has no COMMENT (its contract)", path.display()));
        for part in ["Locks:", "Rows:", "Errors:", "Called by:"] {
            assert!(
                comment.contains(part),
                "the contract of {} says nothing under {part:?}",
                path.display()
            );
        }
    }
}

#[test]
fn generator_refuses_a_missing_version_clearly() {
    let run = Command::new(env!("CARGO_BIN_EXE_migration-diff"))
        .env("DATABASE_URL", common::database_url())
        .args(["7", "--migrations-dir"])
        .arg(fixture_dir())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains("no migration 0007"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn ci_check_catches_a_missing_diff() {
    let check = repo().join("scripts/check_migration_diffs");
    let run = |dir: &Path| Command::new(&check).arg(dir).output().unwrap();

    // The repository itself passes.
    let ok = run(&repo().join("migrations"));
    assert!(ok.status.success(), "{}", stderr(&ok));

    // Migration 2 comes after the first release (1) and has no diff.
    let dir = temp_dir("diffcheck");
    for f in ["0001_base.sql", "0002_color.sql"] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("FIRST_RELEASE"), "1\n").unwrap();
    let missing = run(&dir);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("0002_color.sql has no 0002_diff.md"),
        "{}",
        stderr(&missing)
    );

    std::fs::copy(
        fixture_dir().join("expected_0002_diff.md"),
        dir.join("0002_diff.md"),
    )
    .unwrap();
    assert!(run(&dir).status.success());

    // A diff for a migration that does not exist is caught too.
    std::fs::write(dir.join("0003_diff.md"), "stale\n").unwrap();
    let orphan = run(&dir);
    assert_eq!(orphan.status.code(), Some(1));
    assert!(
        stderr(&orphan).contains("0003_diff.md describes migration 0003"),
        "{}",
        stderr(&orphan)
    );

    // A marker with leading zeros is a decimal number, never octal: with
    // FIRST_RELEASE 0009, migration 0010 still needs its diff.
    let ten = temp_dir("diffcheck_ten");
    for v in 1..=10 {
        std::fs::write(ten.join(format!("{v:04}_m.sql")), "SELECT 1;\n").unwrap();
    }
    std::fs::write(ten.join("FIRST_RELEASE"), "0009\n").unwrap();
    let octal = run(&ten);
    assert_eq!(octal.status.code(), Some(1), "{}", stderr(&octal));
    assert!(
        stderr(&octal).contains("0010_m.sql has no 0010_diff.md"),
        "{}",
        stderr(&octal)
    );
    std::fs::remove_dir_all(ten).unwrap();

    // Without the first-release marker the check cannot decide: it says so.
    std::fs::remove_file(dir.join("FIRST_RELEASE")).unwrap();
    let unmarked = run(&dir);
    assert_eq!(unmarked.status.code(), Some(1));
    assert!(stderr(&unmarked).contains("FIRST_RELEASE is missing"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cleanup_drops_only_old_enough_test_stores_under_the_prefix() {
    let url = common::database_url();
    let prefix = format!("dxtest_cleanup_{}_", std::process::id());
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // Two test stores, a prefixed schema that is not a store, and a store
    // under another prefix.
    let stores = [
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("keep_{prefix}c"),
    ];
    for s in &stores {
        let p = PostgresProvider::connect(PostgresConfig::new(&url).with_schema(s.clone()))
            .await
            .unwrap();
        drop(p);
    }
    let foreign = format!("{prefix}foreign");
    sqlx::query(&format!("CREATE SCHEMA {foreign}"))
        .execute(&pool)
        .await
        .unwrap();
    let exists = |s: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            )
            .bind(s)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let script = repo().join("scripts/cleanup_test_schemas");
    let run = |args: &[&str]| {
        let out = Command::new(&script)
            .env("DATABASE_URL", &url)
            .args(["--prefix", &prefix])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };

    let listed = run(&["--dry-run", "--min-age", "0"]);
    assert_eq!(
        listed,
        format!(
            "would drop {prefix}a\nwould drop {prefix}b\ndry run: 2 schemas would be dropped\n"
        )
    );
    let young = run(&[]);
    assert_eq!(
        young, "dropped 0 schemas\n",
        "fresh stores must survive the default age"
    );
    for s in stores.iter().chain([&foreign]) {
        assert!(exists(s.clone()).await, "{s} was dropped");
    }

    let dropped = run(&["--min-age", "0"]);
    assert_eq!(
        dropped,
        format!("dropped {prefix}a\ndropped {prefix}b\ndropped 2 schemas\n")
    );
    assert!(!exists(stores[0].clone()).await && !exists(stores[1].clone()).await);
    assert!(
        exists(stores[2].clone()).await,
        "another prefix was touched"
    );
    assert!(
        exists(foreign.clone()).await,
        "a schema without the ledger was touched"
    );

    // Prefixes outside the test families are refused before connecting (a
    // real store such as "orders" must be out of reach whatever its age).
    for bad in ["ord", "pub", "pg_temp", "dxtestx", "dxtest_Bad;", ""] {
        let out = Command::new(&script)
            .env("DATABASE_URL", &url)
            .args(["--prefix", bad, "--min-age", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).starts_with("error: prefix"),
            "{bad}: {}",
            stderr(&out)
        );
    }

    // The URL's password reaches neither psql's command line nor the output.
    let out = Command::new(&script)
        .env(
            "DATABASE_URL",
            "postgres://u:hunter2%7Asecret@127.0.0.1:1/db",
        )
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        !all.contains("hunter2") && all.contains("127.0.0.1"),
        "{all}"
    );

    for s in [&stores[2], &foreign] {
        sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
