//! A fault-injecting HTTP/1.1 proxy between the daemon and a store's
//! server (OpenBao, moto, the GCP fake): it forwards every request as is,
//! until told to answer the next N requests (or all, until healed) with a
//! given status and body, or to hang them without answering.
//!
//! It runs on its own thread and runtime, on a loopback port, so sync and
//! async tests alike can use it; dropping it stops it and every request it
//! holds.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    header::{self, HeaderName},
};

/// What the proxy does to a request instead of forwarding it.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer at once with this status, headers and JSON body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    },
    /// Never answer (until the proxy stops): the client must time out.
    Hang,
    /// Answer 200 with a JSON body of this many bytes.
    Huge(usize),
    /// Forward, then set the JSON answer's field at `pointer` to `value`
    /// (JSON text), as a server with a strange or hostile answer would.
    Patch {
        pointer: &'static str,
        value: &'static str,
    },
}

impl Fault {
    pub fn answer(status: u16, body: &'static str) -> Fault {
        Fault::Answer {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

/// A fault, how many more requests get it (`None`: all), and the text
/// their path must contain (`None`: any request).
type Mode = Option<(Fault, Option<u64>, Option<&'static str>)>;

struct Shared {
    upstream: String,
    mode: Mutex<Mode>,
    forwarded: AtomicU64,
    faulted: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            mode: Mutex::new(None),
            forwarded: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let client = reqwest::Client::builder().no_proxy().build().unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let (shared, client) = (Arc::clone(&shared), client.clone());
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        handle(Arc::clone(&shared), client.clone(), req)
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(
                                            hyper_util::rt::TokioIo::new(stream),
                                            service,
                                        )
                                        .await;
                                });
                            }
                        }
                    }
                });
                // The runtime drops here, and with it every held request.
            }
        });
        FaultProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `count` requests (`None`: every one, until `heal`) get `fault`.
    pub fn fail(&self, fault: Fault, count: Option<u64>) {
        *self.shared.mode.lock().unwrap() = Some((fault, count, None));
    }

    /// As `fail`, for requests whose path and query contain `path`.
    pub fn fail_path(&self, fault: Fault, count: Option<u64>, path: &'static str) {
        *self.shared.mode.lock().unwrap() = Some((fault, count, Some(path)));
    }

    /// Forward everything again.
    pub fn heal(&self) {
        *self.shared.mode.lock().unwrap() = None;
    }

    /// Requests forwarded to the upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Requests answered with a fault (or held) so far.
    pub fn faulted(&self) -> u64 {
        self.shared.faulted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
    ]
    .contains(name)
}

fn status_response(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

async fn handle(
    shared: Arc<Shared>,
    client: reqwest::Client,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let fault = {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut mode = shared.mode.lock().unwrap();
        let applies = mode
            .as_ref()
            .is_some_and(|(_, _, path)| path.is_none_or(|p| target.contains(p)));
        let fault = applies.then(|| mode.as_ref().unwrap().0.clone());
        if applies && let Some((_, Some(left), _)) = mode.as_mut() {
            *left -= 1;
            if *left == 0 {
                *mode = None;
            }
        }
        fault
    };
    let mut patch = None;
    if let Some(fault) = fault {
        shared.faulted.fetch_add(1, Ordering::Relaxed);
        match fault {
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Huge(size) => {
                let mut body = vec![b' '; size];
                body[..8].copy_from_slice(b"{\"data\":");
                body[8] = b'"';
                body[size - 2] = b'"';
                body[size - 1] = b'}';
                let mut r = status_response(200, Bytes::from(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                return Ok(r);
            }
            Fault::Patch { pointer, value } => patch = Some((pointer, value)),
            Fault::Answer {
                status,
                headers,
                body,
            } => {
                let mut r = status_response(status, Bytes::from_static(body.as_bytes()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                for (k, v) in headers {
                    r.headers_mut()
                        .insert(k, header::HeaderValue::from_static(v));
                }
                return Ok(r);
            }
        }
    }
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = client
        .request(parts.method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let Ok(answer) = out.send().await else {
        return Ok(status_response(502, Bytes::new()));
    };
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let mut body = answer.bytes().await.unwrap_or_default();
    if let Some((pointer, value)) = patch
        && let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(field) = json.pointer_mut(pointer)
    {
        *field = serde_json::from_str(value).unwrap();
        body = Bytes::from(serde_json::to_vec(&json).unwrap());
    }
    let mut r = status_response(status, body);
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            r.headers_mut().append(name, value.clone());
        }
    }
    Ok(r)
}
