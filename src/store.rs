//! What every operation module works on: the call pool, the schema, the
//! call text of each stored function and the wake-up listener. The
//! operation modules take a `&Store`, never the provider, so they sit below
//! it: the provider calls them, they call nothing above themselves.

use crate::call::{Call, Statement};
use crate::connections::Connections;
use crate::long_poll::LongPoll;
use crate::statements::Statements;

/// The provider's shared state for its calls.
pub(crate) struct Store {
    /// Connections for provider calls (one statement, one round trip each).
    pub(crate) pool: Connections,
    /// The provider's schema (a metrics label; the statements are qualified).
    pub(crate) schema: String,
    /// The call text of every operation, schema-qualified.
    pub(crate) sql: Statements,
    /// The wake-up listener; `None` in poll-only mode.
    pub(crate) long_poll: Option<LongPoll>,
}

impl Store {
    /// One call of `statement` on the call pool, for `operation`.
    pub(crate) fn call<'s>(&'s self, operation: &'s str, statement: &'s Statement) -> Call<'s> {
        Call::new(&self.pool, operation, statement)
    }

    /// One call of `statement` that the server cancels after `timeout`
    /// ([`Call::bounded`]).
    pub(crate) fn bounded_call<'s>(
        &'s self,
        operation: &'s str,
        statement: &'s Statement,
        timeout: std::time::Duration,
    ) -> Call<'s> {
        Call::bounded(&self.pool, operation, statement, timeout)
    }
}
