//! credbroker keeps Twilio credentials for the workloads beside it and
//! serves them as short leases over gRPC on a Unix socket.
//!
//! Data flows one way: stores feed the broker, the broker feeds the
//! issuers, the issuers feed the server. Imports run the same way, down
//! this list (`scripts/check-layout` enforces it):
//!
//! - Leaves, importing nothing of ours: [`secret`] (zeroizing secret
//!   types), [`clock`] (wall clock that follows tokio's), [`retry`] (the one
//!   backoff with jitter), [`metrics`] (the Prometheus registry every layer
//!   counts into), [`hygiene`] (the zeroizing allocator, mlock, no core
//!   dumps, taking a secret out of the environment), [`text`] (outside
//!   text cut to a bound for logs and errors), [`log`] (the log writer
//!   thread, which formats the audit records off the request path),
//!   [`proto`].
//! - [`credential`]: the Twilio credential model and the stored documents
//!   it is parsed from.
//! - [`config`]: raw TOML → validated [`config::Config`], one file per
//!   section, with errors that name the file, the key and what was expected.
//! - [`store`]: the [`store::SecretStore`] trait, its backends, and the
//!   compare-and-set step and error mapping they share.
//! - [`twilio`]: the Twilio REST client, webhook signatures, Access Tokens.
//! - [`broker`]: the cache of the stored credentials: entries and their
//!   snapshots, leases, staleness, the one refresher, watch fan-out.
//! - [`rotation`]: the rotation state machine, its steps and its schedule.
//! - [`issuer`]: one [`issuer::Issuer`] per configured credential, whatever
//!   its kind: a stored one leases the broker's entry; a dynamic one mints
//!   a restricted key per caller.
//! - [`usage`]: Twilio usage monitoring, one monitor per `[usage.NAME]`:
//!   polls, the spike rule, Usage Triggers, and the action an alert takes
//!   (freezing dynamic keys through the issuers, rotating through
//!   rotation).
//! - [`server`]: the gRPC services on the Unix socket, peer checks, audit,
//!   the one error → `Status` mapping, and the metrics listener.
//! - [`app`]: the wiring, which owns every task the daemon spawns and
//!   drains them at shutdown; [`run`] is the daemon.
//! - [`client`]: the Rust client the CLI uses and workloads can depend on.
//!
//! GetCredential, end to end: `server::service` authorizes the peer against
//! the issuer's allow list, the issuer leases (`broker::Entry::lease` for a
//! stored credential), and the lease becomes the wire type. A stored
//! credential stays fresh through the broker's refresher
//! (`broker::refresh`), one task that reads each credential's store on its
//! schedule and publishes each new snapshot to the leases and watchers that
//! follow.

// `unsafe` is denied everywhere but `hygiene`, the allocator and process
// hardening, where every block says why it is sound.
#![deny(unsafe_code)]

pub mod app;
pub mod broker;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
#[allow(unsafe_code)]
pub mod hygiene;
pub mod issuer;
pub mod log;
pub mod metrics;
pub mod retry;
pub mod rotation;
pub mod secret;
pub mod server;
pub mod store;
pub mod text;
pub mod twilio;
pub mod usage;

/// The generated `credbroker.v1` messages, clients and servers.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("credbroker.v1");

    /// The size of the buffer each call encodes into and decodes from.
    /// tonic's default is 8 KiB per call and per stream, and with the
    /// zeroizing allocator every byte of it is wiped when freed; our
    /// messages are a few hundred bytes, and a larger one grows the buffer
    /// in steps of this size.
    pub const CODEC_BUFFER_BYTES: usize = 512;

    /// tonic's prost codec with [`CODEC_BUFFER_BYTES`] buffers, for every
    /// generated client and server (build.rs, `codec_path`). A watch stream
    /// keeps its encode buffer for its whole life, so this is most of what
    /// an idle stream costs.
    #[derive(Debug, Clone)]
    pub struct LeanCodec<T, U>(std::marker::PhantomData<(T, U)>);

    impl<T, U> Default for LeanCodec<T, U> {
        fn default() -> Self {
            Self(std::marker::PhantomData)
        }
    }

    impl<T, U> tonic::codec::Codec for LeanCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = tonic_prost::ProstEncoder<T>;
        type Decoder = tonic_prost::ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            tonic_prost::ProstEncoder::new(buffers())
        }

        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::new(buffers())
        }
    }

    fn buffers() -> tonic::codec::BufferSettings {
        // The yield threshold (how much a stream batches) stays tonic's 32 KiB.
        tonic::codec::BufferSettings::new(CODEC_BUFFER_BYTES, 32 * 1024)
    }

    /// Encoded descriptors of the proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/credbroker_descriptor.bin"));

    // The messages that carry secrets: Debug shows lengths only, so a
    // `{:?}` of a whole Credential cannot leak.
    impl std::fmt::Debug for AuthToken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "AuthToken([redacted; {} bytes])", self.token.len())
        }
    }

    impl std::fmt::Debug for ApiKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ApiKey")
                .field("sid", &self.sid)
                .field(
                    "secret",
                    &format_args!("[redacted; {} bytes]", self.secret.len()),
                )
                .finish()
        }
    }

    impl std::fmt::Debug for MintAccessTokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MintAccessTokenResponse")
                .field(
                    "token",
                    &format_args!("[redacted; {} bytes]", self.token.len()),
                )
                .field("expires_at", &self.expires_at)
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn debug_of_wire_credential_hides_secrets() {
            let token = "0123456789abcdef0123456789abcdef";
            let secret = "QuiteSecretValue0123456789abcdef";
            let c = Credential {
                secret: Some(credential::Secret::AuthToken(AuthToken {
                    token: token.into(),
                })),
                previous: Some(PreviousCredential {
                    secret: Some(previous_credential::Secret::ApiKey(ApiKey {
                        sid: "SK1".into(),
                        secret: secret.into(),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let shown = format!("{c:?}");
            assert!(!shown.contains(token) && !shown.contains(secret), "{shown}");
            assert!(shown.contains("SK1"));
            let m = MintAccessTokenResponse {
                token: "eyJ.secret.jwt".into(),
                expires_at: None,
            };
            assert!(!format!("{m:?}").contains("eyJ"));
        }
    }
}

pub use app::{RunError, run};
