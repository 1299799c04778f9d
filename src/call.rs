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
        let row = self.fetch_one().await?;
        T::from_row(&row).map_err(|e| provider_error(operation, e))
    }

    /// The first row the call returns, if any, as `T`.
    pub(crate) async fn optional_as<T>(self) -> Result<Option<T>, ProviderError>
    where
        T: for<'r> FromRow<'r, PgRow>,
    {
        let operation = self.operation;
        self.fetch_optional()
            .await?
            .map(|r| T::from_row(&r).map_err(|e| provider_error(operation, e)))
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
            .map(|r| T::from_row(r).map_err(|e| provider_error(operation, e)))
            .collect()
    }
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
}
