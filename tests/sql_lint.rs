//! plpgsql_check over every PL/pgSQL function of a freshly migrated schema:
//! no error, and no warning (all its warning classes on) that
//! `tests/sql_lint_allow.txt` does not list with a reason. An allow-list
//! entry that matches nothing fails too, so the list stays true.
//!
//! Needs the extension's files on the server (Debian
//! `postgresql-15-plpgsql-check`, which `.ci/run` installs) and a superuser
//! to create it, so it runs on the throwaway cluster whatever
//! `DATABASE_URL` says.

use duroxide_pg::{PostgresConfig, PostgresProvider};
use duroxide_pg_testkit::harness as common;
use sqlx::{Connection, Row};

/// One allow-list line: `function | sqlstate | message fragment | why`.
#[derive(Debug)]
struct Allowed {
    function: String,
    sqlstate: String,
    message: String,
    line: usize,
}

fn allow_list() -> Vec<Allowed> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sql_lint_allow.txt");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(
                parts.len() == 4 && parts.iter().all(|p| !p.is_empty()),
                "{path}:{}: expected `function | sqlstate | message fragment | why`",
                i + 1
            );
            Allowed {
                function: parts[0].into(),
                sqlstate: parts[1].into(),
                message: parts[2].into(),
                line: i + 1,
            }
        })
        .collect()
}

#[tokio::test]
async fn plpgsql_check_finds_nothing_unexplained() {
    let url = common::local_url();
    let schema = common::fresh_schema_name("lint");
    let provider = PostgresProvider::connect(PostgresConfig::new(&url).with_schema(&schema))
        .await
        .expect("migrated schema");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| {
            panic!("plpgsql_check is not available ({e}): install postgresql-15-plpgsql-check")
        });
    // Internal helpers without SET run under their caller's search_path.
    sqlx::query(&format!("SET search_path TO {schema}, public"))
        .execute(&mut conn)
        .await
        .unwrap();
    let findings = sqlx::query(
        "SELECT p.proname::text AS function, c.level, coalesce(c.sqlstate, '') AS sqlstate,
                c.message, coalesce(c.lineno, 0) AS lineno,
                coalesce(c.statement, '') AS statement, coalesce(c.query, '') AS query
           FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           JOIN pg_language l ON l.oid = p.prolang
           CROSS JOIN LATERAL plpgsql_check_function_tb(
                p.oid, fatal_errors => false, other_warnings => true,
                performance_warnings => true, extra_warnings => true,
                security_warnings => true) c
          WHERE n.nspname = $1 AND l.lanname = 'plpgsql'
          ORDER BY 1, 5",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await
    .expect("plpgsql_check ran");
    let checked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           JOIN pg_language l ON l.oid = p.prolang WHERE n.nspname = $1 AND l.lanname = 'plpgsql'",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(checked >= 20, "only {checked} plpgsql functions found");

    let allowed = allow_list();
    let mut used = vec![false; allowed.len()];
    let mut unexplained = Vec::new();
    for f in &findings {
        let (function, level, sqlstate, message, lineno): (String, String, String, String, i32) = (
            f.get("function"),
            f.get("level"),
            f.get("sqlstate"),
            f.get("message"),
            f.get("lineno"),
        );
        let hit = allowed.iter().position(|a| {
            a.function == function && a.sqlstate == sqlstate && message.contains(&a.message)
        });
        match hit {
            Some(i) if level != "error" => used[i] = true,
            _ => {
                let (statement, query): (String, String) = (f.get("statement"), f.get("query"));
                unexplained.push(format!(
                    "{function}:{lineno}: {level} {sqlstate}: {message} [{statement}] {query}"
                ));
            }
        }
    }
    let stale: Vec<String> = allowed
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(a, _)| format!("line {}: {a:?}", a.line))
        .collect();
    provider.cleanup_schema().await.unwrap();
    assert!(
        unexplained.is_empty(),
        "plpgsql_check reports (fix them, or explain each in tests/sql_lint_allow.txt):\n{}",
        unexplained.join("\n")
    );
    assert!(
        stale.is_empty(),
        "allow-list entries that match nothing any more (remove them):\n{}",
        stale.join("\n")
    );
}
