//! The token lifecycle under paused time, with a scripted token source:
//! refresh at two thirds of the life, stale through an outage until the
//! token's own expiry, a refused secret, a new secret in the store.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::{broker::Broker, config};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const CLIENT_ID: &str = "OQ0123456789abcdef0123456789abcdef";
const LIFE: Duration = Duration::from_secs(3600);

/// One scripted answer: a token lifetime, or an error.
enum Step {
    Token(Duration),
    Down,
    Refused,
}

/// Answers fetches from a script (then tokens of `LIFE`); records the
/// client secret of each call. Token `n` is `token-n`.
#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    secrets: Mutex<Vec<String>>,
}

impl Script {
    fn calls(&self) -> usize {
        self.secrets.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl TokenSource for Arc<Script> {
    async fn fetch(
        &self,
        client_id: &OAuthClientId,
        client_secret: &SecretString,
        now: SystemTime,
    ) -> Result<BearerToken, TwilioError> {
        assert_eq!(client_id.as_str(), CLIENT_ID);
        let n = {
            let mut secrets = self.secrets.lock().unwrap();
            secrets.push(client_secret.expose_secret().to_owned());
            secrets.len()
        };
        match self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Token(LIFE))
        {
            Step::Token(life) => Ok(BearerToken {
                token: SecretString::new(format!("token-{n}")),
                expires_at: now + life,
            }),
            Step::Down => Err(TwilioError::Unavailable {
                action: "OAuth token".into(),
                detail: "HTTP 503".into(),
            }),
            Step::Refused => Err(TwilioError::Unauthorized {
                action: "OAuth token".into(),
                status: 401,
                code: Some(20003),
                detail: ", code 20003: Authenticate".into(),
            }),
        }
    }
}

fn write_app(file: &Path, secret: &str) {
    std::fs::write(
        file,
        format!(
            r#"{{"app": {{"account_sid": "{AC}", "client_id": "{CLIENT_ID}", "client_secret": "{secret}"}}}}"#
        ),
    )
    .unwrap();
}

/// A broker on a file holding the app, and the issuer on it.
async fn start(dir: &Path, script: &Arc<Script>) -> (Arc<Broker>, Arc<OAuthTokens>) {
    let file = dir.join("secrets.json");
    write_app(&file, "first-secret");
    let cfg = config::parse(
        Path::new("t.toml"),
        &format!(
            "[stores.f]\ntype = \"file\"\npath = \"{}\"\n[credentials.app]\nstore = \"f\"\npath = \"app\"\nrefresh_interval = \"1h\"\n",
            file.display()
        ),
    )
    .unwrap();
    let stopping = CancellationToken::new();
    let broker = Broker::start(&cfg, &Default::default(), stopping.clone())
        .await
        .unwrap();
    let entry = Arc::clone(broker.entry("app").unwrap());
    assert_eq!(entry.kind(), crate::credential::Kind::OAuthClient);
    let issuer = OAuthTokens::start(
        entry,
        Arc::clone(script),
        *broker.clock(),
        stopping,
        broker.tasks(),
    );
    (broker, issuer)
}

/// [`start`], then the first token served.
async fn started(
    dir: &Path,
    script: &Arc<Script>,
) -> (Arc<Broker>, Arc<OAuthTokens>, watch::Receiver<TokenState>) {
    let (broker, issuer) = start(dir, script).await;
    let mut rx = issuer.subscribe();
    while issuer.issue((0, 0)).await.is_err() {
        next(&mut rx).await;
    }
    (broker, issuer, rx)
}

fn token_of(lease: &Lease) -> (String, SystemTime) {
    match &lease.loaded.document.current.secret {
        Secret::Bearer { token, expires_at } => (token.expose_secret().to_owned(), *expires_at),
        _ => panic!("not a bearer token"),
    }
}

/// Lets every woken task run (one thread, paused clock).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Waits for the issuer's next published change.
async fn next(rx: &mut watch::Receiver<TokenState>) {
    tokio::time::timeout(Duration::from_secs(7200), rx.changed())
        .await
        .expect("no change")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_token_at_start_and_a_new_one_after_two_thirds_of_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    let (broker, issuer, mut rx) = started(dir.path(), &script).await;
    let mut stream = Arc::clone(&issuer).watch(&broker).unwrap();
    let first = issuer.issue((0, 0)).await.unwrap();
    let started = broker.clock().now();
    let (t1, exp1) = token_of(&first);
    assert_eq!(t1, "token-1");
    assert_eq!(first.expires_at, exp1, "a lease ends with its token");
    assert!(exp1 <= started + LIFE && exp1 > started + LIFE - Duration::from_secs(1));
    assert_eq!(
        token_of(&stream.recv().await.unwrap().unwrap()).0,
        "token-1"
    );

    // Just before two thirds: the same token.
    tokio::time::advance(LIFE * 2 / 3 - Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(script.calls(), 1);
    assert_eq!(token_of(&issuer.issue((0, 0)).await.unwrap()).0, "token-1");
    // At two thirds: a new one, pushed to the watcher.
    next(&mut rx).await;
    assert_eq!(script.calls(), 2);
    let second = issuer.issue((0, 0)).await.unwrap();
    assert_eq!(token_of(&second).0, "token-2");
    assert!(second.stale_since.is_none());
    assert_eq!(
        token_of(&stream.recv().await.unwrap().unwrap()).0,
        "token-2"
    );
    // The first token is no longer held by the issuer.
    assert_eq!(Arc::strong_count(&first.loaded), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_serves_the_token_stale_until_its_expiry_then_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    script.steps.lock().unwrap().extend(
        std::iter::once(Step::Token(LIFE)).chain(std::iter::repeat_with(|| Step::Down).take(40)),
    );
    let (broker, issuer, _) = started(dir.path(), &script).await;
    let started = broker.clock().now();
    let (_, expiry) = token_of(&issuer.issue((0, 0)).await.unwrap());
    // The refresh at two thirds fails: the token is served stale.
    tokio::time::advance(LIFE * 2 / 3 + Duration::from_secs(1)).await;
    settle().await;
    let stale = issuer.issue((0, 0)).await.unwrap();
    assert_eq!(token_of(&stale).0, "token-1");
    let since = stale.stale_since.expect("stale after a failed fetch");
    assert!(since >= started + LIFE * 2 / 3);
    assert_eq!(stale.expires_at, expiry);
    // Retried with backoff meanwhile (more than once, far fewer than a
    // fetch per second).
    tokio::time::advance(Duration::from_secs(600)).await;
    settle().await;
    let calls = script.calls();
    assert!((3..=20).contains(&calls), "{calls} fetches");
    // At the token's own expiry: UNAVAILABLE, saying why.
    let now = broker.clock().now();
    tokio::time::advance(expiry.duration_since(now).unwrap()).await;
    settle().await;
    let e = issuer.issue((0, 0)).await.unwrap_err().to_string();
    assert!(
        e.contains("credential `app`")
            && e.contains("bearer token expired")
            && e.contains("HTTP 503"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_secret_is_unavailable_at_once_and_a_new_one_fetches_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    script.steps.lock().unwrap().push_back(Step::Refused);
    let (broker, issuer) = start(dir.path(), &script).await;
    let mut rx = issuer.subscribe();
    while script.calls() == 0 {
        next(&mut rx).await;
    }
    settle().await;
    let e = issuer.issue((0, 0)).await.unwrap_err().to_string();
    assert!(
        e.contains("credential `app`") && e.contains("20003") && e.contains("bearer token"),
        "{e}"
    );
    assert!(!e.contains("first-secret"), "{e}");
    // A new secret in the store: fetched with at once (no waiting out the
    // backoff), and served.
    write_app(&dir.path().join("secrets.json"), "second-secret");
    broker.refresh("app");
    tokio::time::timeout(Duration::from_secs(5), async {
        while issuer.issue((0, 0)).await.is_err() {
            next(&mut rx).await;
        }
    })
    .await
    .expect("no token within 5 s of the new secret");
    assert_eq!(
        *script.secrets.lock().unwrap(),
        ["first-secret", "second-secret"]
    );
    let lease = issuer.issue((0, 0)).await.unwrap();
    assert_eq!(token_of(&lease).0, "token-2");
    assert!(
        lease.loaded.version.ends_with("+1"),
        "{}",
        lease.loaded.version
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_secret_replaces_a_good_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    let (broker, issuer, mut rx) = started(dir.path(), &script).await;
    let before = issuer.issue((0, 0)).await.unwrap();
    write_app(&dir.path().join("secrets.json"), "rotated-secret");
    broker.refresh("app");
    tokio::time::timeout(Duration::from_secs(5), async {
        while script.calls() < 2 {
            next(&mut rx).await;
        }
    })
    .await
    .expect("no fetch within 5 s of the new secret");
    settle().await;
    let after = issuer.issue((0, 0)).await.unwrap();
    assert_eq!(token_of(&after).0, "token-2");
    assert_ne!(before.loaded.version, after.loaded.version);
    assert_eq!(script.secrets.lock().unwrap()[1], "rotated-secret");
}

#[tokio::test(start_paused = true)]
async fn the_secret_gone_from_the_store_is_unavailable_as_for_any_kind() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    let (broker, issuer, mut rx) = started(dir.path(), &script).await;
    std::fs::write(dir.path().join("secrets.json"), "{}").unwrap();
    broker.refresh("app");
    tokio::time::timeout(Duration::from_secs(5), async {
        while issuer.issue((0, 0)).await.is_ok() {
            next(&mut rx).await;
        }
    })
    .await
    .expect("still served 5 s after the secret left the store");
    let e = issuer.issue((0, 0)).await.unwrap_err().to_string();
    assert!(
        e.contains("credential `app`") && e.contains("not found"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn webhooks_and_access_tokens_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script::default());
    let (_broker, issuer) = start(dir.path(), &script).await;
    let e = issuer.stored().unwrap_err();
    assert!(matches!(e, IssueError::WrongKind { .. }));
    assert!(e.to_string().contains("bearer tokens only"), "{e}");
}
