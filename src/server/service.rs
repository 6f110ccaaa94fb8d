//! The CredentialBroker and RotationAdmin services: authorize, lease,
//! convert to the wire types. Secrets are copied into the response only here.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    peer::{self, Decision, Peer},
    status,
};
use crate::{
    broker::{Broker, Entry, Lease},
    config::{AccessTokenPolicy, AllowList},
    credential::{Secret, TwilioCredential},
    issuer::{Issuer, Issuers},
    proto,
    rotation::{RotationError, Rotator},
    twilio::{access_token, webhook},
    usage::{self, Monitors},
};

/// CredentialBroker.
pub struct BrokerService {
    issuers: Arc<Issuers>,
    broker: Arc<Broker>,
    own_uid: u32,
    watches: Watches,
}

/// Open WatchCredential streams per peer uid, capped.
#[derive(Clone)]
struct Watches {
    open: Arc<std::sync::Mutex<std::collections::HashMap<u32, u32>>>,
    max_per_uid: u32,
}

/// One open watch stream; its count is given back when the stream ends.
struct WatchSlot {
    watches: Watches,
    uid: u32,
}

impl Watches {
    /// A slot for one more stream of `uid`, or RESOURCE_EXHAUSTED.
    fn take(&self, uid: u32) -> Result<WatchSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(uid).or_default();
        if *n >= self.max_per_uid {
            return Err(status::too_many_watches(uid, *n));
        }
        *n += 1;
        Ok(WatchSlot {
            watches: self.clone(),
            uid,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

impl BrokerService {
    /// Serves `issuers` (and watches on `broker`'s entries); `own_uid` is
    /// who an empty allow list admits; each uid may hold
    /// `max_watches_per_uid` watch streams.
    pub fn new(
        issuers: Arc<Issuers>,
        broker: Arc<Broker>,
        own_uid: u32,
        max_watches_per_uid: u32,
    ) -> Self {
        Self {
            issuers,
            broker,
            own_uid,
            watches: Watches {
                open: Arc::default(),
                max_per_uid: max_watches_per_uid,
            },
        }
    }

    /// The one authorization decision for credential reads: the issuer of
    /// `name` when `peer` may use it. Unknown names are told apart from
    /// forbidden ones only for peers the config trusts with some
    /// credential; anyone else gets PERMISSION_DENIED either way.
    fn authorize(
        &self,
        peer: &Peer,
        method: &'static str,
        name: &str,
    ) -> Result<&Arc<dyn Issuer>, Status> {
        let outcome = match self.issuers.get(name) {
            Some(issuer) if peer::permits(issuer.allow(), peer, self.own_uid) => return Ok(issuer),
            Some(_) => Err((Decision::Denied, status::denied(name))),
            None if self.issuers.knows_peer(peer.uid, peer.gid, self.own_uid) => {
                Err((Decision::NotFound, status::unknown(name)))
            }
            None => Err((Decision::Denied, status::denied(name))),
        };
        outcome.map_err(|(decision, status)| {
            peer::audit(peer, method, name, None, decision);
            status
        })
    }

    /// The stored credential behind `issuer` (authorized already).
    fn entry(issuer: &dyn Issuer) -> Result<Arc<Entry>, Status> {
        issuer.stored().cloned().map_err(Status::from)
    }

    /// A lease from `issuer` for `peer`, audited either way.
    async fn issue(
        &self,
        peer: &Peer,
        method: &'static str,
        issuer: &dyn Issuer,
    ) -> Result<proto::Credential, Status> {
        let caller = (peer.uid, peer.pid.unwrap_or(0));
        match issuer.issue(caller).await {
            Ok(lease) => {
                peer::audit(
                    peer,
                    method,
                    issuer.name(),
                    Some(&lease.loaded.version),
                    Decision::Allowed,
                );
                Ok(to_proto(&lease))
            }
            Err(e) => {
                peer::audit(peer, method, issuer.name(), None, Decision::Failed);
                Err(e.into())
            }
        }
    }
}

/// Longest credential name a request may carry (the config refuses longer
/// names, so no longer one can exist).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest MintAccessToken identity.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Longest ValidateWebhook URL.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest X-Twilio-Signature (base64 of an HMAC-SHA1 is 28 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 256;

/// A credential name from field `field`: present and at most
/// [`MAX_NAME_BYTES`], refused before anything else looks at it.
fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    required_as(field, value, "a credential name")
}

/// `value` of `field`, which names `what`: present and of bounded length.
fn required_as<'a>(field: &str, value: &'a str, what: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(status::invalid(field, what))
    } else if value.len() > MAX_NAME_BYTES {
        Err(status::invalid(
            field,
            &format!("{what} of at most {MAX_NAME_BYTES} bytes"),
        ))
    } else {
        Ok(value)
    }
}

/// The name of a `[usage.NAME]` table.
const USAGE_NAME: &str = "the name of a [usage.NAME] table";

/// Refuses text field `field` longer than `max` bytes.
fn at_most(field: &str, value: &str, max: usize, what: &str) -> Result<(), Status> {
    if value.len() > max {
        return Err(status::invalid(
            field,
            &format!("{what} of at most {max} bytes"),
        ));
    }
    Ok(())
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    t.into()
}

/// The wire form of a served secret. An OAuth app's client secret has
/// none: it never leaves the broker (its issuer serves bearer tokens).
fn secret_to_proto(secret: &Secret) -> Option<proto::credential::Secret> {
    Some(match secret {
        Secret::AuthToken(token) => proto::credential::Secret::AuthToken(proto::AuthToken {
            token: token.expose_secret().to_owned(),
        }),
        Secret::ApiKey { sid, secret } => proto::credential::Secret::ApiKey(proto::ApiKey {
            sid: sid.as_str().to_owned(),
            secret: secret.expose_secret().to_owned(),
        }),
        Secret::Bearer { token, expires_at } => {
            proto::credential::Secret::Bearer(proto::BearerToken {
                access_token: token.expose_secret().to_owned(),
                expires_at: Some(timestamp(*expires_at)),
            })
        }
        Secret::OAuthClient { .. } => return None,
    })
}

/// A previous value's wire form. Bearer tokens have none: a replaced token
/// is simply not served again.
fn previous_secret(credential: &TwilioCredential) -> Option<proto::previous_credential::Secret> {
    match secret_to_proto(&credential.secret)? {
        proto::credential::Secret::AuthToken(t) => {
            Some(proto::previous_credential::Secret::AuthToken(t))
        }
        proto::credential::Secret::ApiKey(k) => Some(proto::previous_credential::Secret::ApiKey(k)),
        proto::credential::Secret::Bearer(_) => None,
    }
}

/// The wire form of a lease. The previous value is included only until it retires.
pub fn to_proto(lease: &Lease) -> proto::Credential {
    let doc = &lease.loaded.document;
    let previous = doc
        .previous
        .as_ref()
        .filter(|p| p.retire_at > lease.issued_at)
        .map(|p| proto::PreviousCredential {
            secret: previous_secret(&p.credential),
            version: p.version.clone().unwrap_or_default(),
            retire_at: Some(timestamp(p.retire_at)),
        });
    proto::Credential {
        name: lease.name.clone(),
        account_sid: doc.current.account_sid.as_str().to_owned(),
        secret: secret_to_proto(&doc.current.secret),
        version: lease.loaded.version.clone(),
        issued_at: Some(timestamp(lease.issued_at)),
        expires_at: Some(timestamp(lease.expires_at)),
        stale: lease.stale_since.is_some(),
        stale_since: lease.stale_since.map(timestamp),
        previous,
    }
}

type CredentialStream = Pin<Box<dyn Stream<Item = Result<proto::Credential, Status>> + Send>>;

#[tonic::async_trait]
impl proto::credential_broker_server::CredentialBroker for BrokerService {
    async fn get_credential(
        &self,
        request: Request<proto::GetCredentialRequest>,
    ) -> Result<Response<proto::Credential>, Status> {
        let peer = Peer::of(&request)?;
        let name = required("name", &request.get_ref().name)?;
        let issuer = self.authorize(&peer, "GetCredential", name)?;
        self.issue(&peer, "GetCredential", issuer.as_ref())
            .await
            .map(Response::new)
    }

    type WatchCredentialStream = CredentialStream;

    async fn watch_credential(
        &self,
        request: Request<proto::WatchCredentialRequest>,
    ) -> Result<Response<Self::WatchCredentialStream>, Status> {
        let peer = Peer::of(&request)?;
        let name = required("name", &request.get_ref().name)?;
        let issuer = self.authorize(&peer, "WatchCredential", name)?;
        let slot = self.watches.take(peer.uid)?;
        let rx = Arc::clone(issuer)
            .watch(&self.broker)
            .map_err(Status::from)?;
        let stream = rx.map(move |item| {
            // The slot lives as long as the stream.
            let _held = &slot;
            match item {
                Ok(lease) => {
                    peer::audit(
                        &peer,
                        "WatchCredential",
                        &lease.name,
                        Some(&lease.loaded.version),
                        Decision::Allowed,
                    );
                    Ok(to_proto(&lease))
                }
                Err(e) => Err(Status::from(e)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_credentials(
        &self,
        request: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let peer = Peer::of(&request)?;
        // By name already: the issuers are kept in a sorted map.
        let credentials: Vec<proto::CredentialInfo> = self
            .issuers
            .iter()
            .filter(|i| peer::permits(i.allow(), &peer, self.own_uid))
            .map(|i| proto::CredentialInfo {
                name: i.name().to_owned(),
                kind: i.kind().to_owned(),
            })
            .collect();
        let decision = if credentials.is_empty() {
            Decision::Denied
        } else {
            Decision::Allowed
        };
        peer::audit(&peer, "ListCredentials", "*", None, decision);
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials,
        }))
    }

    async fn validate_webhook(
        &self,
        request: Request<proto::ValidateWebhookRequest>,
    ) -> Result<Response<proto::ValidateWebhookResponse>, Status> {
        let peer = Peer::of(&request)?;
        let r = request.get_ref();
        let name = required("credential", &r.credential)?;
        if r.url.is_empty() {
            return Err(status::invalid("url", "the full URL Twilio called"));
        }
        if r.signature.is_empty() {
            return Err(status::invalid(
                "signature",
                "the X-Twilio-Signature header",
            ));
        }
        at_most("url", &r.url, MAX_URL_BYTES, "a URL")?;
        at_most(
            "signature",
            &r.signature,
            MAX_SIGNATURE_BYTES,
            "a signature",
        )?;
        let entry = Self::entry(self.authorize(&peer, "ValidateWebhook", name)?.as_ref())?;
        let lease = entry.lease(self.broker.clock()).map_err(Status::from)?;
        let matched = webhook_match(name, &lease, r)?;
        peer::audit(
            &peer,
            "ValidateWebhook",
            name,
            Some(&lease.loaded.version),
            Decision::Allowed,
        );
        Ok(Response::new(proto::ValidateWebhookResponse {
            valid: !matched.is_empty(),
            matched: matched.to_owned(),
        }))
    }

    async fn mint_access_token(
        &self,
        request: Request<proto::MintAccessTokenRequest>,
    ) -> Result<Response<proto::MintAccessTokenResponse>, Status> {
        let peer = Peer::of(&request)?;
        let r = request.get_ref();
        let name = required("credential", &r.credential)?;
        let entry = Self::entry(self.authorize(&peer, "MintAccessToken", name)?.as_ref())?;
        let denied = |why: String| {
            peer::audit(&peer, "MintAccessToken", name, None, Decision::Denied);
            status::policy_refuses(why)
        };
        let Some(policy) = &entry.config.access_tokens else {
            return Err(denied(format!(
                "credential `{name}` has no [credentials.{name}.access_tokens] policy"
            )));
        };
        let ttl = match token_ttl(name, policy, r) {
            Ok(ttl) => ttl,
            Err(Refusal::Denied(why)) => return Err(denied(why)),
            Err(Refusal::Invalid(status)) => return Err(status),
        };
        let lease = entry.lease(self.broker.clock()).map_err(Status::from)?;
        let doc = &lease.loaded.document;
        let Secret::ApiKey { sid, secret } = &doc.current.secret else {
            return Err(status::wrong_kind(
                name,
                "an Auth Token",
                "Access Tokens are signed with an API Key Secret",
            ));
        };
        let grants = grants_of(r);
        let now = self.broker.clock().now();
        let ttl = within_retirement(ttl, lease.retire_bound, now);
        if ttl.is_zero() {
            return Err(status::signing_key_retiring(name));
        }
        let token = access_token::mint(
            doc.current.account_sid.as_str(),
            sid.as_str(),
            secret,
            &r.identity,
            ttl,
            &grants,
            now,
        );
        peer::audit(
            &peer,
            "MintAccessToken",
            name,
            Some(&lease.loaded.version),
            Decision::Allowed,
        );
        Ok(Response::new(proto::MintAccessTokenResponse {
            token: token.expose_secret().to_owned(),
            expires_at: Some(timestamp(now + ttl)),
        }))
    }
}

/// Which Auth Token of `lease` signed the webhook request `r`: "current",
/// "previous" (during a rotation's grace window) or "" for neither.
fn webhook_match(
    name: &str,
    lease: &Lease,
    r: &proto::ValidateWebhookRequest,
) -> Result<&'static str, Status> {
    let doc = &lease.loaded.document;
    let Secret::AuthToken(current) = &doc.current.secret else {
        return Err(status::wrong_kind(
            name,
            "an API key",
            "webhook signatures are made with the Auth Token",
        ));
    };
    let params: Vec<(String, String)> = r
        .params
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let webhook = webhook::WebhookRequest {
        url: &r.url,
        params: &params,
        body: &r.body,
        signature: &r.signature,
    };
    let previous = doc
        .previous
        .as_ref()
        .filter(|p| p.retire_at > lease.issued_at)
        .and_then(|p| match &p.credential.secret {
            Secret::AuthToken(t) => Some(t),
            _ => None,
        });
    Ok(if webhook::validate(current, &webhook) {
        "current"
    } else if previous.is_some_and(|t| webhook::validate(t, &webhook)) {
        "previous"
    } else {
        ""
    })
}

/// Why a MintAccessToken request breaks its credential's policy.
enum Refusal {
    /// The policy forbids it (PERMISSION_DENIED, audited).
    Denied(String),
    /// A field is missing or out of range (INVALID_ARGUMENT).
    Invalid(Status),
}

/// Checks request `r` for credential `name` against its `policy`: the
/// token's lifetime, or why there is none.
fn token_ttl(
    name: &str,
    policy: &AccessTokenPolicy,
    r: &proto::MintAccessTokenRequest,
) -> Result<std::time::Duration, Refusal> {
    if r.identity.is_empty() {
        return Err(Refusal::Invalid(status::invalid(
            "identity",
            "the identity the token is for",
        )));
    }
    at_most("identity", &r.identity, MAX_IDENTITY_BYTES, "an identity")
        .map_err(Refusal::Invalid)?;
    if !r.identity.starts_with(&policy.identity_prefix) {
        return Err(Refusal::Denied(format!(
            "credential `{name}`: identities must start with {:?}",
            policy.identity_prefix
        )));
    }
    let max = policy.max_ttl.min(access_token::MAX_TTL);
    let ttl = match r.ttl_seconds {
        0 => max,
        s if u64::from(s) > max.as_secs() => {
            return Err(Refusal::Invalid(status::invalid(
                "ttl_seconds",
                &format!("at most {} (this credential's max_ttl)", max.as_secs()),
            )));
        }
        s => std::time::Duration::from_secs(u64::from(s)),
    };
    let asked = [
        ("voice", r.voice.is_some()),
        ("video", r.video.is_some()),
        ("chat", r.chat.is_some()),
        ("sync", r.sync.is_some()),
    ];
    for (grant, wanted) in asked {
        if wanted && !policy.grants.iter().any(|g| g == grant) {
            return Err(Refusal::Denied(format!(
                "credential `{name}`: the `{grant}` grant is not allowed by its access_tokens policy"
            )));
        }
    }
    Ok(ttl)
}

/// A token's lifetime `ttl` from `now`, cut so that it ends by the moment
/// the key that signs it could be retired (`retire_bound`): a token signed
/// with a deleted key is refused by Twilio, so it must not promise more.
fn within_retirement(
    ttl: std::time::Duration,
    retire_bound: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
) -> std::time::Duration {
    match retire_bound {
        Some(bound) => ttl.min(bound.duration_since(now).unwrap_or_default()),
        None => ttl,
    }
}

/// The grants the request asks for, as the token carries them.
fn grants_of(r: &proto::MintAccessTokenRequest) -> access_token::Grants {
    access_token::Grants {
        voice: r.voice.as_ref().map(|v| access_token::VoiceGrant {
            outgoing_application_sid: v.outgoing_application_sid.clone(),
            incoming_allow: v.incoming_allow,
        }),
        video: r.video.as_ref().map(|v| access_token::VideoGrant {
            room: v.room.clone(),
        }),
        chat: r.chat.as_ref().map(|c| access_token::ChatGrant {
            service_sid: c.service_sid.clone(),
        }),
        sync: r.sync.as_ref().map(|c| access_token::SyncGrant {
            service_sid: c.service_sid.clone(),
        }),
    }
}

/// RotationAdmin, for the `[server] admin` list only.
pub struct AdminService {
    admin: AllowList,
    own_uid: u32,
    rotator: Option<Arc<Rotator>>,
    /// Serves what a rotation wrote before `Rotate` answers.
    broker: Option<Arc<Broker>>,
    /// GetUsage and ClearAlert.
    usage: Option<Arc<Monitors>>,
}

impl AdminService {
    /// Admits peers on `admin` (empty: the daemon's own uid).
    pub fn new(
        admin: AllowList,
        own_uid: u32,
        rotator: Arc<Rotator>,
        broker: Arc<Broker>,
        usage: Arc<Monitors>,
    ) -> Self {
        Self {
            admin,
            own_uid,
            rotator: Some(rotator),
            broker: Some(broker),
            usage: Some(usage),
        }
    }

    fn monitor(&self, name: &str) -> Result<&Arc<usage::Monitor>, Status> {
        self.usage
            .as_ref()
            .ok_or_else(|| status::not_yet("usage"))?
            .get(name)
            .map_err(Status::from)
    }

    async fn status(&self, name: &str) -> Result<proto::RotationStatus, Status> {
        let rotator = self
            .rotator
            .as_ref()
            .ok_or_else(|| status::not_yet("rotation"))?;
        let s = rotator.status(name).await.map_err(Status::from)?;
        Ok(proto::RotationStatus {
            name: name.to_owned(),
            step: s.step,
            last_success: s.last_success.map(timestamp),
            last_error: s.last_error.unwrap_or_default(),
            next_run: s.next_run.map(timestamp),
        })
    }

    fn authorize(&self, peer: &Peer, method: &'static str, name: &str) -> Result<(), Status> {
        if peer::permits(&self.admin, peer, self.own_uid) {
            peer::audit(peer, method, name, None, Decision::Allowed);
            Ok(())
        } else {
            peer::audit(peer, method, name, None, Decision::Denied);
            Err(status::not_admin())
        }
    }
}

#[tonic::async_trait]
impl proto::rotation_admin_server::RotationAdmin for AdminService {
    async fn rotate(
        &self,
        request: Request<proto::RotateRequest>,
    ) -> Result<Response<proto::RotationStatus>, Status> {
        let name = required("name", &request.get_ref().name)?;
        self.authorize(&Peer::of(&request)?, "Rotate", name)?;
        let rotator = self
            .rotator
            .as_ref()
            .ok_or_else(|| status::not_yet("Rotate"))?;
        // A failed step is reported in the status (step `failed`,
        // `last_error`), not as an RPC error: the rotation can be resumed.
        match rotator.rotate(name, true).await {
            // Serve what the rotation wrote before answering: a caller that
            // reads the credential right after `promoted` gets the new value.
            Ok(_) => {
                if let Some(broker) = &self.broker {
                    broker.reload(name).await;
                }
            }
            Err(
                e @ (RotationError::NotFound(_)
                | RotationError::NotConfigured(_)
                | RotationError::NotRotatable(_)),
            ) => {
                return Err(Status::from(e));
            }
            Err(_) => {}
        }
        self.status(name).await.map(Response::new)
    }

    async fn get_rotation_status(
        &self,
        request: Request<proto::GetRotationStatusRequest>,
    ) -> Result<Response<proto::RotationStatus>, Status> {
        let name = required("name", &request.get_ref().name)?;
        self.authorize(&Peer::of(&request)?, "GetRotationStatus", name)?;
        self.status(name).await.map(Response::new)
    }

    async fn get_usage(
        &self,
        request: Request<proto::GetUsageRequest>,
    ) -> Result<Response<proto::UsageStatus>, Status> {
        let name = required_as("name", &request.get_ref().name, USAGE_NAME)?;
        self.authorize(&Peer::of(&request)?, "GetUsage", name)?;
        Ok(Response::new(usage_to_proto(&self.monitor(name)?.status())))
    }

    async fn clear_alert(
        &self,
        request: Request<proto::ClearAlertRequest>,
    ) -> Result<Response<proto::UsageStatus>, Status> {
        let peer = Peer::of(&request)?;
        let name = required_as("name", &request.get_ref().name, USAGE_NAME)?;
        self.authorize(&peer, "ClearAlert", name)?;
        let monitor = self.monitor(name)?;
        if let Some(alert) = monitor.clear() {
            tracing::warn!(
                usage = %name,
                peer_uid = peer.uid,
                peer_pid = peer.pid.unwrap_or(0),
                raised_by = alert.source,
                "usage alert cleared through RotationAdmin.ClearAlert"
            );
        }
        Ok(Response::new(usage_to_proto(&monitor.status())))
    }
}

/// GetUsage's answer.
fn usage_to_proto(s: &usage::Status) -> proto::UsageStatus {
    proto::UsageStatus {
        name: s.name.clone(),
        on_spike: s.on_spike.as_str().to_owned(),
        categories: s
            .categories
            .iter()
            .map(|c| {
                let today = c.today.as_ref();
                let evaluation = c.evaluation.as_ref();
                proto::CategoryUsage {
                    category: c.category.clone(),
                    count: today.map_or(0.0, |t| t.count),
                    usage: today.map_or(0.0, |t| t.usage),
                    price: today.map_or(0.0, |t| t.price),
                    price_unit: today.map(|t| t.price_unit.clone()).unwrap_or_default(),
                    window_count: evaluation.map_or(0.0, |e| e.window_count),
                    baseline_median: evaluation.and_then(|e| e.median),
                    spike: c.spike,
                    polled: today.is_some(),
                }
            })
            .collect(),
        alert: s.alert.as_ref().map(|a| proto::UsageAlert {
            raised_at: Some(timestamp(a.raised_at)),
            reason: a.reason.clone(),
            categories: a.categories.clone(),
            source: a.source.to_owned(),
        }),
        last_poll: s.last_poll.map(timestamp),
        last_error: s.last_error.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config;

    const OWN: u32 = 4242;

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: Some(1),
        }
    }

    async fn service(dir: &Path) -> BrokerService {
        let doc = r#"{"account_sid":"AC0123456789abcdef0123456789abcdef","auth_token":"0123456789abcdef0123456789abcdef"}"#;
        std::fs::write(dir.join("s.json"), format!(r#"{{"a": {doc}, "b": {doc}}}"#)).unwrap();
        let cfg = config::parse(
            Path::new("t.toml"),
            &format!(
                "[stores.f]\ntype = \"file\"\npath = \"{}/s.json\"\n\
                 [credentials.a]\nstore = \"f\"\npath = \"a\"\nallow = {{ uids = [1000] }}\n\
                 [credentials.b]\nstore = \"f\"\npath = \"b\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let stopping = CancellationToken::new();
        let broker = Broker::start(&cfg, &Default::default(), stopping.clone())
            .await
            .unwrap();
        let twilio = crate::twilio::TwilioClient::new((&cfg.twilio).into());
        let issuers = Issuers::start(&cfg, &broker, &twilio, &Default::default(), &stopping);
        BrokerService::new(Arc::new(issuers), broker, OWN, 256)
    }

    #[tokio::test]
    async fn one_decision_for_every_case() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        // Listed uid reads its credential; the daemon's uid reads the unlisted one.
        assert!(svc.authorize(&peer(1000), "Get", "a").is_ok());
        assert!(svc.authorize(&peer(OWN), "Get", "b").is_ok());
        // A listed uid may not read what it is not listed on.
        let e = svc.authorize(&peer(1000), "Get", "b").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // Known peers learn a name is unknown; strangers cannot tell.
        assert_eq!(
            svc.authorize(&peer(1000), "Get", "zzz").unwrap_err().code(),
            tonic::Code::NotFound
        );
        let missing = svc.authorize(&peer(7), "Get", "zzz").unwrap_err();
        let existing = svc.authorize(&peer(7), "Get", "a").unwrap_err();
        assert_eq!(missing.code(), tonic::Code::PermissionDenied);
        assert_eq!(existing.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            missing.message().replace("zzz", "a"),
            existing.message(),
            "the same answer whether or not the name exists"
        );
    }

    #[test]
    fn access_tokens_end_by_the_earliest_retirement_of_their_key() {
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let hour = std::time::Duration::from_secs(3600);
        let bound = now + std::time::Duration::from_secs(600);
        assert_eq!(
            within_retirement(hour, Some(bound), now),
            std::time::Duration::from_secs(600)
        );
        assert_eq!(within_retirement(hour, None, now), hour);
        assert_eq!(
            within_retirement(hour, Some(now - hour), now),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn admin_list_guards_rotation_admin() {
        let admin = AdminService {
            admin: AllowList {
                uids: vec![0],
                gids: vec![],
            },
            own_uid: OWN,
            rotator: None,
            broker: None,
            usage: None,
        };
        assert!(admin.authorize(&peer(0), "Rotate", "a").is_ok());
        assert_eq!(
            admin
                .authorize(&peer(OWN), "Rotate", "a")
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        let default = AdminService {
            admin: AllowList::default(),
            own_uid: OWN,
            rotator: None,
            broker: None,
            usage: None,
        };
        assert!(default.authorize(&peer(OWN), "Rotate", "a").is_ok());
        assert!(default.authorize(&peer(0), "Rotate", "a").is_err());
    }

    #[tokio::test]
    async fn peer_credentials_come_from_a_real_socket() {
        // A real connected pair: SO_PEERCRED reports this very process.
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let cred = a.peer_cred().unwrap();
        assert_eq!(cred.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(cred.pid(), Some(std::process::id() as i32));
        // No connect info at all: refused, not waved through.
        let request = Request::new(proto::GetCredentialRequest { name: "a".into() });
        assert_eq!(
            Peer::of(&request).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
