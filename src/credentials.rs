//! Passwords that change while the provider runs: cloud access tokens
//! (Entra ID, RDS IAM), Vault leases, rotated secrets.
//!
//! A [`CredentialSource`] is asked for the password whenever the provider
//! opens a connection. A credential that says when it expires is cached and
//! refreshed ahead of its expiry ([`REFRESH_AHEAD`], or halfway through a
//! shorter life) in the background, so opening a connection
//! never waits for a token service; one without an expiry is asked for again at
//! every connection open (the source caches if it wants to). Opens that
//! find an expiring credential due at the same moment share one ask. Connections
//! already open keep working when the password changes (PostgreSQL checks it
//! only at login) and are replaced by the pool's max lifetime.
//!
//! Without a source, the password comes from the URL, else (as libpq does)
//! from `PGPASSWORD`, else from the file `PGPASSFILE` names or `~/.pgpass`.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use sqlx::postgres::PgConnectOptions;

/// What a [`CredentialSource`] may fail with.
pub type CredentialError = Box<dyn std::error::Error + Send + Sync>;

/// How long before its expiry a credential is replaced.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// A password or access token, and optionally when it stops working.
/// Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    password: String,
    expires_at: Option<SystemTime>,
}

impl Credential {
    /// A password that does not expire (or whose expiry the source handles).
    pub fn new(password: impl Into<String>) -> Self {
        Self {
            password: password.into(),
            expires_at: None,
        }
    }

    /// The same credential, valid until `at`: the provider asks the source for
    /// a new one [`REFRESH_AHEAD`] before then.
    #[must_use]
    pub fn expiring_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the credential stops working, if it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// When to replace it, judged when it was obtained at `now`:
    /// [`REFRESH_AHEAD`] before expiry, or halfway for a shorter-lived one (so
    /// a 60-second token is not asked for again every second). `None`: at
    /// every use.
    fn refresh_at(&self, now: SystemTime) -> Option<SystemTime> {
        let at = self.expires_at?;
        let left = at.duration_since(now).unwrap_or(Duration::ZERO);
        Some(at - REFRESH_AHEAD.min(left / 2))
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("password", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where the provider gets the password for each new connection.
///
/// Implement it for a token service, or wrap an async closure with
/// [`credential_fn`]. Errors are reported as retryable connection failures
/// (the runtime tries again); their text must not contain the secret.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The credential to log in with now.
    async fn credential(&self) -> Result<Credential, CredentialError>;
}

/// A [`CredentialSource`] made from an async closure; see [`credential_fn`].
pub struct FnCredentialSource<F>(F);

/// Wraps an async closure as a [`CredentialSource`]:
///
/// ```
/// use duroxide_pg::credentials::{Credential, credential_fn};
/// let source = credential_fn(|| async {
///     let token = std::env::var("DB_TOKEN")?;
///     Ok(Credential::new(token))
/// });
/// # let _ = source;
/// ```
pub fn credential_fn<F, Fut>(f: F) -> FnCredentialSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credential, CredentialError>> + Send,
{
    FnCredentialSource(f)
}

#[async_trait::async_trait]
impl<F, Fut> CredentialSource for FnCredentialSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credential, CredentialError>> + Send,
{
    async fn credential(&self) -> Result<Credential, CredentialError> {
        (self.0)().await
    }
}

/// The driver options a sqlx pool connects with, before the password.
pub(crate) type BaseOptions = Arc<dyn Fn() -> PgConnectOptions + Send + Sync>;

/// Told of every new credential.
type Subscriber = Box<dyn Fn(&Credential) + Send + Sync>;

/// The provider's view of a source: the cached credential and who else
/// (the sqlx pools for tools and the listener) must learn of a new one.
pub(crate) struct Credentials {
    source: Arc<dyn CredentialSource>,
    /// The current credential and when to replace it.
    cached: Mutex<Option<(Credential, Option<SystemTime>)>>,
    /// Held while the source is asked: connections that open at once, and the
    /// background refresher, when a token falls due ask the source once, not
    /// once each.
    asking: tokio::sync::Mutex<()>,
    /// Set by the provider's `close()`: the refresher stops.
    stopped: std::sync::atomic::AtomicBool,
    /// Called with every new credential (sqlx pools cannot ask us).
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Credentials {
    pub(crate) fn new(source: Arc<dyn CredentialSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            cached: Mutex::new(None),
            asking: tokio::sync::Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        })
    }

    /// `options` with the current password: the cached credential while it
    /// is not due, else a fresh one from the source.
    pub(crate) async fn apply(
        &self,
        options: PgConnectOptions,
    ) -> Result<PgConnectOptions, CredentialError> {
        let credential = self.current().await?;
        Ok(options.password(&credential.password))
    }

    /// The cached credential while it is not due, else a fresh one. Whoever
    /// waited for another caller's ask takes that answer instead of asking
    /// again; a credential without an expiry is asked for at every use.
    async fn current(&self) -> Result<Credential, CredentialError> {
        if let Some(c) = self.cached_if_not_due() {
            return Ok(c);
        }
        let _asking = self.asking.lock().await;
        match self.cached_if_not_due() {
            Some(c) => Ok(c),
            None => self.refresh().await,
        }
    }

    fn cached_if_not_due(&self) -> Option<Credential> {
        match self.cached.lock().expect("credential cache").as_ref() {
            Some((c, Some(refresh_at))) if SystemTime::now() < *refresh_at => Some(c.clone()),
            _ => None,
        }
    }

    /// [`Credentials::apply`] for opening a connection: a failing token
    /// service is an outage like a refused connection, so its error is
    /// reported as I/O (retryable; waited out like an unreachable server).
    pub(crate) async fn apply_for_connect(
        &self,
        options: PgConnectOptions,
    ) -> Result<PgConnectOptions, sqlx::Error> {
        self.apply(options).await.map_err(|e| {
            sqlx::Error::Io(std::io::Error::other(format!(
                "the credential source failed: {e}"
            )))
        })
    }

    /// Asks the source, caches the answer and tells the subscribers.
    async fn refresh(&self) -> Result<Credential, CredentialError> {
        let fresh = self.source.credential().await?;
        let refresh_at = fresh.refresh_at(SystemTime::now());
        *self.cached.lock().expect("credential cache") = Some((fresh.clone(), refresh_at));
        for notify in self.subscribers.lock().expect("subscribers").iter() {
            notify(&fresh);
        }
        Ok(fresh)
    }

    /// Keeps `pool`'s connect options (`base()` plus the password) current.
    /// `base` is asked each time: the host it names may change (failover).
    pub(crate) fn keep_current(&self, pool: &sqlx::PgPool, base: BaseOptions) {
        let pool = pool.clone();
        let push = move |c: &Credential| pool.set_connect_options(base().password(&c.password));
        if let Some((c, _)) = self.cached.lock().expect("credential cache").as_ref() {
            push(c);
        }
        self.subscribers
            .lock()
            .expect("subscribers")
            .push(Box::new(push));
    }

    /// `options` with the cached password, if one is cached (no call to the
    /// source): for pointing a sqlx pool at another host.
    pub(crate) fn with_cached_password(&self, options: PgConnectOptions) -> PgConnectOptions {
        match self.cached.lock().expect("credential cache").as_ref() {
            Some((c, _)) => options.password(&c.password),
            None => options,
        }
    }

    /// Stops the background refresher (the provider is closing).
    pub(crate) fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Refreshes an expiring credential [`REFRESH_AHEAD`] of its expiry, in
    /// the background, until the provider is dropped. A failed refresh is
    /// retried every few seconds (connection opens ask the source themselves
    /// meanwhile).
    pub(crate) fn spawn_refresher(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(this) = weak.upgrade() else { return };
                    if this.stopped.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    let refresh_at = this
                        .cached
                        .lock()
                        .expect("credential cache")
                        .as_ref()
                        .and_then(|(_, refresh_at)| *refresh_at);
                    match refresh_at {
                        // Nothing cached, or never expires: asked per connection.
                        None => return,
                        // At least a second apart, whatever the source answers.
                        Some(at) => at
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO)
                            .max(Duration::from_secs(1)),
                    }
                };
                tokio::time::sleep(wait).await;
                let Some(this) = weak.upgrade() else { return };
                if this.stopped.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                if let Err(e) = this.current().await {
                    tracing::warn!(
                        target: "duroxide_pg",
                        error = %e,
                        "refreshing the database credential failed; retrying in 5 s"
                    );
                    drop(this);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source that counts its calls and answers after `delay`, with a
    /// credential valid for `life`.
    fn slow_counting_source(
        asked: &Arc<AtomicUsize>,
        delay: Duration,
        life: Option<Duration>,
    ) -> Arc<dyn CredentialSource> {
        let asked = asked.clone();
        Arc::new(credential_fn(move || {
            asked.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                let c = Credential::new("pw");
                Ok(match life {
                    Some(life) => c.expiring_at(SystemTime::now() + life),
                    None => c,
                })
            }
        }))
    }

    /// Regression: connections opening at once each asked the source while
    /// the first ask was still out (a pool filling up, or a token falling due
    /// under load, sent a burst of calls to the token service).
    #[tokio::test]
    async fn callers_at_once_share_one_ask_of_an_expiring_credential() {
        let asked = Arc::new(AtomicUsize::new(0));
        let credentials = Credentials::new(slow_counting_source(
            &asked,
            Duration::from_millis(100),
            Some(Duration::from_secs(3600)),
        ));
        let answers = futures_util::future::join_all((0..5).map(|_| credentials.current())).await;
        assert!(answers.iter().all(|a| a.is_ok()));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        credentials.current().await.unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "a cached token not due is used"
        );
    }

    /// A credential that does not say when it expires is asked for at every
    /// use (a source that rotates passwords relies on it), callers at once
    /// included.
    #[tokio::test]
    async fn a_credential_without_expiry_is_asked_for_at_every_use() {
        let asked = Arc::new(AtomicUsize::new(0));
        let credentials = Credentials::new(slow_counting_source(
            &asked,
            Duration::from_millis(20),
            None,
        ));
        let answers = futures_util::future::join_all((0..3).map(|_| credentials.current())).await;
        assert!(answers.iter().all(|a| a.is_ok()));
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }
}
