//! The layer every call on the socket passes first, before its body is
//! read: a peer on no allow list (no credential's, not the admin list) is
//! refused with PERMISSION_DENIED and an audit event, whatever it sends.
//! `grpc.health.v1.Health` answers it, and its ListCredentials gets the
//! empty list the contract promises (the names it may read: none). The calls in flight on each
//! connection are counted here too, so that a connection with none for
//! `server.idle_timeout` is closed (see `conn`).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use tonic::{body::Body as GrpcBody, transport::server::UdsConnectInfo};

use super::peer::{self, Decision, Peer};
use crate::{config::AllowList, issuer::Issuers};

/// The calls in flight on one connection, and when the last one started or
/// ended.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

impl Activity {
    /// A connection accepted now, with no call yet.
    pub fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            last: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Whether a call is in flight, and when one last started or ended.
    pub fn state(&self) -> (bool, tokio::time::Instant) {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        (self.open.load(Ordering::Acquire) > 0, last)
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }
}

/// What `conn` tells each call about its connection (tonic puts it in the
/// request's extensions).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address and credentials.
    pub uds: UdsConnectInfo,
    /// The connection's calls in flight.
    pub activity: Arc<Activity>,
}

/// One call in flight; counted until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who may get past the gate: anyone some allow list (a credential's or the
/// admin list) permits. The union of the lists, made once, so the check
/// costs the same with 10,000 credentials as with one.
struct Known {
    uids: std::collections::HashSet<u32>,
    gids: std::collections::HashSet<u32>,
    /// Some list is empty, which admits the daemon's own uid.
    own_uid: Option<u32>,
}

impl Known {
    fn of<'a>(lists: impl Iterator<Item = &'a AllowList>, own_uid: u32) -> Self {
        let mut known = Known {
            uids: Default::default(),
            gids: Default::default(),
            own_uid: None,
        };
        for list in lists {
            if list.uids.is_empty() && list.gids.is_empty() {
                known.own_uid = Some(own_uid);
            }
            known.uids.extend(&list.uids);
            known.gids.extend(&list.gids);
        }
        known
    }

    /// Whether some list's `AllowList::permits` admits `peer`.
    fn admits(&self, peer: &Peer) -> bool {
        self.own_uid == Some(peer.uid)
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }
}

/// The tower layer (`Server::builder().layer(..)`).
#[derive(Clone)]
pub struct Gate(Arc<Known>);

impl Gate {
    /// A gate for the peers that `issuers`' allow lists and `admin` name;
    /// an empty list admits `own_uid`.
    pub fn new(issuers: &Issuers, admin: &AllowList, own_uid: u32) -> Self {
        let lists = issuers.iter().map(|i| i.allow()).chain([admin]);
        Self(Arc::new(Known::of(lists, own_uid)))
    }
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            known: Arc::clone(&self.0),
        }
    }
}

/// A service behind the gate.
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    known: Arc<Known>,
}

/// The method names of our services, for audit lines and metric labels;
/// anything else a caller puts in the path is `(unknown)`.
const METHODS: &[&str] = &[
    "GetCredential",
    "WatchCredential",
    "ListCredentials",
    "ValidateWebhook",
    "MintAccessToken",
    "Rotate",
    "GetRotationStatus",
    "GetUsage",
    "ClearAlert",
    "ServerReflectionInfo",
];

fn method_of(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == last)
        .copied()
        .unwrap_or("(unknown)")
}

/// The answer to an empty ListCredentials (a message of no fields, then
/// status OK), for a peer that may read nothing.
fn empty_list() -> http::Response<GrpcBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: [Result<Frame<bytes::Bytes>, std::convert::Infallible>; 2] = [
        Ok(Frame::data(bytes::Bytes::from_static(&[0; 5]))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
    let mut response = http::Response::new(GrpcBody::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

impl<S> Gated<S> {
    /// Whether the call may go on (with its in-flight count), or the
    /// answer it gets at once.
    fn admit<B>(
        &self,
        req: &mut http::Request<B>,
    ) -> Result<Option<InFlight>, Box<http::Response<GrpcBody>>> {
        let Some(info) = req.extensions().get::<ConnInfo>().cloned() else {
            // Not one of our connections (an in-process test server):
            // nothing to count; the services check the peer themselves.
            return Ok(None);
        };
        let in_flight = InFlight::start(&info.activity);
        let cred = info.uds.peer_cred;
        req.extensions_mut().insert(info.uds);
        let path = req.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Ok(Some(in_flight));
        }
        let Some(cred) = cred else {
            return Err(Box::new(super::status::unidentified().into_http()));
        };
        let peer = Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        if self.known.admits(&peer) {
            return Ok(Some(in_flight));
        }
        let method = method_of(path);
        if method == "ListCredentials" {
            peer::audit(&peer, method, "*", None, Decision::Denied);
            return Err(Box::new(empty_list()));
        }
        peer::audit(&peer, method, "", None, Decision::Denied);
        Err(Box::new(super::status::unlisted().into_http()))
    }
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for Gated<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<GrpcBody>>,
{
    type Response = http::Response<Counted<GrpcBody>>;
    type Error = S::Error;
    type Future = GatedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        match self.admit(&mut req) {
            // The body is dropped unread: h2 resets the rest of the stream.
            Err(answer) => GatedFuture::Refused {
                answer: Some(*answer),
            },
            Ok(in_flight) => GatedFuture::Passed {
                inner: self.inner.call(req),
                in_flight,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a gated service.
    #[project = GatedProj]
    pub enum GatedFuture<F> {
        /// Past the gate: the service's answer.
        Passed { #[pin] inner: F, in_flight: Option<InFlight> },
        /// Refused at the gate.
        Refused { answer: Option<http::Response<GrpcBody>> },
    }
}

impl<F, E> std::future::Future for GatedFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<GrpcBody>, E>>,
{
    type Output = Result<http::Response<Counted<GrpcBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GatedProj::Passed { inner, in_flight } => {
                let response = std::task::ready!(inner.poll(cx))?;
                let in_flight = in_flight.take();
                Poll::Ready(Ok(response.map(|inner| Counted { inner, in_flight })))
            }
            GatedProj::Refused { answer } => {
                let answer = answer.take().expect("a refused call is polled once");
                Poll::Ready(Ok(answer.map(|inner| Counted {
                    inner,
                    in_flight: None,
                })))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted as in flight until it
    /// is dropped (a watch stream's body lives as long as the stream).
    pub struct Counted<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_method_names_are_shown() {
        assert_eq!(
            method_of("/credbroker.v1.CredentialBroker/GetCredential"),
            "GetCredential"
        );
        assert_eq!(method_of("/x/GetCredentialXXXXXXXX"), "(unknown)");
        assert_eq!(method_of(&"a".repeat(10_000)), "(unknown)");
    }

    /// The union admits exactly the peers that some list permits.
    #[test]
    fn the_union_admits_whom_some_list_permits() {
        let own = 500;
        let lists = [
            AllowList {
                uids: vec![1000],
                gids: vec![],
            },
            AllowList {
                uids: vec![],
                gids: vec![2000],
            },
        ];
        let peers = [(1000, 1), (1, 2000), (own, own), (1, 1), (2000, 1000)];
        for with_empty in [false, true] {
            let mut all = lists.to_vec();
            if with_empty {
                all.push(AllowList::default());
            }
            let known = Known::of(all.iter(), own);
            for (uid, gid) in peers {
                let peer = Peer {
                    uid,
                    gid,
                    pid: None,
                };
                let some = all.iter().any(|l| peer::permits(l, &peer, own));
                assert_eq!(
                    known.admits(&peer),
                    some,
                    "{peer:?}, empty list: {with_empty}"
                );
            }
        }
    }

    #[test]
    fn a_call_is_in_flight_until_its_body_is_dropped() {
        let activity = Arc::new(Activity::new());
        let body = Counted {
            inner: String::new(),
            in_flight: Some(InFlight::start(&activity)),
        };
        assert!(activity.state().0);
        drop(body);
        assert!(!activity.state().0);
    }
}
