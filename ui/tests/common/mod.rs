//! What the dashboard tests share: a store filled by a real duroxide runtime
//! (finished, failed, waiting and parent/child instances, and ones whose id,
//! output and event carry markup), the dashboard served on a free loopback
//! port, and headless Chromium driven through chromedriver.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use duroxide::runtime::Runtime;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{ActivityContext, OrchestrationContext, OrchestrationRegistry};
use duroxide_pg::PostgresProvider;
use duroxide_pg_ui::DashboardOptions;
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::support::Env;

/// Markup an attacker could store: as an id, an output, an event name.
pub const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\">";

/// Completed "Greet" instances the scenario starts.
pub const GREETED: usize = 12;

fn activities() -> ActivityRegistry {
    // "Flaky" fails its first attempt (per process: one scenario per test process).
    static FLAKY_CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    ActivityRegistry::builder()
        .register("Hello", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("hello {name}"))
        })
        .register("Flaky", |_ctx: ActivityContext, input: String| async move {
            if FLAKY_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Err("first attempt fails".to_string());
            }
            Ok(format!("flaky {input}"))
        })
        .build()
}

/// "Greet" calls activity Hello; "Fail" fails with its input; "Waiter"
/// sets a custom status and a KV entry, then waits for event "go";
/// "Parent" runs a Greet child; "Chain" continues as new up to its fourth
/// execution; "Retry" calls "Flaky" (whose first attempt fails) with retries;
/// "Gpu" calls Hello on session "s-1" with tag "gpu".
fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Greet",
            |ctx: OrchestrationContext, name: String| async move {
                ctx.schedule_activity("Hello", name).await
            },
        )
        .register(
            "Fail",
            |_ctx: OrchestrationContext, why: String| async move { Err::<String, String>(why) },
        )
        .register(
            "Waiter",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.set_custom_status(format!("waiting for go ({input})"));
                ctx.set_kv_value("stage", "waiting");
                let data = ctx.schedule_wait("go").await;
                Ok(format!("got {data}"))
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_sub_orchestration("Greet", "child").await
            },
        )
        .register("Chain", |ctx: OrchestrationContext, n: String| async move {
            let n: u32 = n.parse().map_err(|e| format!("{e}"))?;
            if n < 4 {
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok(format!("done at {n}"))
        })
        .register(
            "Retry",
            |ctx: OrchestrationContext, input: String| async move {
                let policy =
                    duroxide::RetryPolicy::new(3).with_backoff(duroxide::BackoffStrategy::Fixed {
                        delay: Duration::from_millis(50),
                    });
                ctx.schedule_activity_with_retry("Flaky", input, policy)
                    .await
            },
        )
        .register(
            "Gpu",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity_on_session("Hello", input, "s-1")
                    .with_tag("gpu")
                    .await
            },
        )
        .build()
}

/// A store a runtime filled, the runtime still running (for the waiters).
pub struct Scenario {
    pub env: Env,
    /// The runtime for everything untagged, and one serving tag "gpu".
    pub runtimes: [Arc<Runtime>; 2],
}

impl Scenario {
    /// greet-01..greet-12 completed, fail-1 failed, waiter-1 and waiter-2
    /// waiting for "go", parent-1 completed with a child, chain-1 completed
    /// in its fourth execution (continue-as-new), retry-1 completed on its
    /// activity's second attempt, gpu-1 completed by an activity on a
    /// session with tag "gpu" (run by a second runtime that serves only that
    /// tag), and an instance whose id and output are [`HOSTILE`].
    pub async fn new() -> Self {
        let env = Env::new().await;
        let runtime = env.start(activities(), orchestrations()).await;
        let gpu = env
            .start_with(
                activities(),
                // The same application on both, as a deployment runs it.
                orchestrations(),
                duroxide::runtime::RuntimeOptions {
                    worker_tag_filter: duroxide::providers::TagFilter::tags(["gpu"]),
                    ..crate::support::fast_options()
                },
            )
            .await;
        let c = &env.client;
        for i in 1..=GREETED {
            c.start_orchestration(format!("greet-{i:02}"), "Greet", format!("n{i}"))
                .await
                .unwrap();
        }
        c.start_orchestration("fail-1", "Fail", HOSTILE)
            .await
            .unwrap();
        c.start_orchestration("parent-1", "Parent", "")
            .await
            .unwrap();
        c.start_orchestration(HOSTILE, "Greet", HOSTILE)
            .await
            .unwrap();
        c.start_orchestration("chain-1", "Chain", "1")
            .await
            .unwrap();
        c.start_orchestration("retry-1", "Retry", "r")
            .await
            .unwrap();
        c.start_orchestration("gpu-1", "Gpu", "g").await.unwrap();
        for w in ["waiter-1", "waiter-2"] {
            c.start_orchestration(w, "Waiter", w).await.unwrap();
        }
        for i in 1..=GREETED {
            env.wait_completed(&format!("greet-{i:02}")).await;
        }
        env.wait_failed("fail-1").await;
        env.wait_completed("parent-1").await;
        env.wait_completed(HOSTILE).await;
        assert_eq!(env.wait_completed("chain-1").await, "done at 4");
        assert_eq!(env.wait_completed("retry-1").await, "flaky r");
        assert_eq!(env.wait_completed("gpu-1").await, "hello g");
        env.wait_subscribed("waiter-1", "go").await;
        env.wait_subscribed("waiter-2", "go").await;
        Self {
            env,
            runtimes: [runtime, gpu],
        }
    }

    pub fn provider(&self) -> Arc<PostgresProvider> {
        self.env.provider.clone()
    }

    pub async fn finish(self) {
        self.env.finish(self.runtimes).await;
    }
}

/// The dashboard served on a free loopback port until dropped.
pub struct Served {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), duroxide_pg_ui::UiError>>>,
}

impl Served {
    pub async fn start(provider: Arc<PostgresProvider>, options: DashboardOptions) -> Self {
        let listener = duroxide_pg_ui::bind("127.0.0.1:0".parse().unwrap(), &options)
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(duroxide_pg_ui::serve_on(
            listener,
            provider,
            options,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            base,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// chromedriver with headless Chromium; killed when dropped.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match fantoccini::ClientBuilder::native()
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                // chromedriver not listening yet: its start is what we wait for.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Self { client, driver }
    }

    /// Closes the session and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// The end of a browser test, in order: the browser, the dashboards it
/// used, then the runtime and the schema.
pub async fn finish(
    browser: Browser,
    served: impl IntoIterator<Item = Served>,
    scenario: Scenario,
) {
    browser.close().await;
    for s in served {
        s.stop().await;
    }
    scenario.finish().await;
}

/// A response from the Router, its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: String,
}

/// Sends `req` straight into `app` (no socket).
pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = to_bytes(r.into_body(), 1 << 24).await.unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET uri`.
pub async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// The CSRF token a first visit set as a cookie.
pub fn csrf_cookie(r: &Reply) -> String {
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .expect("a CSRF cookie")
        .to_str()
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

/// A form POST from host 127.0.0.1:8080, with the CSRF cookie and `Origin` if given.
pub fn post(uri: &str, cookie: Option<&str>, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:8080");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("dxpg_csrf={c}"));
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_string())).unwrap()
}
