//! The dashboard in a real browser: headless Chromium through chromedriver
//! (WebDriver), on a store a duroxide runtime filled. Pages show the stored
//! data, filters and pagination work, every action changes the store,
//! markup stored by an attacker shows as text, a POST without its CSRF
//! token is refused, and read-only mode hides and refuses actions.
//!
//! With `DUROXIDE_PG_UI_SCREENSHOTS=DIR` the first test also saves the
//! screenshots docs/operations.md shows.

use duroxide_pg_testkit::harness as common;

/// The end-to-end helpers reach the server directly.
const VIA: common::Via = common::Via::Direct;

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "common/mod.rs"]
mod common_ui;

use common_ui::{Browser, GREETED, HOSTILE, Scenario, Served};
use duroxide::OrchestrationStatus;
use duroxide::providers::ProviderAdmin;
use duroxide_pg_ui::DashboardOptions;
use fantoccini::{Client, Locator};

/// The element `css` names, waiting (bounded) for a page still loading.
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(support::WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn ids_on_page(c: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for row in c.find_all(Locator::Css("tr.instance")).await.unwrap() {
        ids.push(row.attr("data-id").await.unwrap().unwrap());
    }
    ids
}

/// Clicks what `css` names and waits (bounded) until the page it leads to
/// has replaced this one. Every click here follows a link or submits a
/// form, and the page after it can hold elements the page before held too
/// (`tr.instance`, `#next-page`): read at once, they were the old page's,
/// or went stale while being read (seen in CI on two busy cores).
async fn click(c: &Client, css: &str) {
    let page = c.find(Locator::Css("html")).await.unwrap();
    find(c, css).await.click().await.unwrap();
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        match page.tag_name().await {
            Err(e) if e.is_stale_element_reference() => return,
            Err(e) => panic!("{css}: {e}"),
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "{css}: the page it leads to did not replace this one within {:?}",
                support::WAIT
            ),
        }
        // Polled like fantoccini's own waits: WebDriver has no event for it.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("DUROXIDE_PG_UI_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

fn path(base: &str, rest: &str) -> String {
    format!("{base}{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_what_the_runtime_stored_and_filters_page_through_it() {
    let s = Scenario::new().await;
    // No refresh while the test reads the overview (a swap would make its
    // elements stale).
    let options = DashboardOptions::default()
        .with_page_size(5)
        .with_refresh(std::time::Duration::from_secs(3600));
    let served = Served::start(s.provider(), options).await;
    let b = Browser::start().await;
    let c = &b.client;

    // Overview: counts by status, queues, the chart of the last hour.
    c.goto(&served.base).await.unwrap();
    let completed = GREETED + 6; // + parent-1, its child, chain-1, retry-1, gpu-1, the hostile one
    assert_eq!(
        text(c, "#status-counts [data-status=Completed] .n").await,
        completed.to_string()
    );
    assert_eq!(text(c, "#status-counts [data-status=Failed] .n").await, "1");
    assert_eq!(
        text(c, "#status-counts [data-status=Running] .n").await,
        "2"
    );
    assert_eq!(count(c, "#queues tr[data-queue]").await, 3);
    assert_eq!(text(c, "#completed-hour").await, completed.to_string());
    assert_eq!(text(c, "#failed-hour").await, "1");
    assert!(count(c, "#activity-chart rect.completed").await >= 1);
    screenshot(c, "overview").await;

    // The list filtered by status.
    c.goto(&path(&served.base, "/instances?status=Failed"))
        .await
        .unwrap();
    assert_eq!(ids_on_page(c).await, vec!["fail-1".to_string()]);

    // Filter through the form: id prefix "greet-", pages of 5: 5, 5, 2.
    c.goto(&path(&served.base, "/instances")).await.unwrap();
    c.find(Locator::Css("input[name=prefix]"))
        .await
        .unwrap()
        .send_keys("greet-")
        .await
        .unwrap();
    click(c, "#apply").await;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let ids = ids_on_page(c).await;
        pages.push(ids.len());
        seen.extend(ids);
        if count(c, "#next-page").await == 0 {
            break;
        }
        click(c, "#next-page").await;
    }
    assert_eq!(pages, vec![5, 5, 2]);
    let mut expected: Vec<String> = (1..=GREETED).map(|i| format!("greet-{i:02}")).collect();
    // Newest first, as the provider lists them.
    let listed: Vec<String> = s
        .provider()
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|id| id.starts_with("greet-"))
        .collect();
    assert_eq!(seen, listed);
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(count(c, "#first-page").await, 1);

    // Created in a window that holds everything, and one that holds nothing.
    c.goto(&path(
        &served.base,
        "/instances?prefix=greet-&created_from=1h",
    ))
    .await
    .unwrap();
    assert_eq!(ids_on_page(c).await.len(), 5);
    c.goto(&path(
        &served.base,
        "/instances?prefix=greet-&created_to=2000-01-01",
    ))
    .await
    .unwrap();
    assert_eq!(count(c, "#empty").await, 1);
    c.goto(&path(&served.base, "/instances")).await.unwrap();
    screenshot(c, "instances").await;

    // An instance page: info, executions, the history as a timeline with
    // the time between an activity's scheduling and its completion.
    c.goto(&path(&served.base, "/instance?id=greet-01"))
        .await
        .unwrap();
    assert_eq!(text(c, "#instance-id").await, "greet-01");
    assert!(text(c, "#output").await.contains("hello n1"));
    let kinds: Vec<String> = {
        let mut k = Vec::new();
        for e in c.find_all(Locator::Css("#history tr.event")).await.unwrap() {
            k.push(e.attr("data-kind").await.unwrap().unwrap());
        }
        k
    };
    assert_eq!(
        kinds,
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );
    assert!(
        text(c, "#history tr[data-kind=ActivityCompleted] .latency")
            .await
            .ends_with('s')
    );
    assert_eq!(count(c, "#executions tbody tr").await, 1);

    // Parent and child link each other.
    c.goto(&path(&served.base, "/instance?id=parent-1"))
        .await
        .unwrap();
    assert_eq!(count(c, "#tree tbody tr").await, 1);
    screenshot(c, "instance").await;
    click(c, "#tree tbody a").await;
    assert_eq!(text(c, "#parent").await, "parent-1");

    // A continue-as-new chain: four executions, each with its own history.
    c.goto(&path(&served.base, "/instance?id=chain-1"))
        .await
        .unwrap();
    assert_eq!(count(c, "#executions tbody tr").await, 4);
    assert!(text(c, "#output").await.contains("done at 4"));
    click(c, "#executions a[href*='execution=1']").await;
    assert_eq!(
        count(c, "#history tr[data-kind=OrchestrationContinuedAsNew]").await,
        1
    );
    // A retried activity: the failed attempt and the one that succeeded.
    c.goto(&path(&served.base, "/instance?id=retry-1"))
        .await
        .unwrap();
    assert_eq!(count(c, "#history tr[data-kind=ActivityFailed]").await, 1);
    assert_eq!(
        count(c, "#history tr[data-kind=ActivityCompleted]").await,
        1
    );

    // An activity on a session with a tag, run by the runtime serving it.
    c.goto(&path(&served.base, "/instance?id=gpu-1"))
        .await
        .unwrap();
    let scheduled = text(c, "#history tr[data-kind=ActivityScheduled]").await;
    assert!(
        scheduled.contains("\"tag\": \"gpu\"") && scheduled.contains("\"session_id\": \"s-1\""),
        "{scheduled}"
    );

    // Custom status and KV of a waiting instance.
    c.goto(&path(&served.base, "/instance?id=waiter-1"))
        .await
        .unwrap();
    assert!(
        text(c, "#custom-status")
            .await
            .contains("waiting for go (waiter-1)")
    );
    assert!(text(c, "#kv").await.contains("stage"));

    c.goto(&path(&served.base, "/retention")).await.unwrap();
    assert!(text(c, "#policy").await.contains("none stored"));
    assert!(text(c, "#retention").await.contains("fail-1"));

    common_ui::finish(b, [served], s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_markup_shows_as_text() {
    let s = Scenario::new().await;
    let served = Served::start(s.provider(), DashboardOptions::default()).await;
    let b = Browser::start().await;
    let c = &b.client;

    // An event whose name is markup, raised through the dashboard.
    c.goto(&path(&served.base, "/actions/raise-event?id=waiter-1"))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys(HOSTILE)
        .await
        .unwrap();
    c.find(Locator::Css("textarea[name=data]"))
        .await
        .unwrap()
        .send_keys(HOSTILE)
        .await
        .unwrap();
    click(c, "#confirm-raise").await;
    assert!(text(c, "#notice").await.contains("Event raised"));
    support::wait_until("the hostile event in waiter-1's history", || async {
        let h = s.provider().read_history("waiter-1").await.unwrap();
        h.iter()
            .any(|e| serde_json::to_string(&e.kind).unwrap().contains("onerror"))
            .then_some(())
    })
    .await;

    let mut hostile_url = String::from("/instance?");
    hostile_url.push_str(&form_query(&[("id", HOSTILE)]));
    for page in [
        hostile_url.as_str(),
        "/instance?id=fail-1",
        "/instance?id=waiter-1",
        "/instances",
    ] {
        c.goto(&path(&served.base, page)).await.unwrap();
        assert_eq!(count(c, "img").await, 0, "{page}: markup was rendered");
        assert_ne!(c.title().await.unwrap(), "pwned", "{page}: a script ran");
        // As text (inside a JSON payload its quotes are escaped).
        let body = text(c, "main").await;
        assert!(
            body.contains("<img src=x onerror="),
            "{page}: the markup is not shown as text"
        );
    }
    c.goto(&path(&served.base, &hostile_url)).await.unwrap();
    assert_eq!(text(c, "#instance-id").await, HOSTILE);

    common_ui::finish(b, [served], s).await;
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    let mut q = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        q.push_str(k);
        q.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
    }
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_changes_the_store() {
    let s = Scenario::new().await;
    let p = s.provider();
    let served = Served::start(p.clone(), DashboardOptions::default()).await;
    let b = Browser::start().await;
    let c = &b.client;

    // Cancel waiter-1: the runtime ends it as cancelled.
    c.goto(&path(&served.base, "/instance?id=waiter-1"))
        .await
        .unwrap();
    click(c, "#cancel").await;
    click(c, "#confirm-cancel").await;
    assert!(text(c, "#notice").await.contains("Cancellation requested"));
    match s
        .env
        .client
        .wait_for_orchestration("waiter-1", support::WAIT)
        .await
        .unwrap()
    {
        OrchestrationStatus::Failed { details, .. } => {
            assert!(
                format!("{details:?}").to_lowercase().contains("cancel"),
                "{details:?}"
            )
        }
        other => panic!("waiter-1 was not cancelled: {other:?}"),
    }

    // Raise "go" on waiter-2: it completes with the data.
    c.goto(&path(&served.base, "/instance?id=waiter-2"))
        .await
        .unwrap();
    click(c, "#raise-event").await;
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys("go")
        .await
        .unwrap();
    c.find(Locator::Css("textarea[name=data]"))
        .await
        .unwrap()
        .send_keys("from the browser")
        .await
        .unwrap();
    click(c, "#confirm-raise").await;
    assert_eq!(
        s.env.wait_completed("waiter-2").await,
        "got from the browser"
    );

    // Delete greet-01.
    c.goto(&path(&served.base, "/instance?id=greet-01"))
        .await
        .unwrap();
    click(c, "#delete").await;
    click(c, "#confirm-delete").await;
    assert!(text(c, "#notice").await.contains("deleted"));
    assert!(p.get_instance_info("greet-01").await.is_err());

    // Purge everything the filter "greet-" matches: the count first.
    c.goto(&path(&served.base, "/instances?prefix=greet-"))
        .await
        .unwrap();
    click(c, "#purge").await;
    let shown = c.find(Locator::Css("#purge-count")).await.unwrap();
    assert_eq!(
        shown.attr("data-count").await.unwrap().unwrap(),
        (GREETED - 1).to_string()
    );
    click(c, "#confirm-purge").await;
    assert!(
        text(c, "#notice")
            .await
            .contains(&format!("Purged {}", GREETED - 1))
    );
    let left: Vec<String> = p
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|id| id.starts_with("greet-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Nothing else went.
    for id in ["fail-1", "parent-1", "waiter-1", "waiter-2", HOSTILE] {
        p.get_instance_info(id).await.unwrap();
    }

    common_ui::finish(b, [served], s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_posts_and_read_only_mode_are_refused() {
    let s = Scenario::new().await;
    let p = s.provider();
    let writable = Served::start(p.clone(), DashboardOptions::default()).await;
    let read_only = Served::start(p.clone(), DashboardOptions::default().read_only(true)).await;
    let b = Browser::start().await;
    let c = &b.client;

    // A POST from the page's own origin, with the cookie, but without the
    // form's token (and with a wrong one): refused, nothing deleted.
    c.goto(&path(&writable.base, "/instance?id=greet-02"))
        .await
        .unwrap();
    for body in ["id=greet-02", "id=greet-02&csrf=00"] {
        let status = c
            .execute_async(
                "const [body, done] = arguments;
                 fetch('/actions/delete', {method: 'POST', body,
                        headers: {'Content-Type': 'application/x-www-form-urlencoded'}})
                   .then(r => done(r.status));",
                vec![body.into()],
            )
            .await
            .unwrap();
        assert_eq!(status, 403, "{body}");
    }
    p.get_instance_info("greet-02").await.unwrap();

    // Read-only: no action is offered, and a direct visit or POST is refused.
    for page in [
        "/instance?id=waiter-1",
        "/instance?id=greet-02",
        "/instances",
    ] {
        c.goto(&path(&read_only.base, page)).await.unwrap();
        assert_eq!(text(c, "#read-only").await, "read-only");
        for action in ["#cancel", "#raise-event", "#delete", "#purge"] {
            assert_eq!(count(c, action).await, 0, "{page} offers {action}");
        }
    }
    c.goto(&path(&read_only.base, "/actions/cancel?id=waiter-1"))
        .await
        .unwrap();
    assert!(text(c, "#error").await.contains("read-only"));
    let status = c
        .execute_async(
            "const [done] = arguments;
             fetch('/actions/cancel', {method: 'POST', body: 'id=waiter-1&reason=x',
                    headers: {'Content-Type': 'application/x-www-form-urlencoded'}})
               .then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    // waiter-1 still waits, and no message for it (a cancellation) is queued.
    assert_eq!(
        p.get_instance_info("waiter-1").await.unwrap().status,
        "Running"
    );
    let queued = p.queue_overview().await.unwrap();
    assert_eq!(
        queued.iter().map(|q| q.ready + q.delayed).sum::<u64>(),
        0,
        "{queued:?}"
    );

    common_ui::finish(b, [writable, read_only], s).await;
}

/// The overview updates itself in place (htmx, loaded under the CSP, swaps
/// the live part): a completion after the page loaded shows without a
/// reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_refreshes_itself() {
    let s = Scenario::new().await;
    let options = DashboardOptions::default().with_refresh(std::time::Duration::from_secs(1));
    let served = Served::start(s.provider(), options).await;
    let b = Browser::start().await;
    let c = &b.client;
    c.goto(&served.base).await.unwrap();
    // Read in one script step: the element may be swapped out between a
    // WebDriver find and its text.
    let completed = || async {
        c.execute(
            "return document.getElementById('completed-hour')?.textContent ?? ''",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .and_then(|t| t.parse::<usize>().ok())
    };
    let before = completed().await.expect("the count");
    // Marks this page: a reload would lose it.
    c.execute("document.body.dataset.loaded = 'once'", vec![])
        .await
        .unwrap();
    s.env
        .client
        .start_orchestration("greet-late", "Greet", "late")
        .await
        .unwrap();
    s.env.wait_completed("greet-late").await;
    support::wait_until("the overview to show the new completion", || async {
        (completed().await? == before + 1).then_some(())
    })
    .await;
    let mark = c
        .execute("return document.body.dataset.loaded", vec![])
        .await
        .unwrap();
    assert_eq!(
        mark, "once",
        "the page was reloaded, not refreshed in place"
    );
    common_ui::finish(b, [served], s).await;
}
