//! [`Call`]: one call of one stored function, sent the way the connection
//! path allows, with its errors mapped in the one place that classifies them.
//!
//! Two ways to send the same call, chosen by the pool's
//! [`Pooler`](crate::Pooler) setting:
//!
//! - **Prepared** (the default): `SELECT * FROM s.f($1, …)` with binary
//!   parameters, prepared once per connection under a name `sqlx` chooses and
//!   reused: one round trip (Bind/Execute) per call after the first.
//! - **Literal** (behind a transaction pooler): the arguments written into the
//!   text as literals and sent with the simple-query protocol, so nothing is
//!   named on the server connection that another client could later see or
//!   collide with (PgBouncer 1.18 hands server connections from client to
//!   client between transactions and does not track prepared statements).
//!   Still one message, one round trip. Each literal is a quoted string in
//!   PostgreSQL's text input form, which the function's declared parameter
//!   type reads (the provider's functions are never overloaded, so an
//!   unknown-typed literal resolves to the one signature).

use std::borrow::Cow;

use duroxide::providers::ProviderError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Encode, FromRow, Postgres, Row, Type};

use crate::connections::Connections;
use crate::error::{invalid_input, provider_error};

/// The text of one stored function's call in both forms (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    /// `SELECT * FROM "schema".function($1, …)`.
    pub prepared: String,
    /// `"schema".function`, for the literal form.
    pub function: String,
}

enum Form<'s> {
    Prepared {
        sql: &'s str,
        args: PgArguments,
    },
    Literal {
        /// `SELECT * FROM "schema".function(` and the literals so far.
        text: String,
        /// Arguments written so far.
        count: usize,
    },
}

/// One call being built: bind the arguments in the function's order, then
/// run it with one of the fetch methods. Errors name `operation`.
pub(crate) struct Call<'s> {
    pool: &'s Connections,
    operation: &'s str,
    form: Form<'s>,
    /// The statement timeout the call sets for itself ([`Call::bounded`]).
    statement_timeout: Option<std::time::Duration>,
    /// The first argument that could not be encoded; reported when run.
    bad_argument: Option<String>,
}

impl<'s> Call<'s> {
    /// A call of `statement` over `pool`, in the form the pool's setting asks.
    pub(crate) fn new(pool: &'s Connections, operation: &'s str, statement: &'s Statement) -> Self {
        let form = match pool.literal_prefix() {
            None => Form::Prepared {
                sql: &statement.prepared,
                args: PgArguments::default(),
            },
            Some(prefix) => Form::Literal {
                text: format!("{prefix}SELECT * FROM {}(", statement.function),
                count: 0,
            },
        };
        Self {
            pool,
            operation,
            form,
            statement_timeout: None,
            bad_argument: None,
        }
    }

    /// A call of `statement` that the server cancels after `timeout`
    /// (SQLSTATE 57014), whatever the connection's own statement timeout:
    /// always the literal form, opened by `SET LOCAL statement_timeout`,
    /// which lasts for this call's implicit transaction only. For
    /// background work whose batches must stay bounded (retention sweeps);
    /// still one round trip, but never a cached prepared statement.
    pub(crate) fn bounded(
        pool: &'s Connections,
        operation: &'s str,
        statement: &'s Statement,
        timeout: std::time::Duration,
    ) -> Self {
        let text = format!(
            "{}SET LOCAL statement_timeout = '{}ms'; SELECT * FROM {}(",
            pool.literal_prefix().unwrap_or(""),
            timeout.as_millis().max(1),
            statement.function
        );
        Self {
            pool,
            operation,
            form: Form::Literal { text, count: 0 },
            statement_timeout: Some(timeout),
            bad_argument: None,
        }
    }

    /// Adds the next argument.
    pub(crate) fn bind<'v, T>(mut self, value: T) -> Self
    where
        T: Encode<'v, Postgres> + Type<Postgres> + Literal + Send + 'v,
    {
        match &mut self.form {
            Form::Prepared { args, .. } => {
                // Encoded at once into the buffer: the value need not outlive this.
                if let Err(e) = <PgArguments as Arguments<'v>>::add(args, value) {
                    self.bad_argument.get_or_insert(e.to_string());
                }
            }
            Form::Literal { text, count } => {
                if *count > 0 {
                    text.push_str(", ");
                }
                *count += 1;
                if let Err(e) = write_literal(text, value.text_input().as_deref()) {
                    self.bad_argument.get_or_insert(e.to_string());
                }
            }
        }
        self
    }

    /// Runs the call; every row it returns, in order.
    pub(crate) async fn fetch_all(self) -> Result<Vec<PgRow>, ProviderError> {
        let operation = self.operation;
        if let Some(e) = self.bad_argument {
            return Err(invalid_input(operation, e));
        }
        let (pool, timeout) = (self.pool, self.statement_timeout);
        let rows = match self.form {
            Form::Prepared { sql, args } => {
                pool.fetch_all_within(sqlx::query_with(sql, args), timeout)
                    .await
            }
            Form::Literal { mut text, .. } => {
                text.push(')');
                // A plain `&str` runs as one simple-query message.
                pool.fetch_all_within(text.as_str(), timeout).await
            }
        };
        rows.map_err(|e| provider_error(operation, e))
    }

    /// Runs the call for its effect.
    pub(crate) async fn execute(self) -> Result<(), ProviderError> {
        self.fetch_all().await.map(drop)
    }

    /// Runs the call; its first row, if any.
    pub(crate) async fn fetch_optional(self) -> Result<Option<PgRow>, ProviderError> {
        Ok(self.fetch_all().await?.into_iter().next())
    }

    /// Runs the call, which must return a row; that row.
    pub(crate) async fn fetch_one(self) -> Result<PgRow, ProviderError> {
        let operation = self.operation;
        self.fetch_optional()
            .await?
            .ok_or_else(|| provider_error(operation, sqlx::Error::RowNotFound))
    }

    /// The first column of the one row the call returns.
    pub(crate) async fn scalar<T>(self) -> Result<T, ProviderError>
    where
        T: for<'r> sqlx::Decode<'r, Postgres> + Type<Postgres>,
    {
        let operation = self.operation;
        let row = self.fetch_one().await?;
        row.try_get(0).map_err(|e| provider_error(operation, e))
    }

    /// The first column of every row the call returns.
    pub(crate) async fn scalars<T>(self) -> Result<Vec<T>, ProviderError>
    where
        T: for<'r> sqlx::Decode<'r, Postgres> + Type<Postgres>,
    {
        let operation = self.operation;
        self.fetch_all()
            .await?
            .iter()
            .map(|r| r.try_get(0).map_err(|e| provider_error(operation, e)))
            .collect()
    }

    /// The one row the call returns, as `T`.
    pub(crate) async fn one_as<T>(self) -> Result<T, ProviderError>
    where
        T: for<'r> FromRow<'r, PgRow>,
    {
        let operation = self.operation;
        read_row(operation, &self.fetch_one().await?)
    }

    /// The first row the call returns, if any, as `T`.
    pub(crate) async fn optional_as<T>(self) -> Result<Option<T>, ProviderError>
    where
        T: for<'r> FromRow<'r, PgRow>,
    {
        let operation = self.operation;
        self.fetch_optional()
            .await?
            .map(|r| read_row(operation, &r))
            .transpose()
    }

    /// Every row the call returns, as `T`.
    pub(crate) async fn all_as<T>(self) -> Result<Vec<T>, ProviderError>
    where
        T: for<'r> FromRow<'r, PgRow>,
    {
        let operation = self.operation;
        self.fetch_all()
            .await?
            .iter()
            .map(|r| read_row(operation, r))
            .collect()
    }
}

/// One result row as `T` (a row struct of `signatures.rs`), a failure
/// reported as `operation`'s: the one way a row becomes a value.
pub(crate) fn read_row<T>(operation: &str, row: &PgRow) -> Result<T, ProviderError>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    T::from_row(row).map_err(|e| provider_error(operation, e))
}

/// Writes one argument as a SQL literal: `NULL`, or its text input form as
/// an escape-string constant (`E'…'`, backslashes and quotes doubled, so the
/// server's `standard_conforming_strings` does not matter). A NUL character
/// is refused: PostgreSQL text cannot hold it and the simple-query message
/// would end at it.
fn write_literal(out: &mut String, text_input: Option<&str>) -> Result<(), &'static str> {
    let Some(text) = text_input else {
        out.push_str("NULL");
        return Ok(());
    };
    if text.contains('\0') {
        // The words of the server's own error for a bound NUL.
        return Err(
            "invalid byte sequence for encoding \"UTF8\": 0x00 (SQLSTATE 22021): PostgreSQL text cannot hold NUL",
        );
    }
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(())
}

/// A value's PostgreSQL text input form (what `'…'::type` reads), or `None`
/// for SQL NULL: how an argument is written in a literal call.
pub(crate) trait Literal {
    /// The text input form, or `None` for NULL.
    fn text_input(&self) -> Option<Cow<'_, str>>;
}

impl<T: Literal + ?Sized> Literal for &T {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        (**self).text_input()
    }
}

impl<T: Literal> Literal for Option<T> {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        self.as_ref().and_then(Literal::text_input)
    }
}

impl Literal for str {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self))
    }
}

impl Literal for String {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self))
    }
}

impl Literal for Cow<'_, str> {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self))
    }
}

macro_rules! display_literal {
    ($($t:ty),*) => {$(
        impl Literal for $t {
            fn text_input(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Owned(self.to_string()))
            }
        }
    )*};
}
display_literal!(i16, i32, i64, bool);

/// Arrays in PostgreSQL's array input form: `{"a","b",NULL}`, each element
/// double-quoted with `"` and `\` escaped by a backslash.
impl<T: Literal> Literal for [T] {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        let mut out = String::from("{");
        for (i, element) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match element.text_input() {
                None => out.push_str("NULL"),
                Some(text) => {
                    out.push('"');
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
        }
        out.push('}');
        Some(Cow::Owned(out))
    }
}

impl<T: Literal> Literal for Vec<T> {
    fn text_input(&self) -> Option<Cow<'_, str>> {
        self.as_slice().text_input()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal<T: Literal>(v: T) -> String {
        let mut out = String::new();
        write_literal(&mut out, v.text_input().as_deref()).unwrap();
        out
    }

    #[test]
    fn scalars_and_null() {
        assert_eq!(literal(42_i64), "E'42'");
        assert_eq!(literal(-7_i16), "E'-7'");
        assert_eq!(literal(true), "E'true'");
        assert_eq!(literal(None::<&str>), "NULL");
        assert_eq!(literal(Some("x")), "E'x'");
    }

    #[test]
    fn quotes_and_backslashes_cannot_end_the_literal() {
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\'); DROP"), r"E'a\\''); DROP'");
    }

    #[test]
    fn arrays_quote_their_elements() {
        assert_eq!(literal(Vec::<i64>::new()), "E'{}'");
        assert_eq!(literal(vec![1_i64, 2]), "E'{\"1\",\"2\"}'");
        assert_eq!(
            literal(vec![Some("a\"b"), None, Some(r"c\d")]),
            r#"E'{"a\\"b",NULL,"c\\\\d"}'"#
        );
    }

    #[test]
    fn nul_is_refused() {
        let mut out = String::new();
        assert!(write_literal(&mut out, Some("a\0b")).is_err());
    }

    // ---- Property tests: every literal read back by a real server ----
    //
    // Behind a transaction pooler the arguments travel inside the SQL text,
    // so the writer is all that stands between a caller's string (an
    // instance id, a KV value, an event payload) and the statement. Each
    // property opens one connection for all its cases and sends exactly what
    // `Call` sends: a plain `&str`, run with the simple-query protocol.
    // `PROPTEST_CASES=5000 cargo nextest run -p duroxide-pg --lib call::`
    // runs them longer.

    use std::cell::RefCell;

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use sqlx::{Connection, Executor, PgConnection};

    // `PROPTEST_CASES` cases (64 by default), no failure files written.
    use duroxide_pg_testkit::properties::check;

    /// One connection to the test server for a whole property, with the
    /// runtime that drives it (built once, outside the cases).
    struct Server {
        rt: tokio::runtime::Runtime,
        conn: RefCell<PgConnection>,
    }

    impl Server {
        fn connect() -> Self {
            let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let conn = rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await.expect("connect");
                // A literal that let a `pg_sleep` through fails the case
                // instead of stalling the suite.
                conn.execute("SET statement_timeout = '5s'")
                    .await
                    .expect("statement_timeout");
                conn
            });
            Self {
                rt,
                conn: RefCell::new(conn),
            }
        }

        /// Every row `sql` returns, sent as one simple-query message.
        fn rows(&self, sql: &str) -> Result<Vec<PgRow>, TestCaseError> {
            let mut conn = self.conn.borrow_mut();
            self.rt
                .block_on(conn.fetch_all(sql))
                .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))
        }

        /// The value of the one row and one column `sql` must return.
        fn value<T>(&self, sql: &str) -> Result<T, TestCaseError>
        where
            T: for<'r> sqlx::Decode<'r, Postgres> + Type<Postgres>,
        {
            let rows = self.rows(sql)?;
            prop_assert_eq!(rows.len(), 1, "rows of {}", sql);
            prop_assert_eq!(rows[0].len(), 1, "columns of {}", sql);
            rows[0]
                .try_get(0)
                .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))
        }
    }

    /// Pieces that close or escape a literal, start a comment, another
    /// statement or a dollar quote, or mean something in array input.
    const TRICKY: &[&str] = &[
        "'",
        "''",
        "\\",
        "\\\\",
        "\\'",
        "'\\",
        "\"",
        "\\\"",
        "$$",
        "$q$",
        ";",
        "--",
        "/*",
        "*/",
        "E'",
        "e'",
        "U&'",
        "\\x41",
        "\\u0041",
        "\\000",
        "\\n",
        "\n",
        "\r\n",
        "\t",
        " ",
        "NULL",
        "null",
        "{",
        "}",
        ",",
        "(",
        ")",
        "%",
        "?",
        "$1",
        "é",
        "😀",
        "\u{FEFF}",
        "\u{7F}",
        "\u{1}",
        "'); DROP TABLE x; --",
        "\\'; SELECT pg_sleep(10); --",
    ];

    /// Text without NUL: arbitrary Unicode, or a mix of [`TRICKY`] pieces
    /// and arbitrary characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\\x00]{0,40}",
            prop::collection::vec(
                prop_oneof![
                    3 => prop::sample::select(TRICKY).prop_map(str::to_owned),
                    1 => "[^\\x00]{0,3}",
                ],
                0..12,
            )
            .prop_map(|pieces| pieces.concat()),
        ]
    }

    /// An array element: text, or what array input treats specially when
    /// unquoted (`NULL`, empty, blanks, braces, quotes).
    fn element() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.85,
            prop_oneof![
                2 => text(),
                1 => prop::sample::select(&[
                    "NULL", "null", "Null", "", " ", " NULL ", "\"NULL\"", "{}", "{NULL}", "a,b",
                    "\\", "\"",
                ][..])
                .prop_map(str::to_owned),
            ],
        )
    }

    /// JSON as the provider stores it (event payloads, KV values): strings
    /// with quotes, backslashes and any Unicode but NUL (jsonb refuses
    /// `\u0000`), integers only (floats print differently), nested.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// Any text without NUL comes back from `SELECT <literal>::text`
    /// unchanged: no quote, backslash, dollar quote, comment or statement
    /// separator ends the literal early or changes what it holds.
    #[test]
    fn text_literals_round_trip_through_the_server() {
        let server = Server::connect();
        check(text(), |s| {
            let back: String = server.value(&format!("SELECT {}::text", literal(s.as_str())))?;
            prop_assert_eq!(back, s);
            Ok(())
        });
        // NULL stays NULL.
        check(prop::option::of(text()), |s| {
            let back: Option<String> =
                server.value(&format!("SELECT {}::text", literal(s.as_deref())))?;
            prop_assert_eq!(back, s);
            Ok(())
        });
    }

    /// Arrays come back element for element: NULL elements stay NULL, empty
    /// strings stay empty, and the string `NULL` stays a string (the
    /// writer double-quotes every element; only an unquoted NULL is SQL
    /// NULL). Read back as JSON: sqlx's own text-format array decoder takes
    /// a quoted "NULL" element for SQL NULL, so it cannot be the judge.
    #[test]
    fn text_array_literals_round_trip_through_the_server() {
        let server = Server::connect();
        check(prop::collection::vec(element(), 0..8), |v| {
            let json: String =
                server.value(&format!("SELECT to_jsonb({}::text[])::text", literal(&v)))?;
            let back: Vec<Option<String>> = serde_json::from_str(&json)
                .map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
            prop_assert_eq!(back, v);
            Ok(())
        });
    }

    /// A JSON document written as a text literal is the same document once
    /// the server has parsed it as jsonb: serde_json's escapes (`\"`,
    /// `\\`, `\uXXXX`) survive the literal's own escaping untouched.
    #[test]
    fn json_literals_round_trip_through_the_server() {
        let server = Server::connect();
        check(json(), |value| {
            let text = serde_json::to_string(&value).expect("serialize");
            let back: String =
                server.value(&format!("SELECT {}::jsonb::text", literal(text.as_str())))?;
            let back: serde_json::Value = serde_json::from_str(&back)
                .map_err(|e| TestCaseError::fail(format!("{back}: {e}")))?;
            prop_assert_eq!(back, value);
            Ok(())
        });
    }

    /// Integers of every width and booleans, and bigint arrays, read back
    /// as the same values (their text forms are what the server parses).
    #[test]
    fn integer_and_bool_literals_round_trip_through_the_server() {
        let server = Server::connect();
        let values = (
            any::<i64>(),
            any::<i32>(),
            any::<i16>(),
            any::<bool>(),
            prop::collection::vec(any::<i64>(), 0..6),
        );
        check(values, |(a, b, c, d, list)| {
            prop_assert_eq!(
                server.value::<i64>(&format!("SELECT {}::int8", literal(a)))?,
                a
            );
            prop_assert_eq!(
                server.value::<i32>(&format!("SELECT {}::int4", literal(b)))?,
                b
            );
            prop_assert_eq!(
                server.value::<i16>(&format!("SELECT {}::int2", literal(c)))?,
                c
            );
            prop_assert_eq!(
                server.value::<bool>(&format!("SELECT {}::bool", literal(d)))?,
                d
            );
            let json: String = server.value(&format!(
                "SELECT to_jsonb({}::int8[])::text",
                literal(&list)
            ))?;
            prop_assert_eq!(serde_json::from_str::<Vec<i64>>(&json).ok(), Some(list));
            Ok(())
        });
    }

    /// Arguments written the way `Call` writes them into a function call
    /// (`f(<lit>, <lit>, …)`, unknown-typed literals that the one signature
    /// types) reach the function's parameters unchanged.
    #[test]
    fn call_arguments_reach_the_function_unchanged() {
        let server = Server::connect();
        server
            .rows(
                "CREATE FUNCTION pg_temp.proptest_echo(p_text text, p_list text[], p_n bigint, \
                 p_flag boolean, p_maybe text) \
                 RETURNS TABLE (o_text text, o_list text, o_n bigint, o_flag boolean, o_maybe text) \
                 LANGUAGE sql AS $$ SELECT p_text, to_jsonb(p_list)::text, p_n, p_flag, p_maybe $$",
            )
            .expect("create the echo function");
        let args = (
            text(),
            prop::collection::vec(element(), 0..5),
            any::<i64>(),
            any::<bool>(),
            prop::option::of(text()),
        );
        check(args, |(t, list, n, flag, maybe)| {
            // As `Call::bind` builds it.
            let mut sql = String::from("SELECT * FROM pg_temp.proptest_echo(");
            let inputs = [
                t.text_input(),
                list.text_input(),
                n.text_input(),
                flag.text_input(),
                maybe.text_input(),
            ];
            for (i, input) in inputs.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                write_literal(&mut sql, input.as_deref()).expect("no NUL");
            }
            sql.push(')');
            let rows = server.rows(&sql)?;
            prop_assert_eq!(rows.len(), 1);
            let get = |e: sqlx::Error| TestCaseError::fail(format!("{sql}: {e}"));
            let r = &rows[0];
            prop_assert_eq!(r.try_get::<String, _>(0).map_err(get)?, t);
            let json: String = r.try_get(1).map_err(get)?;
            prop_assert_eq!(
                serde_json::from_str::<Vec<Option<String>>>(&json).ok(),
                Some(list)
            );
            prop_assert_eq!(r.try_get::<i64, _>(2).map_err(get)?, n);
            prop_assert_eq!(r.try_get::<bool, _>(3).map_err(get)?, flag);
            prop_assert_eq!(r.try_get::<Option<String>, _>(4).map_err(get)?, maybe);
            Ok(())
        });
    }

    /// Statements hidden in a string never run: the whole text stays one
    /// statement returning one row and one column (the string itself), and
    /// a sentinel table that the payloads try to drop, fill or empty is
    /// left exactly as it was (a `pg_sleep` that ran would hit the 5 s
    /// statement timeout and fail the case).
    #[test]
    fn nothing_in_a_string_executes() {
        const ATTACKS: &[&str] = &[
            "'); DROP TABLE proptest_sentinel; --",
            "\\'; SELECT pg_sleep(10); --",
            "'; DROP TABLE proptest_sentinel; --",
            "\\'); DROP TABLE proptest_sentinel; --",
            "'||(SELECT pg_sleep(10))||'",
            "'; INSERT INTO proptest_sentinel VALUES (2); --",
            "$$; DELETE FROM proptest_sentinel; $$",
            "E'\\'; TRUNCATE proptest_sentinel; --",
            "\\\\'; DROP TABLE proptest_sentinel; --",
            "*/; DROP TABLE proptest_sentinel; /*",
            "'\n; DROP TABLE proptest_sentinel;\n--",
        ];
        let server = Server::connect();
        server
            .rows("CREATE TEMP TABLE proptest_sentinel AS SELECT 1 AS x")
            .expect("sentinel");
        let payload = (text(), prop::sample::select(ATTACKS), text())
            .prop_map(|(before, attack, after)| format!("{before}{attack}{after}"));
        let run = |s: String| {
            let sql = format!("SELECT {}", literal(s.as_str()));
            let rows = server.rows(&sql)?;
            prop_assert_eq!(rows.len(), 1, "rows of {}", sql);
            prop_assert_eq!(rows[0].len(), 1, "columns of {}", sql);
            let get = |e: sqlx::Error| TestCaseError::fail(format!("{sql}: {e}"));
            prop_assert_eq!(rows[0].try_get::<String, _>(0).map_err(get)?, s);
            let kept: String = server
                .value("SELECT count(*)::text || ':' || sum(x)::text FROM proptest_sentinel")?;
            prop_assert_eq!(kept, "1:1", "the sentinel table changed");
            Ok(())
        };
        for attack in ATTACKS {
            if let Err(e) = run((*attack).to_string()) {
                panic!("{attack:?}: {e}");
            }
        }
        check(payload, run);
    }

    /// A NUL anywhere is refused before anything is written (the text
    /// would otherwise end the simple-query message early), for any text
    /// around it.
    #[test]
    fn any_nul_is_refused_and_nothing_is_written() {
        check((text(), text()), |(before, after)| {
            let mut out = String::from("SELECT ");
            let input = format!("{before}\0{after}");
            prop_assert!(write_literal(&mut out, Some(&input)).is_err());
            prop_assert_eq!(out, "SELECT ");
            Ok(())
        });
    }
}
