//! `/instances`: the instance list, filtered, newest first, a page at a time
//! (keyset pagination: "next" carries the last row, never an offset).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use duroxide_pg::dashboard::{InstanceCursor, InstanceQuery};
use maud::{Markup, html};
use serde::Deserialize;

use crate::AppState;
use crate::time::{now_ms, parse_any_moment};
use crate::view::{Failure, PageResult, instance_link, link, status, when};

/// The statuses a filter may name, as duroxide records them.
pub(crate) const STATUSES: [&str; 4] = ["Running", "Completed", "Failed", "ContinuedAsNew"];

/// The filter as the form sends it (every field optional, empty = any).
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct Filter {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub created_from: String,
    #[serde(default)]
    pub created_to: String,
    #[serde(default)]
    pub completed_from: String,
    #[serde(default)]
    pub completed_to: String,
}

impl Filter {
    /// The filter as query pairs, for links that keep it.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("status", self.status.as_str()),
            ("name", self.name.as_str()),
            ("prefix", self.prefix.as_str()),
            ("created_from", self.created_from.as_str()),
            ("created_to", self.created_to.as_str()),
            ("completed_from", self.completed_from.as_str()),
            ("completed_to", self.completed_to.as_str()),
        ]
    }

    /// The provider's query, or what is wrong with the filter.
    pub(crate) fn to_query(&self) -> Result<InstanceQuery, String> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let now = now_ms();
        let time = |what: &str, s: &str| {
            text(s)
                .map(|t| parse_any_moment(&t, now).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
        let status = text(&self.status);
        if let Some(s) = status.as_ref().filter(|s| !STATUSES.contains(&s.as_str())) {
            return Err(format!(
                "status {s:?} is not one of {}",
                STATUSES.join(", ")
            ));
        }
        Ok(InstanceQuery {
            status,
            name: text(&self.name),
            id_prefix: text(&self.prefix),
            created_from: time("created from", &self.created_from)?,
            created_to: time("created to", &self.created_to)?,
            completed_from: time("completed from", &self.completed_from)?,
            completed_to: time("completed to", &self.completed_to)?,
            finished_roots_only: false,
        })
    }

    /// The same filter with every relative time (`2h`) replaced by the UTC
    /// time it means now, so a confirmation and the action after it match
    /// the same instances however long the operator took to confirm.
    pub(crate) fn pinned(&self) -> Result<Filter, String> {
        let q = self.to_query()?;
        let at = |ms: Option<u64>| ms.map(crate::time::format_ms).unwrap_or_default();
        Ok(Filter {
            created_from: at(q.created_from),
            created_to: at(q.created_to),
            completed_from: at(q.completed_from),
            completed_to: at(q.completed_to),
            ..self.clone()
        })
    }

    /// The filter form, filled in.
    pub(crate) fn form(&self, state: &AppState) -> Markup {
        let input = |label: &str, name: &str, value: &str, hint: &str| {
            html! { label { (label) input type="text" name=(name) value=(value) placeholder=(hint); } }
        };
        html! {
            form.filters #filters method="get" action=(link(state, "/instances", &[])) {
                label { "status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in STATUSES { option value=(s) selected[self.status == s] { (s) } }
                    }
                }
                (input("orchestration", "name", &self.name, "exact name"))
                (input("id prefix", "prefix", &self.prefix, "order-"))
                (input("created from", "created_from", &self.created_from, "2026-12-01 or 2h"))
                (input("created to", "created_to", &self.created_to, "UTC time or age"))
                (input("completed from", "completed_from", &self.completed_from, "UTC time or age"))
                (input("completed to", "completed_to", &self.completed_to, "UTC time or age"))
                button type="submit" #apply { "Filter" }
                a.button.secondary href=(link(state, "/instances", &[])) { "Clear" }
            }
        }
    }
}

/// The list's query string: the filter and where the page starts.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    #[serde(flatten)]
    filter: Filter,
    // Strings: serde's flatten hands every value over as text.
    after_created: Option<String>,
    after_id: Option<String>,
    /// What the last action did (a code, never free text).
    done: Option<String>,
    n: Option<String>,
}

/// `GET /instances`.
pub(crate) async fn page(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> PageResult {
    let query = params
        .filter
        .to_query()
        .map_err(|e| Failure::new(&state, StatusCode::BAD_REQUEST, e))?;
    let after = match (params.after_created.as_deref(), params.after_id.as_deref()) {
        (Some(created), Some(id)) => Some(InstanceCursor {
            created_at: created.parse().map_err(|_| {
                Failure::new(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "after_created is not a time in ms",
                )
            })?,
            instance_id: id.to_string(),
        }),
        _ => None,
    };
    let purged: Option<u64> = params.n.as_deref().and_then(|n| n.parse().ok());
    let size = state.options.page_size;
    let mut rows = state
        .provider
        .dashboard_instances(&query, after.as_ref(), size + 1)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next = more.then(|| {
        let last = rows.last().expect("a full page").cursor();
        let created = last.created_at.to_string();
        let mut pairs = params.filter.pairs();
        pairs.push(("after_created", &created));
        pairs.push(("after_id", &last.instance_id));
        link(&state, "/instances", &pairs)
    });
    let body = html! {
        @match (params.done.as_deref(), purged) {
            (Some("purged"), Some(n)) => p.notice #notice { "Purged " (n) " instances (sub-orchestrations included)." },
            (Some("deleted"), _) => p.notice #notice { "Instance deleted." },
            _ => {}
        }
        (params.filter.form(&state))
        @if !state.options.read_only {
            div.actions {
                a.button.danger #purge href=(link(&state, "/actions/purge", &params.filter.pairs())) {
                    "Purge finished instances matching this filter…"
                }
            }
        }
        table #instances {
            thead { tr {
                th { "instance" } th { "orchestration" } th { "version" } th { "status" }
                th.num { "execution" } th { "created" } th { "completed" } th { "parent" }
            } }
            tbody {
                @for r in &rows {
                    tr.instance data-id=(r.instance_id) {
                        td.id { a href=(instance_link(&state, &r.instance_id)) { (r.instance_id) } }
                        td { (r.orchestration_name) }
                        td { (r.orchestration_version.as_deref().unwrap_or("–")) }
                        td { (status(&r.status)) }
                        td.num { (r.execution_id) }
                        td { (when(r.created_at)) }
                        td { @if let Some(c) = r.completed_at { (when(c)) } @else { "–" } }
                        td.id { @if let Some(p) = &r.parent_instance_id { a href=(instance_link(&state, p)) { (p) } } @else { "–" } }
                    }
                }
            }
        }
        @if rows.is_empty() { p.note #empty { "No instance matches." } }
        div.pager {
            @if after.is_some() { a.button.secondary #first-page href=(link(&state, "/instances", &params.filter.pairs())) { "First page" } }
            @if let Some(href) = &next { a.button #next-page href=(href) { "Next page" } }
        }
        p.note { "Newest first, " (size) " per page." }
    };
    Ok(crate::view::page(&state, "Instances", body))
}

#[cfg(test)]
mod tests {
    //! Property tests of the filter as the dashboard reads it from a query
    //! string. `PROPTEST_CASES=5000 cargo nextest run -p duroxide-pg-ui
    //! --lib pages::instances::` runs them longer.

    use axum::extract::Query;
    use proptest::prelude::*;

    use super::{Filter, ListParams, STATUSES};
    use crate::time::tests::{check, time_soup};

    /// What an operator types in a time field: nothing, blanks, a date, a
    /// date and time, an age.
    fn time_field() -> impl Strategy<Value = String> + 'static {
        let date = || (1970..=9999u32, 1..=12u32, 1..=28u32);
        prop_oneof![
            Just(String::new()),
            Just("  ".to_string()),
            date().prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            (date(), 0..24u32, 0..60u32, 0..60u32).prop_map(|((y, m, d), h, mi, s)| {
                format!(" {y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z ")
            }),
            (
                0..20_000u64,
                prop::sample::select(&['d', 'h', 'm', 's'][..])
            )
                .prop_map(|(n, u)| format!("{n}{u}")),
        ]
    }

    /// Filters with `text` in the status, name and prefix fields and
    /// `time` in the four time fields.
    fn filter(
        text: impl Strategy<Value = String> + 'static,
        time: impl Strategy<Value = String> + 'static,
    ) -> impl Strategy<Value = Filter> {
        let (text, time) = (text.boxed(), time.boxed());
        (
            text.clone(),
            text.clone(),
            text,
            time.clone(),
            time.clone(),
            time.clone(),
            time,
        )
            .prop_map(
                |(status, name, prefix, created_from, created_to, completed_from, completed_to)| {
                    Filter {
                        status,
                        name,
                        prefix,
                        created_from,
                        created_to,
                        completed_from,
                        completed_to,
                    }
                },
            )
    }

    /// Any text in any field never panics `to_query` (the request would
    /// fail without an answer); when it is accepted, the text fields are
    /// the trimmed input (blank = any) and the status is a stored one.
    #[test]
    fn any_filter_is_read_or_refused_without_panicking() {
        check(filter(time_soup(), time_soup()), |f| {
            if let Ok(q) = f.to_query() {
                let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
                prop_assert_eq!(q.name, text(&f.name));
                prop_assert_eq!(q.id_prefix, text(&f.prefix));
                prop_assert!(q.status.as_deref().is_none_or(|s| STATUSES.contains(&s)));
                prop_assert!(!q.finished_roots_only);
            }
            Ok(())
        });
    }

    /// The status filter takes exactly the statuses the store records
    /// (blanks around them allowed) or nothing, and refuses anything else.
    #[test]
    fn the_status_filter_takes_exactly_the_stored_statuses() {
        let status = prop_oneof![
            (
                prop::sample::select(&STATUSES[..]),
                prop::sample::select(&["", " ", "\t"][..]),
            )
                .prop_map(|(s, pad)| format!("{pad}{s}{pad}")),
            time_soup(),
            "[A-Za-z]{0,16}",
        ];
        check(status, |status| {
            let trimmed = status.trim();
            let f = Filter {
                status: status.clone(),
                ..Filter::default()
            };
            match f.to_query() {
                Ok(q) => {
                    prop_assert!(trimmed.is_empty() || STATUSES.contains(&trimmed));
                    prop_assert_eq!(q.status.as_deref(), Some(trimmed).filter(|s| !s.is_empty()));
                }
                Err(e) => {
                    prop_assert!(!trimmed.is_empty() && !STATUSES.contains(&trimmed));
                    prop_assert!(e.contains("is not one of"), "{}", e);
                }
            }
            Ok(())
        });
    }

    /// Pinning (ages replaced by the UTC time they mean now, before a purge
    /// is confirmed) is idempotent, leaves every absolute time and the text
    /// fields as they were, and moves an age's moment by less than a second
    /// (plus the time the test took between the two readings of now).
    #[test]
    fn pinning_a_filter_is_idempotent() {
        check(filter("[a-z]{0,4}", time_field()), |f| {
            let (Ok(before), Ok(pinned)) = (f.to_query(), f.pinned()) else {
                prop_assert!(f.to_query().is_err());
                return Ok(());
            };
            let again = pinned.pinned().expect("a pinned filter reads");
            prop_assert_eq!(again.pairs(), pinned.pairs());
            prop_assert_eq!(
                (&pinned.status, &pinned.name, &pinned.prefix),
                (&f.status, &f.name, &f.prefix)
            );
            let after = pinned.to_query().expect("a pinned filter reads");
            let fields = [
                (&f.created_from, before.created_from, after.created_from),
                (&f.created_to, before.created_to, after.created_to),
                (
                    &f.completed_from,
                    before.completed_from,
                    after.completed_from,
                ),
                (&f.completed_to, before.completed_to, after.completed_to),
            ];
            for (text, was, is) in fields {
                let is_age = text.trim().ends_with(['d', 'h', 'm', 's']);
                match (was, is) {
                    (None, None) => {}
                    (Some(was), Some(is)) if is_age => {
                        prop_assert!(
                            is + 1000 > was && is <= was + 60_000,
                            "{}: {} -> {}",
                            text,
                            was,
                            is
                        );
                    }
                    (was, is) => prop_assert_eq!(was, is, "{}", text),
                }
            }
            Ok(())
        });
    }

    /// A filter carried in a link (every value percent-encoded as
    /// `view::link` writes it, empty ones left out) reads back from the
    /// query string into the same filter and page cursor, whatever the
    /// values hold (`&`, `=`, `+`, `%`, `#`, any Unicode).
    #[test]
    fn filters_survive_a_link() {
        let case = (
            filter(any::<String>(), any::<String>()),
            any::<String>(),
            any::<String>(),
        );
        check(case, |(f, after_created, after_id)| {
            let mut pairs = f.pairs();
            pairs.push(("after_created", &after_created));
            pairs.push(("after_id", &after_id));
            // As `view::link` writes the query.
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
                q.append_pair(k, v);
            }
            let uri: axum::http::Uri = format!("/instances?{}", q.finish())
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let Query(back) = Query::<ListParams>::try_from_uri(&uri)
                .map_err(|e| TestCaseError::fail(format!("{uri}: {e}")))?;
            prop_assert_eq!(back.filter.pairs(), f.pairs());
            prop_assert_eq!(back.after_created.unwrap_or_default(), after_created);
            prop_assert_eq!(back.after_id.unwrap_or_default(), after_id);
            Ok(())
        });
    }
}
