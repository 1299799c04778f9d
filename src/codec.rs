//! Marshalling between duroxide's types and the stored functions' arguments:
//! JSON text in and out, routing keys, the columns copied out of work items,
//! and the text arrays read back from a call's row. No storage decisions are
//! made here.

use std::time::Duration;

use duroxide::providers::{ProviderError, WorkItem};
use duroxide::{Event, EventKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Postgres, Type};

use crate::codes::{CONTINUE_AS_NEW, CustomStatusAction, KvOp, START_ORCHESTRATION};
use crate::error::{corrupted, invalid_input};

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A `u64` id as PostgreSQL `BIGINT`; ids above `i64::MAX` cannot be stored.
pub(crate) fn to_i64(operation: &str, what: &str, value: u64) -> Result<i64, ProviderError> {
    i64::try_from(value)
        .map_err(|_| invalid_input(operation, format!("{what} {value} exceeds i64::MAX")))
}

/// A stored `BIGINT` back to `u64`; negative values mean corruption.
pub(crate) fn to_u64(operation: &str, what: &str, value: i64) -> Result<u64, ProviderError> {
    u64::try_from(value).map_err(|_| corrupted(operation, format!("negative {what} {value}")))
}

/// Serialises a value to JSON text.
pub(crate) fn encode<T: Serialize>(operation: &str, value: &T) -> Result<String, ProviderError> {
    serde_json::to_string(value)
        .map_err(|e| invalid_input(operation, format!("cannot serialise: {e}")))
}

/// Parses stored JSON text (exactly once) into a value.
pub(crate) fn decode<T: DeserializeOwned>(operation: &str, text: &str) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| corrupted(operation, format!("cannot deserialise: {e}")))
}

/// Parses a list of stored JSON texts.
pub(crate) fn decode_all<T: DeserializeOwned>(
    operation: &str,
    texts: &[String],
) -> Result<Vec<T>, ProviderError> {
    texts.iter().map(|t| decode(operation, t)).collect()
}

/// The variant name stored in `orchestrator_queue.kind`; the stored functions
/// use it to recognise start messages and orphan `QueueMessage`s.
pub(crate) fn kind_name(item: &WorkItem) -> &'static str {
    match item {
        WorkItem::StartOrchestration { .. } => START_ORCHESTRATION,
        WorkItem::ActivityExecute { .. } => "ActivityExecute",
        WorkItem::ActivityCompleted { .. } => "ActivityCompleted",
        WorkItem::ActivityFailed { .. } => "ActivityFailed",
        WorkItem::TimerFired { .. } => "TimerFired",
        WorkItem::ExternalRaised { .. } => "ExternalRaised",
        WorkItem::SubOrchCompleted { .. } => "SubOrchCompleted",
        WorkItem::SubOrchFailed { .. } => "SubOrchFailed",
        WorkItem::CancelInstance { .. } => "CancelInstance",
        WorkItem::ContinueAsNew { .. } => CONTINUE_AS_NEW,
        WorkItem::QueueMessage { .. } => "QueueMessage",
    }
}

/// Longest instance id the provider accepts, in bytes. PostgreSQL's btree
/// indexes hold at most ~2.7 kB per entry, and the tightest of ours (history's
/// primary key) adds two integers; a limit well inside that is predictable,
/// where the index's own limit would depend on how well the id compresses.
pub(crate) const MAX_INSTANCE_ID_BYTES: usize = 2048;

/// Refuses an instance id the tables cannot index (see [`MAX_INSTANCE_ID_BYTES`]).
pub(crate) fn check_instance_id(operation: &str, id: &str) -> Result<(), ProviderError> {
    if id.len() > MAX_INSTANCE_ID_BYTES {
        return Err(invalid_input(
            operation,
            format!(
                "instance id of {} bytes is longer than the {MAX_INSTANCE_ID_BYTES} bytes duroxide-pg stores",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// Marks a stored text as escaped (see [`to_stored`]); a Unicode
/// noncharacter, so no ordinary value starts with it.
const ESCAPED: char = '\u{FFFF}';

/// An opaque caller string (output, custom status, KV key or value) as
/// stored in a TEXT column. PostgreSQL text cannot hold NUL, so a value
/// containing one (or starting with the marker) is stored escaped behind
/// [`ESCAPED`]; every other value is stored exactly as given.
pub(crate) fn to_stored(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\0') && !text.starts_with(ESCAPED) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    out.push(ESCAPED);
    for c in text.chars() {
        match c {
            '\0' => out.extend([ESCAPED, '0']),
            ESCAPED => out.extend([ESCAPED, ESCAPED]),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The inverse of [`to_stored`].
pub(crate) fn from_stored(text: String) -> String {
    let Some(body) = text.strip_prefix(ESCAPED) else {
        return text;
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match (c, c == ESCAPED) {
            (_, false) => out.push(c),
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(next) => out.push(next),
                None => out.push(ESCAPED),
            },
        }
    }
    out
}

/// The instance whose orchestrator-queue a message belongs to. Sub-orchestration
/// results go to the parent; activity executions belong to the worker queue.
pub(crate) fn orchestrator_route<'a>(
    operation: &str,
    item: &'a WorkItem,
) -> Result<&'a str, ProviderError> {
    match item {
        WorkItem::StartOrchestration { instance, .. }
        | WorkItem::ActivityCompleted { instance, .. }
        | WorkItem::ActivityFailed { instance, .. }
        | WorkItem::TimerFired { instance, .. }
        | WorkItem::ExternalRaised { instance, .. }
        | WorkItem::CancelInstance { instance, .. }
        | WorkItem::ContinueAsNew { instance, .. }
        | WorkItem::QueueMessage { instance, .. } => Ok(instance),
        WorkItem::SubOrchCompleted {
            parent_instance, ..
        }
        | WorkItem::SubOrchFailed {
            parent_instance, ..
        } => Ok(parent_instance),
        WorkItem::ActivityExecute { .. } => Err(invalid_input(
            operation,
            "ActivityExecute belongs to the worker queue, not the orchestrator queue",
        )),
    }
}

/// An orchestrator-queue row ready to insert.
pub(crate) struct OrchestratorRow<'a> {
    pub instance: &'a str,
    pub kind: &'static str,
    pub json: String,
}

impl<'a> OrchestratorRow<'a> {
    pub(crate) fn new(operation: &str, item: &'a WorkItem) -> Result<Self, ProviderError> {
        let instance = orchestrator_route(operation, item)?;
        check_instance_id(operation, instance)?;
        Ok(Self {
            instance,
            kind: kind_name(item),
            json: encode(operation, item)?,
        })
    }
}

/// A worker-queue row ready to insert: the JSON plus the identity columns.
pub(crate) struct WorkerRow {
    pub json: String,
    pub instance: String,
    pub execution_id: i64,
    pub activity_id: i64,
    pub session_id: Option<String>,
    pub tag: Option<String>,
}

impl WorkerRow {
    pub(crate) fn new(operation: &str, item: &WorkItem) -> Result<Self, ProviderError> {
        match item {
            WorkItem::ActivityExecute {
                instance,
                execution_id,
                id,
                session_id,
                tag,
                ..
            } => Ok(Self {
                instance: {
                    check_instance_id(operation, instance)?;
                    instance.clone()
                },
                json: encode(operation, item)?,
                execution_id: to_i64(operation, "execution_id", *execution_id)?,
                activity_id: to_i64(operation, "activity id", *id)?,
                session_id: session_id.clone(),
                tag: tag.clone(),
            }),
            other => Err(invalid_input(
                operation,
                format!(
                    "only ActivityExecute belongs to the worker queue, got {}",
                    kind_name(other)
                ),
            )),
        }
    }
}

/// History events as the parallel arrays the stored functions take.
pub(crate) fn event_columns(
    operation: &str,
    events: &[Event],
) -> Result<(Vec<i64>, Vec<String>), ProviderError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    for event in events {
        if event.event_id() == 0 {
            return Err(invalid_input(
                operation,
                "event_id must be set by the runtime (got 0)",
            ));
        }
        ids.push(to_i64(operation, "event_id", event.event_id())?);
        data.push(encode(operation, event)?);
    }
    Ok((ids, data))
}

/// Custom-status change carried by a history delta: the last
/// `CustomStatusUpdated` wins.
pub(crate) fn custom_status_change(delta: &[Event]) -> (CustomStatusAction, Option<String>) {
    match delta.iter().rev().find_map(|e| match &e.kind {
        EventKind::CustomStatusUpdated { status } => Some(status.clone()),
        _ => None,
    }) {
        None => (CustomStatusAction::Unchanged, None),
        Some(Some(status)) => (
            CustomStatusAction::Set,
            Some(to_stored(&status).into_owned()),
        ),
        Some(None) => (CustomStatusAction::Cleared, None),
    }
}

/// KV operations of a history delta, in order, as parallel arrays
/// ([`KvOp`] codes; see `apply_kv_operations`).
#[derive(Default)]
pub(crate) struct KvOps {
    pub ops: Vec<i16>,
    pub keys: Vec<Option<String>>,
    pub values: Vec<Option<String>>,
    pub updated_at: Vec<Option<i64>>,
}

impl KvOps {
    pub(crate) fn from_delta(operation: &str, delta: &[Event]) -> Result<Self, ProviderError> {
        let mut kv = Self::default();
        for event in delta {
            match &event.kind {
                EventKind::KeyValueSet {
                    key,
                    value,
                    last_updated_at_ms,
                } => {
                    kv.push(
                        KvOp::Set,
                        Some(key.clone()),
                        Some(value.clone()),
                        Some(to_i64(
                            operation,
                            "last_updated_at_ms",
                            *last_updated_at_ms,
                        )?),
                    );
                }
                EventKind::KeyValueCleared { key } => {
                    kv.push(KvOp::ClearKey, Some(key.clone()), None, None)
                }
                EventKind::KeyValuesCleared => kv.push(KvOp::ClearAll, None, None, None),
                _ => {}
            }
        }
        Ok(kv)
    }

    fn push(&mut self, op: KvOp, key: Option<String>, value: Option<String>, at: Option<i64>) {
        self.ops.push(op as i16);
        self.keys.push(key.map(|k| to_stored(&k).into_owned()));
        self.values.push(value.map(|v| to_stored(&v).into_owned()));
        self.updated_at.push(at);
    }
}

/// A `text[]` column whose elements are never NULL, read the same way in
/// both result formats: a field type of the result rows in `signatures.rs`.
///
/// It exists because sqlx 0.8.6 decodes text-format arrays wrongly: it
/// strips the quotes from an element before comparing it with `NULL`, so the
/// string `"NULL"` comes back as SQL NULL (`Vec<String>` then fails with
/// "unexpected null"). Text format is what a literal call gets back (behind
/// a transaction pooler, and every bounded call); prepared calls get binary
/// format, which goes to sqlx's own decoder. Text-format values are parsed
/// by [`parse_text_array`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Texts(pub Vec<String>);

impl Type<Postgres> for Texts {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Texts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        text_array(value)?
            .into_iter()
            .map(|element| element.ok_or_else(|| sqlx::error::UnexpectedNullError.into()))
            .collect::<Result<_, BoxDynError>>()
            .map(Texts)
    }
}

/// A non-NULL `text[]` value, elements possibly NULL, in either format.
fn text_array(value: PgValueRef<'_>) -> Result<Vec<Option<String>>, BoxDynError> {
    if value.format() == PgValueFormat::Binary {
        return <Vec<Option<String>> as Decode<Postgres>>::decode(value);
    }
    Ok(parse_text_array(value.as_str()?)?)
}

/// A one-dimensional array in PostgreSQL's array output syntax:
/// `{a,"b c",NULL,"NULL","x\"y","\\"}`. An unquoted `NULL` (any case) is
/// SQL NULL; a quoted element is always a string, with `\` escaping the next
/// character; an unquoted element is taken literally. Nested arrays and a
/// dimension decoration (`[0:1]={…}`) are refused: the provider's functions
/// return neither.
fn parse_text_array(text: &str) -> Result<Vec<Option<String>>, String> {
    let Some(body) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return Err(if text.starts_with('[') {
            format!(
                "array with explicit dimensions is not supported: {}",
                preview(text)
            )
        } else {
            format!("not an array: {}", preview(text))
        });
    };
    let mut elements = Vec::new();
    if body.is_empty() {
        return Ok(elements);
    }
    let unexpected = |what: &str| format!("{what} in array {}", preview(text));
    let mut chars = body.chars().peekable();
    loop {
        let element = if chars.next_if_eq(&'"').is_some() {
            let mut element = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => element.push(c),
                        None => return Err(unexpected("unterminated escape")),
                    },
                    Some(c) => element.push(c),
                    None => return Err(unexpected("unterminated quoted element")),
                }
            }
            Some(element)
        } else {
            let mut element = String::new();
            while let Some(c) = chars.next_if(|&c| c != ',') {
                match c {
                    '{' | '}' => return Err(unexpected("nested array (not supported)")),
                    '"' => return Err(unexpected("quote inside an unquoted element")),
                    c => element.push(c),
                }
            }
            if element.is_empty() {
                return Err(unexpected("empty unquoted element"));
            }
            (!element.eq_ignore_ascii_case("NULL")).then_some(element)
        };
        elements.push(element);
        match chars.next() {
            None => return Ok(elements),
            Some(',') => {}
            Some(c) => return Err(unexpected(&format!("{c:?} after a quoted element"))),
        }
    }
}

/// The start of a text for an error message (an array may be megabytes).
fn preview(text: &str) -> String {
    const CHARS: usize = 80;
    match text.char_indices().nth(CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[test]
    fn stored_text_round_trips_nul_and_the_marker() {
        for text in [
            "",
            "plain",
            "a\0b",
            "\0",
            "\u{FFFF}",
            "\u{FFFF}0",
            "x\u{FFFF}\0y",
            "\u{FFFF}\u{FFFF}\0",
        ] {
            let stored = to_stored(text);
            assert!(!stored.contains('\0'), "{text:?} stored with a NUL");
            assert_eq!(from_stored(stored.into_owned()), text);
        }
        // Ordinary values are stored as they are.
        assert!(matches!(
            to_stored("x\u{FFFF}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn instance_ids_longer_than_the_limit_are_refused() {
        assert!(check_instance_id("op", &"a".repeat(MAX_INSTANCE_ID_BYTES)).is_ok());
        let e = check_instance_id("op", &"é".repeat(MAX_INSTANCE_ID_BYTES / 2 + 1)).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message.contains("2050 bytes"), "{e}");
    }

    fn strings(elements: &[Option<&str>]) -> Vec<Option<String>> {
        elements.iter().map(|e| e.map(str::to_owned)).collect()
    }

    #[test]
    fn text_arrays_parse_nulls_quotes_and_escapes() {
        for (text, expected) in [
            ("{}", vec![]),
            ("{NULL}", vec![None]),
            ("{null,Null,nUlL}", vec![None, None, None]),
            (r#"{"NULL","null"}"#, vec![Some("NULL"), Some("null")]),
            (r#"{NULL,"NULL",NULL}"#, vec![None, Some("NULL"), None]),
            (r#"{""}"#, vec![Some("")]),
            (r#"{"",""}"#, vec![Some(""), Some("")]),
            ("{a}", vec![Some("a")]),
            ("{a,b,c}", vec![Some("a"), Some("b"), Some("c")]),
            ("{NULLx,xNULL}", vec![Some("NULLx"), Some("xNULL")]),
            (r#"{"x\"y"}"#, vec![Some("x\"y")]),
            (r#"{"\\"}"#, vec![Some("\\")]),
            (r#"{"\\\"","\"\\"}"#, vec![Some("\\\""), Some("\"\\")]),
            (r#"{"\a\b"}"#, vec![Some("ab")]),
            (
                r#"{"a,b","{c}","}{",","}"#,
                vec![Some("a,b"), Some("{c}"), Some("}{"), Some(",")],
            ),
            (
                "{\" \",\"  a b  \",\"\t\n\"}",
                vec![Some(" "), Some("  a b  "), Some("\t\n")],
            ),
            (r#"{"\"NULL\""}"#, vec![Some("\"NULL\"")]),
            (r#"{"NULL,NULL"}"#, vec![Some("NULL,NULL")]),
            ("{é,漢字,😀}", vec![Some("é"), Some("漢字"), Some("😀")]),
            (r#"{"é ü","👨‍👩‍👧 \"x\""}"#, vec![Some("é ü"), Some("👨‍👩‍👧 \"x\"")]),
            (r#"{a\b}"#, vec![Some(r"a\b")]),
            (r#"{"{\"k\":[1,null]}"}"#, vec![Some(r#"{"k":[1,null]}"#)]),
        ] {
            assert_eq!(parse_text_array(text), Ok(strings(&expected)), "{text}");
        }
    }

    #[test]
    fn text_arrays_refuse_what_they_do_not_support() {
        for (text, expected) in [
            ("{{a,b},{c,d}}", "nested array"),
            ("{a,{b}}", "nested array"),
            ("[0:1]={a,b}", "explicit dimensions"),
            ("[1:1][1:1]={{a}}", "explicit dimensions"),
            ("", "not an array"),
            ("a,b", "not an array"),
            ("{a", "not an array"),
            (r#"{"a}"#, "unterminated quoted element"),
            (r#"{"a\}"#, "unterminated"),
            ("{a,}", "empty unquoted element"),
            ("{,a}", "empty unquoted element"),
            (r#"{"a"b}"#, "after a quoted element"),
            (r#"{a"b"}"#, "quote inside an unquoted element"),
        ] {
            let e = parse_text_array(text).expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
        }
        // A long array is not copied whole into the message.
        let long = format!("{{{}", "x,".repeat(100_000));
        let e = parse_text_array(&long).unwrap_err();
        assert!(e.contains("not an array") && e.len() < 200, "{e}");
    }

    /// Every value the server writes, in text format (a simple query) and
    /// in binary format (a prepared one), reads back the same: the strings
    /// `NULL` and `null` included, which sqlx 0.8.6 reads as NULL in text.
    #[tokio::test]
    async fn text_arrays_read_what_the_server_writes_in_both_formats() {
        use crate::call::Literal;
        use sqlx::{Connection, Executor};

        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        let arrays: Vec<Vec<Option<String>>> = vec![
            vec![],
            vec![None],
            strings(&[Some("NULL")]),
            strings(&[Some("NULL"), None, Some("null"), Some("Null"), Some("")]),
            strings(&[
                Some("plain"),
                Some(" "),
                Some("  a b  "),
                Some("x\"y"),
                Some("\\"),
                Some("\\\"\\"),
                Some(","),
                Some("{"),
                Some("}"),
                Some("{}"),
                Some("{a,b}"),
                Some("NULL,NULL"),
                Some("\"NULL\""),
                Some("[0:1]={a}"),
                Some("'; DROP TABLE x; --"),
                Some("é 漢字 😀 👨‍👩‍👧 \u{202E}"),
                Some("tab\tnewline\ncr\r"),
                Some(r#"{"type":"x","v":[1,null,"NULL"]}"#),
            ]),
        ];
        for array in arrays {
            let input = array.as_slice().text_input().expect("an array literal");
            let sql = format!("SELECT '{}'::text[] AS a", input.replace('\'', "''"));
            let text_row = conn.fetch_one(sql.as_str()).await.expect("simple query");
            assert_eq!(
                text_row.try_get_raw("a").unwrap().format(),
                PgValueFormat::Text
            );
            let binary_row = conn
                .fetch_one(sqlx::query("SELECT $1::text[] AS a").bind(&array))
                .await
                .expect("prepared query");
            assert_eq!(
                binary_row.try_get_raw("a").unwrap().format(),
                PgValueFormat::Binary
            );
            for row in [&text_row, &binary_row] {
                assert_eq!(text_array(row.try_get_raw("a").unwrap()).unwrap(), array);
                let non_null = row.try_get::<Texts, _>("a").map(|t| t.0);
                if array.contains(&None) {
                    let e = non_null.unwrap_err().to_string();
                    assert!(e.contains("unexpected null"), "{e}");
                } else {
                    assert_eq!(
                        non_null.unwrap(),
                        array.iter().flatten().cloned().collect::<Vec<_>>()
                    );
                }
            }
        }
        // What the provider's functions never return is refused clearly.
        for (sql, expected) in [
            ("SELECT '[0:1]={a,b}'::text[] AS a", "explicit dimensions"),
            ("SELECT '{{a,b},{c,d}}'::text[] AS a", "nested array"),
            ("SELECT '{1,2}'::bigint[] AS a", "mismatched types"),
            ("SELECT NULL::text[] AS a", "unexpected null"),
        ] {
            let row = conn.fetch_one(sql).await.expect(sql);
            let e = row.try_get::<Texts, _>("a").unwrap_err().to_string();
            assert!(e.contains(expected), "{sql}: {e}");
        }
        conn.close().await.ok();
    }
}
