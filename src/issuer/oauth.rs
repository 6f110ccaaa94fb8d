//! An `oauth_client` credential: the broker's entry holds the OAuth app's
//! client id and secret (read and refreshed from its store like any stored
//! credential); this issuer exchanges them at Twilio for bearer tokens and
//! serves only those. The client secret never leaves the daemon.
//!
//! One task per credential keeps the token:
//! - it fetches one at start, again once two thirds of its life have
//!   passed, and at once when the stored document changes (a new secret);
//! - a fetch that fails for a passing reason (Twilio down, 429/5xx, no
//!   answer) keeps the current token served `stale` until its own expiry,
//!   then UNAVAILABLE, and is retried with the shared backoff;
//! - a refused secret (401/403) drops the token: UNAVAILABLE at once,
//!   naming the credential and Twilio's code, until a fetch succeeds (the
//!   next store change, or the backoff's next try);
//! - the stored app unavailable (its secret gone from the store, or its
//!   store down past `max_stale`) makes the token unavailable too, as for
//!   any other kind.
//!
//! Every change is published, so watchers get each new token, the stale
//! flag and the expiry. A lease ends with its token (`expires_at` is the
//! token's own expiry). A replaced token is freed, and wiped, once no lease
//! holds it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Caller, IssueError, Issuer};
use crate::{
    broker::{
        Broker, BrokerError, Entry, Lease, LeaseStream, Loaded, Renew, Snapshot, Unavailability,
    },
    clock::Clock,
    config::AllowList,
    credential::{CredentialDocument, OAuthClientId, Secret, TwilioCredential},
    secret::SecretString,
    twilio::{TwilioClient, TwilioError, oauth::BearerToken},
};

/// First wait after a failed fetch; doubled per failure (with jitter).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between fetches that fail for a passing reason.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Longest wait between fetches with a refused secret (a store change
/// triggers one at once).
const MAX_REFUSED_RETRY: Duration = Duration::from_secs(300);

/// Where bearer tokens come from: Twilio, or a test's script.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A token for app `client_id` with `client_secret`, its life counted
    /// from `now`.
    async fn fetch(
        &self,
        client_id: &OAuthClientId,
        client_secret: &SecretString,
        now: SystemTime,
    ) -> Result<BearerToken, TwilioError>;
}

#[async_trait::async_trait]
impl TokenSource for TwilioClient {
    async fn fetch(
        &self,
        client_id: &OAuthClientId,
        client_secret: &SecretString,
        now: SystemTime,
    ) -> Result<BearerToken, TwilioError> {
        self.fetch_oauth_token(client_id, client_secret, now).await
    }
}

/// What the issuer can serve right now.
#[derive(Clone, Default)]
pub struct TokenState {
    /// The token, as a served value (its secret a [`Secret::Bearer`]).
    token: Option<Arc<Loaded>>,
    /// The token's expiry.
    expires_at: Option<SystemTime>,
    /// Since when fetches have failed while the token is served.
    stale_since: Option<SystemTime>,
    /// The last failed fetch's error.
    last_error: Option<Arc<BrokerError>>,
    /// Why nothing can be served (then `token` is `None`).
    unavailable: Option<Unavailability>,
    /// Twilio refused the app's secret at the last fetch.
    refused: bool,
}

/// The issuer of one `oauth_client` credential.
pub struct OAuthTokens {
    entry: Arc<Entry>,
    clock: Clock,
    state: watch::Sender<TokenState>,
}

impl OAuthTokens {
    /// The issuer of `entry`'s bearer tokens, with its task spawned on
    /// `tasks` (stopping with `stopping`), fetching from `source`.
    pub fn start(
        entry: Arc<Entry>,
        source: impl TokenSource,
        clock: Clock,
        stopping: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let issuer = Arc::new(Self {
            entry,
            clock,
            state: watch::Sender::new(TokenState {
                unavailable: Some(Unavailability::NotLoaded),
                ..TokenState::default()
            }),
        });
        let task = Arc::clone(&issuer);
        tasks.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = task.run(source) => {}
            }
        });
        issuer
    }

    /// A receiver woken on every change (for tests and watchers).
    pub fn subscribe(&self) -> watch::Receiver<TokenState> {
        self.state.subscribe()
    }

    /// A lease on `state` at `now`: the token until its expiry.
    fn lease_from(&self, state: &TokenState, now: SystemTime) -> Result<Lease, BrokerError> {
        let unavailable = |why| BrokerError::Unavailable {
            name: self.entry.name().to_owned(),
            why,
        };
        if let Some(why) = &state.unavailable {
            return Err(unavailable(why.clone()));
        }
        let (Some(token), Some(expires_at)) = (&state.token, state.expires_at) else {
            return Err(unavailable(Unavailability::NotLoaded));
        };
        if now >= expires_at {
            return Err(unavailable(Unavailability::TokenExpired {
                at: expires_at,
                last_error: state.last_error.clone(),
            }));
        }
        Ok(Lease {
            name: self.entry.name().to_owned(),
            loaded: Arc::clone(token),
            issued_at: now,
            expires_at,
            stale_since: state.stale_since,
            retire_bound: None,
        })
    }

    /// Keeps the token: fetches when due, publishes every change.
    async fn run(&self, source: impl TokenSource) {
        let mut app = self.entry.subscribe();
        let mut fetched_with: Option<String> = None;
        let mut next_fetch: Option<SystemTime> = None;
        let mut failures = 0u32;
        let mut tokens = 0u64;
        loop {
            let snapshot = app.borrow_and_update().clone();
            let now = self.clock.now();
            let due = match self.stored_app(&snapshot, now) {
                Err(e) => {
                    // The app itself cannot be served: neither can its token.
                    self.state.send_replace(TokenState {
                        unavailable: Some(unavailable_because(e)),
                        ..TokenState::default()
                    });
                    fetched_with = None;
                    None
                }
                Ok(loaded) => {
                    let changed = fetched_with.as_deref() != Some(loaded.version.as_str());
                    if changed || next_fetch.is_none_or(|at| now >= at) {
                        match self.fetch(&source, &loaded, now).await {
                            Ok(token) => {
                                tokens += 1;
                                failures = 0;
                                next_fetch = Some(refresh_at(now, token.expires_at));
                                fetched_with = Some(loaded.version.clone());
                                self.publish(&loaded, token, tokens);
                            }
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                let refused = matches!(e, TwilioError::Unauthorized { .. });
                                let cap = if refused {
                                    MAX_REFUSED_RETRY
                                } else {
                                    MAX_RETRY
                                };
                                let wait = crate::retry::backoff(failures, FIRST_RETRY, cap);
                                next_fetch = Some(now + wait);
                                // A new document gets its own first try, then
                                // the backoff: not a fetch per wakeup.
                                fetched_with = Some(loaded.version.clone());
                                self.failed(e, refused, now);
                            }
                        }
                    }
                    next_fetch
                }
            };
            // Wake for the next fetch, for the token's expiry (watchers
            // learn it), or for a change of the stored app.
            let expiry = {
                let s = self.state.borrow();
                s.expires_at.filter(|_| s.token.is_some())
            };
            let wake = [due, expiry]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(self.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = app.changed() => if changed.is_err() { return },
                () = sleep => {}
            }
            self.expire(self.clock.now());
        }
    }

    /// The stored app's current value, or why it cannot be served.
    fn stored_app(&self, snapshot: &Snapshot, now: SystemTime) -> Result<Arc<Loaded>, BrokerError> {
        self.entry.lease_from(snapshot, now).map(|l| l.loaded)
    }

    /// One fetch with the stored app `loaded`.
    async fn fetch(
        &self,
        source: &impl TokenSource,
        loaded: &Loaded,
        now: SystemTime,
    ) -> Result<BearerToken, TwilioError> {
        let Secret::OAuthClient {
            client_id,
            client_secret,
        } = &loaded.document.current.secret
        else {
            // The entry's kind is pinned at its first load: not reached.
            return Err(TwilioError::WrongKind {
                action: "OAuth token".into(),
            });
        };
        source.fetch(client_id, client_secret, now).await
    }

    /// Serves `token`, fetched with the stored app `app` (the `n`-th).
    fn publish(&self, app: &Loaded, token: BearerToken, n: u64) {
        let expires_at = token.expires_at;
        tracing::info!(
            credential = %self.entry.name(),
            expires_at = %humantime::format_rfc3339_seconds(expires_at),
            "fetched a new bearer token"
        );
        let loaded = Loaded {
            document: CredentialDocument {
                current: TwilioCredential {
                    account_sid: app.document.current.account_sid.clone(),
                    secret: Secret::Bearer {
                        token: token.token,
                        expires_at,
                    },
                },
                pending: None,
                previous: None,
            },
            // The store's version of the app, and which token of it.
            version: format!("{}+{n}", app.version),
            loaded_at: self.clock.now(),
        };
        // The old token is dropped here, or when its last lease ends.
        self.state.send_replace(TokenState {
            token: Some(Arc::new(loaded)),
            expires_at: Some(expires_at),
            ..TokenState::default()
        });
    }

    /// Records a failed fetch at `now`: stale while the token lasts, or
    /// unavailable at once when Twilio refused the secret.
    fn failed(&self, e: TwilioError, refused: bool, now: SystemTime) {
        let error = Arc::new(BrokerError::Token {
            name: self.entry.name().to_owned(),
            detail: e.to_string(),
        });
        tracing::warn!(credential = %self.entry.name(), error = %error, "could not fetch a bearer token");
        // Watchers hear of what they can see: the stale flag, the token
        // gone. A new last error alone is no news.
        self.state.send_if_modified(|s| {
            if refused {
                *s = TokenState {
                    unavailable: Some(Unavailability::Failed(Arc::clone(&error))),
                    last_error: Some(error),
                    refused: true,
                    ..TokenState::default()
                };
                return true;
            }
            s.last_error = Some(Arc::clone(&error));
            match s.expires_at {
                Some(at) if s.token.is_some() && now < at => {
                    let first = s.stale_since.is_none();
                    s.stale_since.get_or_insert(now);
                    first
                }
                _ => {
                    s.token = None;
                    s.unavailable = Some(match s.expires_at {
                        Some(at) => Unavailability::TokenExpired {
                            at,
                            last_error: Some(error),
                        },
                        None => Unavailability::Failed(error),
                    });
                    true
                }
            }
        });
    }

    /// Drops a token that has expired by `now` (watchers learn it).
    fn expire(&self, now: SystemTime) {
        self.state.send_if_modified(|s| match s.expires_at {
            Some(at) if s.token.is_some() && now >= at => {
                s.token = None;
                s.unavailable = Some(Unavailability::TokenExpired {
                    at,
                    last_error: s.last_error.clone(),
                });
                true
            }
            _ => false,
        });
    }
}

/// When a token fetched at `now` and expiring at `expires_at` is replaced:
/// once two thirds of its life have passed.
fn refresh_at(now: SystemTime, expires_at: SystemTime) -> SystemTime {
    let life = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
    now + life * 2 / 3
}

/// The stored app's unavailability, as the token's.
fn unavailable_because(e: BrokerError) -> Unavailability {
    match e {
        BrokerError::Unavailable { why, .. } => why,
        other => Unavailability::Failed(Arc::new(other)),
    }
}

#[async_trait::async_trait]
impl Issuer for OAuthTokens {
    fn name(&self) -> &str {
        self.entry.name()
    }

    fn kind(&self) -> &'static str {
        self.entry.kind().as_str()
    }

    fn allow(&self) -> &AllowList {
        &self.entry.config.allow
    }

    async fn issue(&self, _caller: Caller) -> Result<Lease, IssueError> {
        Ok(self.lease_from(&self.state.borrow(), self.clock.now())?)
    }

    async fn ready(&self) -> Result<(), IssueError> {
        if self.entry.config.rotation.is_some() {
            // The config could not tell: its kind came from the document.
            return Err(IssueError::WrongKind {
                name: self.name().to_owned(),
                what: "an oauth_client has no [rotation]: the broker does not rotate an OAuth app's secret (replace it in Twilio's Console, then in the store)",
            });
        }
        // Passing failures are logged by the task, which retries them.
        let mut state = self.state.subscribe();
        loop {
            {
                let s = state.borrow_and_update();
                if s.token.is_some() {
                    return Ok(());
                }
                if s.refused {
                    // Unavailable, saying why: the error to exit with.
                    return self
                        .lease_from(&s, self.clock.now())
                        .map(drop)
                        .map_err(IssueError::Broker);
                }
            }
            if state.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    fn stored(&self) -> Result<&Arc<Entry>, IssueError> {
        Err(IssueError::WrongKind {
            name: self.name().to_owned(),
            what: "an oauth_client serves bearer tokens only: webhooks are checked with the account's Auth Token and Access Tokens signed with an API key, each configured as a credential of its own",
        })
    }

    fn watch(self: Arc<Self>, broker: &Broker) -> Result<LeaseStream, IssueError> {
        // Refuse up front rather than open a stream that ends at once.
        self.lease_from(&self.state.borrow(), self.clock.now())?;
        let changes = tokio_stream::wrappers::WatchStream::new(self.state.subscribe());
        Ok(
            broker.watch_with(changes, Renew::OnChangeOnly, move |s, now| {
                self.lease_from(s, now)
            }),
        )
    }
}

#[cfg(test)]
mod tests;
