//! The dashboard's HTTP surface, requests sent straight into its Router (no
//! browser): security headers on every response, credentials, CSRF and
//! origin checks, escaping in the HTML as sent, bad input, and the refusal
//! to listen beyond loopback without credentials.

use duroxide_pg_testkit::harness as common;

/// The end-to-end helpers reach the server directly.
const VIA: common::Via = common::Via::Direct;

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "common/mod.rs"]
mod common_ui;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common_ui::{HOSTILE, Scenario, csrf_cookie, get, post, send};
use duroxide::providers::ProviderAdmin;
use duroxide_pg_ui::{Auth, Dashboard, DashboardOptions, UiError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_the_security_headers_and_stored_markup_is_escaped() {
    let s = Scenario::new().await;
    let app = Dashboard::new(s.provider(), DashboardOptions::default()).router();
    let hostile_id = format!(
        "/instance?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("id", HOSTILE)
            .finish()
    );
    for uri in [
        "/",
        "/instances",
        "/instance?id=fail-1",
        hostile_id.as_str(),
        "/retention",
        "/overview/live",
        "/assets/htmx.min.js",
        "/assets/nope",
        "/instance?id=missing",
        "/instances?status=Bogus",
        "/no/such/page",
    ] {
        let r = get(&app, uri).await;
        let csp = r
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{uri}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
        assert_eq!(
            r.headers.get(header::X_FRAME_OPTIONS).unwrap(),
            "DENY",
            "{uri}"
        );
        assert_eq!(
            r.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff",
            "{uri}"
        );
        // No inline script anywhere: the only script is the vendored file.
        if r.headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.to_str().unwrap().starts_with("text/html"))
        {
            assert!(
                !r.body.contains("<script>") && !r.body.contains("onerror=\""),
                "{uri}"
            );
            assert!(r.body.matches("<script").count() <= 1, "{uri}");
            assert!(!r.body.contains("<img"), "{uri}: markup went out unescaped");
        }
    }
    let r = get(&app, &hostile_id).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("&lt;img src=x onerror="), "{}", r.body);
    assert_eq!(
        get(&app, "/instance?id=missing").await.status,
        StatusCode::NOT_FOUND
    );
    let bad = get(&app, "/instances?status=Bogus").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body
            .contains("is not one of Running, Completed, Failed, ContinuedAsNew"),
        "{}",
        bad.body
    );
    let bad = get(&app, "/instances?created_from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("created from: cannot read"),
        "{}",
        bad.body
    );
    // The raw download is plain text, never a page.
    let raw = get(&app, "/instance/raw?id=fail-1&field=output").await;
    assert_eq!(
        raw.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(
        raw.headers
            .get(header::CONTENT_DISPOSITION)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(raw.body.contains(HOSTILE));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_needs_its_csrf_token_and_our_origin() {
    let s = Scenario::new().await;
    let p = s.provider();
    let app = Dashboard::new(p.clone(), DashboardOptions::default()).router();
    let token = csrf_cookie(&get(&app, "/instances").await);
    let other = "f".repeat(64);
    let refused = [
        post(
            "/actions/delete",
            None,
            None,
            &format!("id=greet-03&csrf={token}"),
        ),
        post("/actions/delete", Some(&token), None, "id=greet-03"),
        post(
            "/actions/delete",
            Some(&token),
            None,
            &format!("id=greet-03&csrf={other}"),
        ),
        post(
            "/actions/delete",
            Some(&token),
            Some("http://evil.example"),
            &format!("id=greet-03&csrf={token}"),
        ),
    ];
    for req in refused {
        let r = send(&app, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    p.get_instance_info("greet-03")
        .await
        .expect("greet-03 was not deleted");
    // The same request with the token from our own origin deletes.
    let r = send(
        &app,
        post(
            "/actions/delete",
            Some(&token),
            Some("http://127.0.0.1:8080"),
            &format!("id=greet-03&csrf={token}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(p.get_instance_info("greet-03").await.is_err());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_when_configured() {
    let s = Scenario::new().await;
    let basic = Dashboard::new(
        s.provider(),
        DashboardOptions::default().with_auth(Some(Auth::basic("ops:correct horse").unwrap())),
    )
    .router();
    let r = get(&basic, "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert!(r.headers.get(header::CONTENT_SECURITY_POLICY).is_some());
    use base64::Engine;
    let with = |cred: &str| {
        Request::get("/instances")
            .header(
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(cred)
                ),
            )
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&basic, with("ops:correct horse")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&basic, with("ops:wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );

    let bearer = Dashboard::new(
        s.provider(),
        DashboardOptions::default().with_auth(Some(Auth::bearer("t0ken").unwrap())),
    )
    .router();
    let req = Request::get("/")
        .header(header::AUTHORIZATION, "Bearer t0ken")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&bearer, req).await.status, StatusCode::OK);
    let req = Request::get("/")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&bearer, req).await.status, StatusCode::UNAUTHORIZED);
    s.finish().await;
}

#[tokio::test]
async fn a_non_loopback_address_without_credentials_is_refused() {
    let open = DashboardOptions::default();
    match duroxide_pg_ui::bind("0.0.0.0:0".parse().unwrap(), &open).await {
        Err(UiError::Unauthenticated(m)) => assert!(m.contains("DUROXIDE_PG_UI_TOKEN"), "{m}"),
        other => panic!(
            "bound without credentials: {:?}",
            other.map(|l| l.local_addr())
        ),
    }
    let with_auth = DashboardOptions::default().with_auth(Some(Auth::bearer("t").unwrap()));
    let l = duroxide_pg_ui::bind("0.0.0.0:0".parse().unwrap(), &with_auth)
        .await
        .unwrap();
    assert!(l.local_addr().unwrap().ip().is_unspecified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_under_a_base_path_every_link_stays_inside_it() {
    let s = Scenario::new().await;
    let dashboard = Dashboard::new(
        s.provider(),
        DashboardOptions::default().with_base_path("/ops/"),
    );
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the service's own page" }),
        )
        .nest("/ops", dashboard.router());
    let first = get(&app, "/ops").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let cookie = first
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cookie.contains("Path=/ops;"), "{cookie}");
    // Every link and asset the pages name is under /ops and answers.
    let mut seen = std::collections::BTreeSet::new();
    for page in ["/ops", "/ops/instances", "/ops/instance?id=parent-1"] {
        let body = get(&app, page).await.body;
        for part in body.split(['"']).filter(|p| p.starts_with('/')) {
            let target = part.replace("&amp;", "&");
            assert!(
                target.starts_with("/ops"),
                "{page} links outside /ops: {target}"
            );
            seen.insert(target);
        }
    }
    for target in &seen {
        let r = get(&app, target).await;
        assert_eq!(r.status, StatusCode::OK, "{target}: {}", r.body);
    }
    assert!(
        seen.iter().any(|t| t.starts_with("/ops/instance?id=")),
        "{seen:?}"
    );
    // A state change redirects back inside /ops.
    let token = csrf_cookie(&first);
    let r = send(
        &app,
        post(
            "/ops/actions/delete",
            Some(&token),
            None,
            &format!("id=greet-05&csrf={token}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let to = r.headers.get(header::LOCATION).unwrap().to_str().unwrap();
    assert!(to.starts_with("/ops/instances"), "{to}");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origin_signals_decide_and_the_largest_page_size_works() {
    let s = Scenario::new().await;
    let p = s.provider();
    let app = Dashboard::new(p.clone(), DashboardOptions::default().with_page_size(500)).router();
    let list = get(&app, "/instances").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let token = csrf_cookie(&list);
    assert!(
        !list
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    // Behind a TLS-terminating proxy the cookie is Secure.
    let https = send(
        &app,
        Request::get("/instances")
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let set = https
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(set.contains("; Secure"), "{set}");
    let delete = |id: &str, headers: &[(&str, &str)]| {
        let mut req = post(
            "/actions/delete",
            Some(&token),
            None,
            &format!("id={id}&csrf={token}"),
        );
        for (k, v) in headers {
            req.headers_mut().insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req
    };
    // Refused: the browser says cross-site, or a sandboxed frame's null origin.
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "null")][..],
    ] {
        let r = send(&app, delete("greet-06", headers)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}: {}", r.body);
    }
    p.get_instance_info("greet-06")
        .await
        .expect("greet-06 stays");
    // Behind a proxy that rewrites Host, the browser's own signal decides.
    let r = send(
        &app,
        delete(
            "greet-06",
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://ops.example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(p.get_instance_info("greet-06").await.is_err());
    // Or the Host it forwarded.
    let r = send(
        &app,
        delete(
            "greet-07",
            &[
                ("origin", "https://ops.example.com"),
                ("x-forwarded-host", "ops.example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

    // A purge confirmation pins relative times: the POST matches what was counted.
    let form = get(&app, "/actions/purge?prefix=greet-&created_from=1h").await;
    let pinned = form
        .body
        .split("name=\"created_from\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no created_from field: {}", form.body));
    assert!(
        pinned.starts_with("20") && pinned.ends_with('Z'),
        "{pinned}"
    );
    s.finish().await;
}
