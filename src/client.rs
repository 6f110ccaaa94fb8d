//! A Rust client for credbroker's socket, used by the CLI and usable by
//! workloads: `Client::connect(path)`, then `get`, `watch`, `list`, `health`.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::{
    Streaming,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::proto::{self, credential_broker_client::CredentialBrokerClient};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to credbroker at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The broker answered with an error.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status(status)
    }
}

impl ClientError {
    /// The gRPC status code (`Unavailable` when the socket could not be reached).
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::Connect { .. } => tonic::Code::Unavailable,
            ClientError::Status(s) => s.code(),
        }
    }
}

/// A connection to a credbroker socket.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_owned();
        let connect_path = path.clone();
        // The URI is required by the API but unused: every connection goes
        // to the socket. `localhost` is also the :authority sent.
        let channel =
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = connect_path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| ClientError::Connect { path, source })?;
        Ok(Client { channel })
    }

    /// The underlying channel, for other services on the socket (reflection,
    /// RotationAdmin) or generated stubs of your own.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn broker(&self) -> CredentialBrokerClient<Channel> {
        CredentialBrokerClient::new(self.channel.clone())
    }

    /// A lease on credential `name`.
    pub async fn get(&self, name: &str) -> Result<proto::Credential, ClientError> {
        let request = proto::GetCredentialRequest {
            name: name.to_owned(),
        };
        Ok(self.broker().get_credential(request).await?.into_inner())
    }

    /// A stream of leases on `name`: one at once, then on every change.
    pub async fn watch(&self, name: &str) -> Result<Streaming<proto::Credential>, ClientError> {
        let request = proto::WatchCredentialRequest {
            name: name.to_owned(),
        };
        Ok(self.broker().watch_credential(request).await?.into_inner())
    }

    /// The credentials this caller may read.
    pub async fn list(&self) -> Result<Vec<proto::CredentialInfo>, ClientError> {
        Ok(self
            .broker()
            .list_credentials(proto::ListCredentialsRequest {})
            .await?
            .into_inner()
            .credentials)
    }

    fn admin(&self) -> proto::rotation_admin_client::RotationAdminClient<Channel> {
        proto::rotation_admin_client::RotationAdminClient::new(self.channel.clone())
    }

    /// `[usage.NAME]` `name`'s latest figures and alert (RotationAdmin, the
    /// `[server] admin` list).
    pub async fn usage(&self, name: &str) -> Result<proto::UsageStatus, ClientError> {
        let request = proto::GetUsageRequest {
            name: name.to_owned(),
        };
        Ok(self.admin().get_usage(request).await?.into_inner())
    }

    /// Lowers `[usage.NAME]` `name`'s alert (and a freeze of dynamic keys);
    /// the status after.
    pub async fn clear_alert(&self, name: &str) -> Result<proto::UsageStatus, ClientError> {
        let request = proto::ClearAlertRequest {
            name: name.to_owned(),
        };
        Ok(self.admin().clear_alert(request).await?.into_inner())
    }

    /// The server's overall health status.
    pub async fn health(&self) -> Result<ServingStatus, ClientError> {
        let response = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
    }
}
