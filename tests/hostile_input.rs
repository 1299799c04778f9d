//! Hostile and extreme input: every value either round-trips exactly or fails
//! with a clear, permanent error that changes nothing else.
//!
//! The contract these tests pin down:
//!
//! * Instance ids, event names and payloads with quotes, backslashes, SQL
//!   keywords, `$$`, LIKE wildcards, emoji, right-to-left and combining
//!   characters, CJK, control characters and noncharacters round-trip exactly,
//!   both through the provider calls and through duroxide's runtime and client.
//! * NUL (`\u0000`) inside payloads and event names round-trips: they travel
//!   inside JSON text, where serde_json writes NUL as the escape `\u0000`.
//!   That includes the orchestration output, custom status and KV values.
//! * NUL inside an instance id cannot be stored (PostgreSQL text holds no NUL):
//!   every call that would store one fails with a permanent error naming the
//!   byte (`0x00`, SQLSTATE 22021), and nothing at all is stored, not even the
//!   other parts of the same ack.
//! * 1 MiB and 16 MiB payloads round-trip.
//! * 10,000-character instance ids round-trip when PostgreSQL can index them
//!   (it compresses long index entries, so repetitive ids fit); ids it cannot
//!   index are refused at enqueue with a permanent error (SQLSTATE 54000) and
//!   nothing is stored. An id the provider accepts must then be processable.
//!
//! A failing test here demonstrates a provider bug; its message names the
//! input and the step that went wrong.

use duroxide_pg_testkit::harness as common;

/// Providers reach the server directly.
const VIA: common::Via = common::Via::Direct;

#[allow(dead_code)] // this file uses only part of the end-to-end helpers
#[path = "e2e/support.rs"]
mod support;

#[path = "hostile/cases.rs"]
mod cases;
