//! Who is calling, and whether they may: the peer credentials of the Unix
//! connection (SO_PEERCRED, through tonic's `UdsConnectInfo`) checked against
//! the config's allow lists in one function that fails closed. Every
//! decision is an audit event.

use tonic::{Request, Status, transport::server::UdsConnectInfo};

use super::status;
use crate::config::AllowList;

/// The process at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Effective user id.
    pub uid: u32,
    /// Effective (primary) group id.
    pub gid: u32,
    /// Process id, when the kernel reports one.
    pub pid: Option<i32>,
}

impl Peer {
    /// The caller of `request`; no peer credentials means no access.
    pub fn of<T>(request: &Request<T>) -> Result<Peer, Status> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(status::unidentified)?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// The outcome of a check, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed and answered.
    Allowed,
    /// Refused: not on the allow list (or the name is unknown to this peer).
    Denied,
    /// Allowed, but the name does not exist.
    NotFound,
    /// Allowed, but the credential could not be served.
    Failed,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::NotFound => "not_found",
            Decision::Failed => "failed",
        }
    }
}

/// Whether `peer` may read a credential with allow list `allow`, for
/// RotationAdmin with the admin list. The whole policy is here.
pub fn permits(allow: &AllowList, peer: &Peer, own_uid: u32) -> bool {
    allow.permits(peer.uid, peer.gid, own_uid)
}

/// The longest caller-chosen text a log line shows whole.
const SHOWN_BYTES: usize = 128;

/// Caller-chosen `text` as a log line shows it: cut at [`SHOWN_BYTES`]
/// with the full length said, so a caller cannot grow the log by sending
/// long names.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::cut(text, SHOWN_BYTES)
}

/// Records one audit event and counts the call. Never given a secret: only
/// who, what, which version, and the decision. The request pays for a
/// fixed record and two counters; the line is formatted by the log writer
/// thread (`crate::log`).
pub fn audit(
    peer: &Peer,
    method: &'static str,
    credential: &str,
    version: Option<&str>,
    decision: Decision,
) {
    let m = crate::metrics::metrics();
    let code = match decision {
        Decision::Allowed => "OK",
        Decision::Denied => "PERMISSION_DENIED",
        Decision::NotFound => "NOT_FOUND",
        Decision::Failed => "UNAVAILABLE",
    };
    m.calls
        .get_or_create(&crate::metrics::CallLabels {
            credential: m.credential_label(credential),
            method,
            code,
        })
        .inc();
    if decision == Decision::Denied {
        m.denied
            .get_or_create(&crate::metrics::DeniedLabels {
                method,
                uid: peer.uid,
            })
            .inc();
    }
    if !crate::log::audit_enabled() {
        return;
    }
    let waited = crate::log::audit(crate::log::AuditRecord {
        at: std::time::SystemTime::now(),
        peer_uid: peer.uid,
        peer_gid: peer.gid,
        peer_pid: peer.pid.unwrap_or(0),
        method,
        credential: crate::log::Text::new(&shown(credential)),
        version: crate::log::Text::new(version.unwrap_or("")),
        decision: decision.as_str(),
    });
    if waited {
        m.audit_queue_waits.inc();
    }
}
