//! Values Rust and the stored functions agree on, named once.
//!
//! The stored functions (the current text of each is in `schema/functions/`)
//! take small integer codes and text tags from Rust and raise SQLSTATEs of
//! their own. Each such value is defined here, and the tests at the bottom
//! read the generated `schema/functions/*.sql` files and fail when a function
//! and this module disagree: a `CASE` arm Rust never sends, a code Rust sends
//! that no arm handles, a SQLSTATE nobody maps.
//!
//! A leaf module: it uses nothing else of the crate.

/// The two queues, as named in wake-up hints and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// `orchestrator_queue`: instance leases.
    Orchestrator,
    /// `worker_queue`: activity peek-locks.
    Worker,
}

impl Queue {
    /// The queue's letter in hints: `notify_work(p_queue, ..)` and
    /// `notify_later(p_queue, ..)` receive it from their callers.
    pub(crate) const fn hint_letter(self) -> char {
        match self {
            Queue::Orchestrator => 'o',
            Queue::Worker => 'w',
        }
    }

    /// The queue a hint's first byte names.
    fn from_hint_letter(letter: u8) -> Option<Queue> {
        [Queue::Orchestrator, Queue::Worker]
            .into_iter()
            .find(|q| q.hint_letter() as u8 == letter)
    }
}

/// A wake-up hint, the payload of a `NOTIFY` on the schema's channel.
///
/// Formats (written by `notify_work`, `notify_later` and
/// `listener_heartbeat`): `<letter><count>`, `count` items visible now on
/// that queue (`o3`); `<letter>@<ms>`, an item becomes visible at that time
/// (`w@1767225600000`); [`HINT_HEARTBEAT`], no work, only proof that the
/// listener receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Items visible now; `count` is `None` when the number did not parse.
    Ready { queue: Queue, count: Option<u32> },
    /// An item becomes visible at `at` (ms since the epoch).
    Later { queue: Queue, at: i64 },
    /// A provider's listener heartbeat.
    Heartbeat,
}

/// The payload of `listener_heartbeat`.
pub(crate) const HINT_HEARTBEAT: &str = "h";

/// Separates the queue letter from the time in a [`Hint::Later`] payload.
pub(crate) const HINT_LATER_MARK: char = '@';

impl Hint {
    /// Parses a payload; `None` for one that names no queue or a
    /// malformed time (hints are advisory: a bad one is ignored).
    pub(crate) fn parse(payload: &str) -> Option<Hint> {
        if payload == HINT_HEARTBEAT {
            return Some(Hint::Heartbeat);
        }
        let queue = Queue::from_hint_letter(*payload.as_bytes().first()?)?;
        let rest = &payload[1..];
        if let Some(at) = rest.strip_prefix(HINT_LATER_MARK) {
            return at.parse().ok().map(|at| Hint::Later { queue, at });
        }
        Some(Hint::Ready {
            queue,
            count: rest.parse().ok(),
        })
    }
}

/// `ack_orchestration_item(.., p_custom_status_action, ..)`: what the turn
/// did to the instance's custom status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub(crate) enum CustomStatusAction {
    /// The turn did not touch it.
    Unchanged = 0,
    /// The turn set it to `p_custom_status`.
    Set = 1,
    /// The turn cleared it.
    Cleared = 2,
}

/// `apply_kv_operations(p_ops, ..)`: one key-value operation of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub(crate) enum KvOp {
    /// Set `key` to `value`.
    Set = 1,
    /// Remove `key`.
    ClearKey = 2,
    /// Remove every key of the instance.
    ClearAll = 3,
}

/// `fetch_work_item(.., p_tag_mode, p_tags)`: which activity tags a worker
/// takes (duroxide's `TagFilter`, minus `None`, which makes no call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub(crate) enum TagMode {
    /// Untagged activities only.
    UntaggedOnly = 0,
    /// Activities whose tag is in `p_tags`.
    Tagged = 1,
    /// Untagged activities and those whose tag is in `p_tags`.
    UntaggedOrTagged = 2,
    /// Everything.
    Any = 3,
}

/// The SQLSTATEs the stored functions raise for conditions the caller caused
/// (class `DX`, never retried: the same call would fail the same way).
/// `ProviderSqlState::of_error` (in `error`) reads one from a
/// `ProviderError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderSqlState {
    /// `DXT01`: no lease holds this lock token (never issued, acked, or
    /// taken over after it expired).
    UnknownLockToken,
    /// `DXT02`: the lease this token names has expired.
    LeaseExpired,
    /// `DXN01`: the instance does not exist.
    InstanceNotFound,
    /// `DXP01`: a precondition failed (deleting a running instance without
    /// force, a sub-orchestration directly, a tree that changed).
    Precondition,
    /// `DXI01`: an argument the function cannot interpret (an unknown KV
    /// operation code).
    InvalidArgument,
    /// `DXR01`: a retention batch's sweeper no longer holds the sweep lease
    /// (it expired, or another sweeper took it).
    RetentionLeaseLost,
}

impl ProviderSqlState {
    /// Every code.
    pub const ALL: [ProviderSqlState; 6] = [
        ProviderSqlState::UnknownLockToken,
        ProviderSqlState::LeaseExpired,
        ProviderSqlState::InstanceNotFound,
        ProviderSqlState::Precondition,
        ProviderSqlState::InvalidArgument,
        ProviderSqlState::RetentionLeaseLost,
    ];

    /// The provider code `code` is, if it is one.
    pub fn of(code: &str) -> Option<ProviderSqlState> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The five-character SQLSTATE.
    pub const fn code(self) -> &'static str {
        match self {
            ProviderSqlState::UnknownLockToken => "DXT01",
            ProviderSqlState::LeaseExpired => "DXT02",
            ProviderSqlState::InstanceNotFound => "DXN01",
            ProviderSqlState::Precondition => "DXP01",
            ProviderSqlState::InvalidArgument => "DXI01",
            ProviderSqlState::RetentionLeaseLost => "DXR01",
        }
    }
}

/// `orchestrator_queue.kind` values of the messages that start an execution:
/// an instance whose queue holds neither (and has no history) cannot run, so
/// `lease_instance` does not lease it. The kind
/// stored is the `WorkItem` variant's name (`codec::kind_name`).
#[cfg(test)]
pub(crate) const EXECUTION_STARTING_KINDS: [&str; 2] = [START_ORCHESTRATION, CONTINUE_AS_NEW];

/// `orchestrator_queue.kind` of `WorkItem::StartOrchestration`.
pub(crate) const START_ORCHESTRATION: &str = "StartOrchestration";
/// `orchestrator_queue.kind` of `WorkItem::ContinueAsNew`.
pub(crate) const CONTINUE_AS_NEW: &str = "ContinueAsNew";

#[cfg(test)]
mod tests {
    //! Each value above against the current text of the stored functions
    //! (`schema/functions/`, generated from the migrations and checked to
    //! match them by `migration-diff/tests/scripts.rs`).

    use super::*;
    use std::collections::BTreeSet;

    fn function(name: &str) -> String {
        let path = format!("{}/schema/functions/{name}.sql", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn all_functions() -> Vec<(String, String)> {
        let dir = format!("{}/schema/functions", env!("CARGO_MANIFEST_DIR"));
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| {
                let path = e.unwrap().path();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect();
        out.sort();
        assert!(out.len() > 20, "schema/functions looks empty: {out:?}");
        out
    }

    /// The numbers of the `WHEN <n> THEN` arms of the `CASE <selector>`
    /// blocks of `text` (each up to its `END`).
    fn case_arms(text: &str, selector: &str) -> Vec<BTreeSet<i64>> {
        let opener = format!("CASE {selector}");
        let mut blocks = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(&opener) {
            let body = &rest[at + opener.len()..];
            let end = body.find("END").expect("CASE without END");
            let arms = body[..end]
                .split("WHEN ")
                .skip(1)
                .map(|arm| {
                    let n = arm.split_whitespace().next().unwrap();
                    n.parse::<i64>()
                        .unwrap_or_else(|_| panic!("WHEN {n} is not a number"))
                })
                .collect();
            blocks.push(arms);
            rest = &body[end..];
        }
        blocks
    }

    #[test]
    fn tag_modes_match_fetch_work_item() {
        let all: BTreeSet<i64> = [
            TagMode::UntaggedOnly,
            TagMode::Tagged,
            TagMode::UntaggedOrTagged,
            TagMode::Any,
        ]
        .into_iter()
        .map(|m| m as i64)
        .collect();
        let text = function("fetch_work_item");
        let blocks = case_arms(&text, "p_tag_mode");
        assert!(!blocks.is_empty(), "fetch_work_item has no CASE p_tag_mode");
        for arms in blocks {
            // Any is the ELSE arm: every other mode has its own WHEN.
            let mut expected = all.clone();
            expected.remove(&(TagMode::Any as i64));
            assert_eq!(arms, expected, "fetch_work_item's tag-mode arms");
            assert!(
                text.contains("ELSE TRUE"),
                "TagMode::Any must match everything"
            );
        }
    }

    #[test]
    fn kv_operations_match_apply_kv_operations() {
        let text = function("apply_kv_operations");
        let blocks = case_arms(&text, "p_ops[i]");
        assert_eq!(blocks.len(), 1, "{text}");
        let expected: BTreeSet<i64> = [KvOp::Set, KvOp::ClearKey, KvOp::ClearAll]
            .into_iter()
            .map(|op| op as i64)
            .collect();
        assert_eq!(blocks[0], expected);
        // Anything else is refused with the provider's invalid-argument code.
        assert!(text.contains(ProviderSqlState::InvalidArgument.code()));
    }

    #[test]
    fn custom_status_actions_match_ack_orchestration_item() {
        let text = function("ack_orchestration_item");
        // Set stores the new value, Cleared stores NULL, Unchanged skips the update.
        assert!(
            text.contains(&format!(
                "CASE WHEN p_custom_status_action = {} THEN p_custom_status END",
                CustomStatusAction::Set as i16
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "p_custom_status_action <> {}",
                CustomStatusAction::Unchanged as i16
            )),
            "{text}"
        );
        // Any other non-zero code clears: Cleared is the only one Rust sends.
        assert_eq!(CustomStatusAction::Cleared as i16, 2);
    }

    #[test]
    fn every_provider_sqlstate_is_raised_and_every_raised_one_is_named() {
        let mut raised = BTreeSet::new();
        for (file, text) in all_functions() {
            for part in text.split("ERRCODE = '").skip(1) {
                let code = &part[..part.find('\'').unwrap()];
                assert!(
                    ProviderSqlState::ALL.iter().any(|s| s.code() == code),
                    "{file} raises {code}, which codes::ProviderSqlState does not name"
                );
                raised.insert(code.to_string());
            }
        }
        for state in ProviderSqlState::ALL {
            assert!(state.code().starts_with("DX"), "{state:?}: class DX");
            assert_eq!(ProviderSqlState::of(state.code()), Some(state));
            assert!(
                raised.contains(state.code()),
                "no stored function raises {state:?} ({})",
                state.code()
            );
        }
    }

    #[test]
    fn hint_letters_are_the_ones_the_functions_send() {
        let mut letters = BTreeSet::new();
        for (_, text) in all_functions() {
            for call in ["notify_work('", "notify_later('"] {
                for part in text.split(call).skip(1) {
                    letters.insert(part.chars().next().unwrap());
                }
            }
        }
        let ours: BTreeSet<char> = [Queue::Orchestrator, Queue::Worker]
            .into_iter()
            .map(Queue::hint_letter)
            .collect();
        assert_eq!(letters, ours);
        assert!(function("notify_work").contains("p_queue || p_count::TEXT"));
        assert!(
            function("listener_heartbeat")
                .contains(&format!("pg_notify(notify_channel(), '{HINT_HEARTBEAT}'"))
        );
        assert!(!letters.contains(&HINT_HEARTBEAT.chars().next().unwrap()));
        assert!(function("notify_later").contains(&format!(
            "p_queue || '{HINT_LATER_MARK}' || p_visible_at::TEXT"
        )));
    }

    #[test]
    fn hints_parse() {
        let o = Queue::Orchestrator;
        let w = Queue::Worker;
        assert_eq!(
            Hint::parse("o3"),
            Some(Hint::Ready {
                queue: o,
                count: Some(3)
            })
        );
        assert_eq!(
            Hint::parse("w"),
            Some(Hint::Ready {
                queue: w,
                count: None
            })
        );
        assert_eq!(Hint::parse("w@17"), Some(Hint::Later { queue: w, at: 17 }));
        assert_eq!(Hint::parse("h"), Some(Hint::Heartbeat));
        assert_eq!(Hint::parse("h1"), None);
        assert_eq!(Hint::parse("o@x"), None);
        assert_eq!(Hint::parse("x1"), None);
        assert_eq!(Hint::parse(""), None);
    }

    #[test]
    fn execution_starting_kinds_match_lease_instance() {
        let text = function("lease_instance");
        let list = EXECUTION_STARTING_KINDS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(text.contains(&format!("q.kind IN ({list})")), "{text}");
    }
}
