//! The one place errors become gRPC statuses. Messages name credentials,
//! never secret values.

use tonic::Status;

use crate::{broker::BrokerError, issuer::IssueError, rotation::RotationError, usage::UsageError};

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Status {
        match &e {
            BrokerError::NotFound(_) => Status::not_found(e.to_string()),
            BrokerError::Unavailable { .. } | BrokerError::Store { .. } => {
                Status::unavailable(e.to_string())
            }
            BrokerError::Document(_) => Status::unavailable(e.to_string()),
            BrokerError::ShuttingDown
            | BrokerError::RefreshPanicked(_)
            | BrokerError::Token { .. } => Status::unavailable(e.to_string()),
        }
    }
}

impl From<IssueError> for Status {
    fn from(e: IssueError) -> Status {
        match e {
            IssueError::Broker(e) => e.into(),
            IssueError::Exhausted { .. }
            | IssueError::ExhaustedForUid { .. }
            | IssueError::Frozen { .. } => Status::resource_exhausted(e.to_string()),
            IssueError::Twilio { .. } => Status::unavailable(e.to_string()),
            IssueError::WrongKind { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

impl From<UsageError> for Status {
    fn from(e: UsageError) -> Status {
        match e {
            UsageError::NotFound(_) => Status::not_found(e.to_string()),
        }
    }
}

/// The answer to a peer that may not see a credential, whether or not it exists.
pub fn denied(name: &str) -> Status {
    Status::permission_denied(format!("not allowed to read credential `{name}`"))
}

/// MintAccessToken when the signing key could already have been retired by
/// a rotation elsewhere (its store has not confirmed it within the grace).
pub fn signing_key_retiring(name: &str) -> Status {
    Status::unavailable(format!(
        "credential `{name}`: its key may have been retired by a rotation (the store has not \
         confirmed it within rotation.grace); no Access Token can be signed with it"
    ))
}

/// The answer to a peer that no allow list names, whatever it asked.
pub fn unlisted() -> Status {
    Status::permission_denied("the caller is on no allow list of this broker")
}

/// The answer to a peer whose credentials could not be read.
pub fn unidentified() -> Status {
    Status::permission_denied("the caller's peer credentials could not be read")
}

/// An RPC that a later version implements.
pub fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not available in this build of credbroker"
    ))
}

/// A missing or malformed request field.
pub fn invalid(field: &str, expected: &str) -> Status {
    Status::invalid_argument(format!("`{field}`: expected {expected}"))
}

impl From<RotationError> for Status {
    fn from(e: RotationError) -> Status {
        match e {
            RotationError::NotFound(_) => Status::not_found(e.to_string()),
            RotationError::NotConfigured(_) | RotationError::NotRotatable(_) => {
                Status::failed_precondition(e.to_string())
            }
            _ => Status::unavailable(e.to_string()),
        }
    }
}

/// A name a trusted peer asked for that the config does not define.
pub fn unknown(name: &str) -> Status {
    Status::not_found(format!("no credential named `{name}`"))
}

/// A peer on no `[server] admin` list calling RotationAdmin.
pub fn not_admin() -> Status {
    Status::permission_denied("not allowed to administer rotations")
}

/// A MintAccessToken the credential's policy refuses; `why` says which rule.
pub fn policy_refuses(why: String) -> Status {
    Status::permission_denied(why)
}

/// An RPC that needs the other kind of credential than `name` holds.
pub fn wrong_kind(name: &str, holds: &str, because: &str) -> Status {
    Status::failed_precondition(format!("credential `{name}` is {holds}: {because}"))
}

/// A uid at `server.max_watches_per_uid` opening one more watch stream.
pub fn too_many_watches(uid: u32, open: u32) -> Status {
    Status::resource_exhausted(format!(
        "uid {uid} has {open} watch streams open (server.max_watches_per_uid)"
    ))
}
