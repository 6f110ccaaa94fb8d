//! Issuers: what GetCredential hands out, one [`Issuer`] per configured
//! credential, whatever its kind.
//!
//! - [`stored::Stored`]: a credential read from a store and cached by the
//!   broker (`auth_token`, `api_key`); every caller gets a lease on the
//!   current value.
//! - [`dynamic::DynamicKeys`]: a restricted API key minted at Twilio per
//!   calling process (`dynamic_api_key`).
//! - [`oauth::OAuthTokens`]: a bearer token fetched with a stored OAuth
//!   app's client secret, which never leaves the broker (`oauth_client`).
//!
//! The server never branches on the kind: it authorizes against
//! [`Issuer::allow`], asks [`Issuer::issue`] for a lease and
//! [`Issuer::watch`] for a stream of them, and asks [`Issuer::stored`] for
//! the cached entry when a call (ValidateWebhook, MintAccessToken) needs a
//! stored document.

pub mod dynamic;
pub mod oauth;
pub mod stored;

use std::{collections::HashMap, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    broker::{Broker, BrokerError, Entry, Lease, LeaseStream},
    config::{AllowList, Config, Source},
    credential::Kind,
    twilio::{TwilioClient, TwilioError},
};

/// The caller a lease is for: uid and pid of the peer process.
pub type Caller = (u32, i32);

/// Why an issuer cannot hand out a credential.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The broker cannot answer for the credential (or its admin credential).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A dynamic credential has `max_live_keys` keys alive.
    #[error(
        "credential `{name}`: {max} keys are alive already (max_live_keys); try again when one expires"
    )]
    Exhausted {
        /// Credential name.
        name: String,
        /// The cap.
        max: u32,
    },
    /// One peer uid has `max_live_keys_per_uid` keys of a dynamic credential
    /// alive.
    #[error(
        "credential `{name}`: uid {uid} has {max} keys alive already (max_live_keys_per_uid); try again when one expires"
    )]
    ExhaustedForUid {
        /// Credential name.
        name: String,
        /// The peer uid.
        uid: u32,
        /// The cap.
        max: u32,
    },
    /// A usage alert with `on_spike = "freeze_dynamic_keys"` holds the
    /// account's new dynamic keys until ClearAlert.
    #[error(
        "credential `{name}`: new keys are frozen by usage alert `{usage}` ({reason}); an admin lifts it with RotationAdmin.ClearAlert once the spike is understood"
    )]
    Frozen {
        /// Credential name.
        name: String,
        /// The `[usage.NAME]` whose alert froze it.
        usage: String,
        /// The numbers that raised the alert.
        reason: String,
    },
    /// Twilio refused or failed to mint a key.
    #[error("credential `{name}`: {source}")]
    Twilio {
        /// Credential name.
        name: String,
        /// Twilio's error.
        source: TwilioError,
    },
    /// The call does not apply to this kind of credential.
    #[error("credential `{name}`: {what}")]
    WrongKind {
        /// Credential name.
        name: String,
        /// What does not apply, and what to do instead.
        what: &'static str,
    },
}

/// One configured credential, as the server sees it.
#[async_trait::async_trait]
pub trait Issuer: Send + Sync {
    /// The config key, which clients ask for.
    fn name(&self) -> &str;
    /// Its kind as `CredentialInfo.kind` names it.
    fn kind(&self) -> &'static str;
    /// Who may read it.
    fn allow(&self) -> &AllowList;
    /// A lease for `caller`.
    async fn issue(&self, caller: Caller) -> Result<Lease, IssueError>;
    /// The cached stored credential behind it, for the calls that need its
    /// document; a `WrongKind` error where there is none.
    fn stored(&self) -> Result<&Arc<Entry>, IssueError>;
    /// Resolves once there is a first value to serve, or fails when there
    /// will not be one without a change (Twilio refused an OAuth app's
    /// secret). Passing failures are retried meanwhile. Stored and dynamic
    /// credentials are ready at once.
    async fn ready(&self) -> Result<(), IssueError> {
        Ok(())
    }
    /// WatchCredential's stream: a lease at once, then one on every
    /// change; refused up front when there is no lease to send now.
    fn watch(self: Arc<Self>, broker: &Broker) -> Result<LeaseStream, IssueError>;
}

impl std::fmt::Debug for dyn Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// The accounts whose new dynamic keys are frozen by a usage alert
/// (`on_spike = "freeze_dynamic_keys"`), by Account SID: the usage monitor
/// freezes and thaws, every dynamic credential minting on that account asks.
#[derive(Debug, Default)]
pub struct Freezes {
    by_account: std::sync::RwLock<HashMap<String, Freeze>>,
}

/// Why an account's new dynamic keys are frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// The `[usage.NAME]` whose alert froze it.
    pub usage: String,
    /// The numbers that raised the alert.
    pub reason: String,
}

impl Freezes {
    /// Refuses new dynamic keys on `account_sid` until [`Freezes::thaw`].
    pub fn freeze(&self, account_sid: &str, freeze: Freeze) {
        self.by_account
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account_sid.to_owned(), freeze);
    }

    /// Lifts `usage`'s freeze, whatever account it was on.
    pub fn thaw(&self, usage: &str) {
        self.by_account
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, f| f.usage != usage);
    }

    /// Why `account_sid`'s new keys are frozen, if they are.
    pub fn get(&self, account_sid: &str) -> Option<Freeze> {
        self.by_account
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account_sid)
            .cloned()
    }
}

/// Every configured credential's issuer, by name.
pub struct Issuers {
    /// For the lookup of every call: a hash map, since a B-tree of 10,000
    /// names compares (and so reads from memory) a dozen of them per call.
    by_name: HashMap<String, Arc<dyn Issuer>>,
    /// The same issuers in name order, for listing.
    sorted: Vec<Arc<dyn Issuer>>,
    /// The union of the allow lists, for [`Issuers::knows_peer`]: asked on
    /// every call for a name that does not exist, so it must not cost a
    /// pass over 10,000 lists.
    named_uids: std::collections::HashSet<u32>,
    named_gids: std::collections::HashSet<u32>,
    /// Some allow list is empty (which admits the daemon's own uid).
    some_list_empty: bool,
}

impl Issuers {
    /// One issuer per credential of `config`: the broker's entries, and the
    /// dynamic credentials, which mint with `twilio` (unless `freezes`
    /// holds their account) and whose key reapers are spawned on the
    /// broker's task tracker and stop with `stopping`.
    pub fn start(
        config: &Config,
        broker: &Arc<Broker>,
        twilio: &TwilioClient,
        freezes: &Arc<Freezes>,
        stopping: &CancellationToken,
    ) -> Self {
        let mut by_name: HashMap<String, Arc<dyn Issuer>> = broker
            .entries()
            .map(|e| {
                // The kind is the configured one or the first document's:
                // fixed from here on (a document of another kind is refused).
                let issuer: Arc<dyn Issuer> = if e.kind() == Kind::OAuthClient {
                    oauth::OAuthTokens::start(
                        Arc::clone(e),
                        twilio.clone(),
                        *broker.clock(),
                        stopping.clone(),
                        broker.tasks(),
                    )
                } else {
                    Arc::new(stored::Stored::new(Arc::clone(e), Arc::clone(broker)))
                };
                (e.name().to_owned(), issuer)
            })
            .collect();
        for (name, cfg) in &config.credentials {
            let Source::Dynamic(d) = &cfg.source else {
                continue;
            };
            let admin = Arc::clone(
                broker
                    .entry(&d.admin_credential)
                    .expect("the config checks that admin_credential is a stored credential"),
            );
            let keys = dynamic::DynamicKeys::start(
                ((**cfg).clone(), d.clone()),
                admin,
                twilio.clone(),
                Arc::clone(freezes),
                *broker.clock(),
                stopping.clone(),
                broker.tasks(),
            );
            by_name.insert(name.clone(), keys);
        }
        let mut sorted: Vec<Arc<dyn Issuer>> = by_name.values().cloned().collect();
        sorted.sort_by(|a, b| a.name().cmp(b.name()));
        let lists = || sorted.iter().map(|i| i.allow());
        let named_uids = lists().flat_map(|l| l.uids.iter().copied()).collect();
        let named_gids = lists().flat_map(|l| l.gids.iter().copied()).collect();
        let some_list_empty = lists().any(|l| l.uids.is_empty() && l.gids.is_empty());
        Self {
            by_name,
            sorted,
            named_uids,
            named_gids,
            some_list_empty,
        }
    }

    /// The credential `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Issuer>> {
        self.by_name.get(name)
    }

    /// Every credential, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Issuer>> {
        self.sorted.iter()
    }

    /// How many credentials there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Waits until every credential is [`Issuer::ready`]; the first that
    /// fails is the error.
    pub async fn ready(&self) -> Result<(), IssueError> {
        for issuer in self.iter() {
            issuer.ready().await?;
        }
        Ok(())
    }

    /// Whether the config names this peer anywhere: only such peers learn
    /// whether a credential name exists.
    pub fn knows_peer(&self, uid: u32, gid: u32, own_uid: u32) -> bool {
        // The same answer as asking every list's `AllowList::permits`.
        (self.some_list_empty && uid == own_uid)
            || self.named_uids.contains(&uid)
            || self.named_gids.contains(&gid)
    }
}
