//! The upload proxy: `adacompress serve`.
//!
//! One request, as [`handle`] runs it: a `RequestCtx` (request id, start time, the client's
//! method, URI and headers) passed through five stages. Each stage that can refuse the
//! request returns a [`ProxyError`], and `RequestCtx::finish` is the one place that turns it
//! into the client's answer and counts the request.
//!
//! 1. `route`: never a guess. CONNECT and TRACE → 405 `method_not_allowed`, never
//!    forwarded. [`Protocol::recognize`] says which API a request speaks; the upstream
//!    configured for that API gets it. Requests of an API the proxy does not compress
//!    ([`Protocol::owner`]: other Rekognition operations, KServe/TorchServe health and
//!    metadata, each API's other endpoints such as Google's `/v1/files:*` or Azure's
//!    `/vision/v3.2/…`) go to that API's upstream untouched (`original:other_operation`). An API
//!    with no upstream configured → 404 `no_upstream_for_api`, naming `[upstreams].NAME`.
//!    What matches no API goes untouched to `[upstreams].default` when one is configured
//!    (`original:unknown_path`), else → 404 `unrouted`, naming the method and the path
//!    (query stripped). Each refusal is counted in
//!    `adacompress_unrouted_requests_total{reason}`. No upstream at all → 502 `no_upstream`.
//! 2. `read_body`: over `proxy.max_body_bytes` (declared or as it arrives) → 413 naming the
//!    key; bodies in memory at `proxy.max_inflight_body_bytes` → 503; not received within
//!    `proxy.body_read_timeout_secs` → 408.
//! 3. `compress`: unless `X-AdaCompress-Bypass: 1`, each inline image is decoded with
//!    limits, the agent picks an action (or `X-AdaCompress-Quality: N` forces one), and the
//!    image is re-encoded — on the blocking pool, at most `cpu_workers` at a time and
//!    `cpu_queue` waiting; beyond that the original goes up ([`mod@compress`]). A changed
//!    Rekognition body is re-signed. Anything that fails here leaves the original bytes in
//!    place (fail-open, counted in `adacompress_passthrough_total{reason}`), never an error.
//! 4. `forward`: the upload goes to the upstream ([`send_upstream`]). Unreachable upstream →
//!    502, too slow → 504, answer over `limits.max_answer_bytes` → 502, each with a JSON
//!    body saying which and why.
//!    Then `reask` (stage 4b): when the cloud's answer to an image sent at the live pair is
//!    unsure (its top-1 margin among the lowest `pair.reask_rate` of the recent ones), the
//!    client's request goes up again as sent and the client gets that answer
//!    (`X-AdaCompress-Action: reasked:…`); a failed second request leaves the first answer.
//! 5. `answer_client`: the upstream's status, headers and body come back unchanged, plus
//!    `X-AdaCompress-Action`, `X-AdaCompress-Bytes-Saved` and `X-Request-Id`. For an image
//!    the live pair chose to audit, the original and candidate pairs go up too, off the
//!    request path, and the answers are compared ([`estimate`]).
//!
//! The proxy's own answers keep their status and carry `X-Request-Id` and
//! `X-AdaCompress-Error: <code>` (the stable reason). When the request's API is known
//! (recognised or owned), the body is in that API's error shape
//! ([`crate::protocol::shape`]), so its client reads it like the API's own errors;
//! otherwise it is the neutral `{"error": {"code", "status", "reason", "message", "source",
//! "request_id"}}`.

pub mod admin;
pub mod compress;
pub mod estimate;
pub mod grpc;
pub mod listener;
pub mod metrics;
mod reask;
pub mod server;
pub mod trust;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::codec::Limits;
use crate::config::Config;
use crate::learn::online::Online;
use crate::protocol::{Protocol, ProxyRequest};
pub use metrics::{Metrics, Passthrough};

/// Header forcing a JPEG quality (clamped to the configured range).
pub const QUALITY_HEADER: &str = "x-adacompress-quality";
/// Header skipping compression for a request (`1` or `true`).
pub const BYPASS_HEADER: &str = "x-adacompress-bypass";
/// Response header: the action taken per image, comma-separated.
pub const ACTION_HEADER: &str = "x-adacompress-action";
/// Response header: image bytes saved on this request.
pub const SAVED_HEADER: &str = "x-adacompress-bytes-saved";
/// Request id header (taken from the client if present).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Response header on every answer the proxy makes itself: the stable reason
/// (`upstream_unreachable`, `body_too_large`, …), whatever shape the body has.
pub const ERROR_HEADER: &str = "x-adacompress-error";

/// Estimation uploads allowed in flight at once; more are skipped (`reason="busy"`).
const MAX_ESTIMATES_IN_FLIGHT: usize = 32;

/// An upstream with its resolved base URL.
#[derive(Clone)]
pub struct Route {
    pub protocol: Protocol,
    pub base: String,
}

impl Route {
    /// The base URL as it may be logged or told to a client: a password (or token) in
    /// its userinfo is replaced by `***`.
    pub fn shown(&self) -> String {
        redact_userinfo(&self.base)
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("protocol", &self.protocol)
            .field("base", &self.shown())
            .finish()
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…` (and a lone user name, which
/// is often a token, → `***`); anything else unchanged.
pub fn redact_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            } else {
                let _ = u.set_username("***");
            }
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Re-signs a request whose body changed (Rekognition's SigV4); `None` where the API signs
/// nothing. Given the full URL, the headers to send (modified in place) and the body.
pub type Resigner = Arc<dyn Fn(&str, &mut HeaderMap, &[u8]) -> Result<(), String> + Send + Sync>;

/// The Rekognition re-signer from `[aws]`, else the standard `AWS_*` variables; `None` when
/// no credentials are configured (Rekognition requests then go up as sent, signature intact).
pub fn resign_from_config(cfg: &Config) -> Result<Option<Resigner>, String> {
    let Some((creds, region)) = proxy_credentials(cfg)? else {
        return Ok(None);
    };
    let signer = crate::sigv4::Signer::new(creds, region);
    Ok(Some(Arc::new(
        move |url: &str, headers: &mut HeaderMap, body: &[u8]| {
            signer
                .resign("POST", url, headers, body, std::time::SystemTime::now())
                .map_err(|e| e.to_string())
        },
    )))
}

/// The proxy's own AWS key and region from `[aws]`, else the standard `AWS_*` variables;
/// `None` when no key is configured.
pub(crate) fn proxy_credentials(
    cfg: &Config,
) -> Result<Option<(crate::sigv4::AwsCredentials, String)>, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let aws = &cfg.aws;
    let lookup = |name: &str| match name {
        crate::sigv4::ENV_ACCESS_KEY_ID => aws.access_key_id.clone().or_else(|| env(name)),
        crate::sigv4::ENV_SECRET_ACCESS_KEY => aws
            .secret_access_key
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .or_else(|| env(name)),
        crate::sigv4::ENV_SESSION_TOKEN => aws
            .session_token
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .or_else(|| env(name)),
        crate::sigv4::ENV_REGION => aws.region.clone().or_else(|| env(name)),
        other => env(other),
    };
    if lookup(crate::sigv4::ENV_ACCESS_KEY_ID).is_none()
        && lookup(crate::sigv4::ENV_SECRET_ACCESS_KEY).is_none()
    {
        return Ok(None);
    }
    let creds = crate::sigv4::AwsCredentials::from_lookup(lookup).map_err(|e| e.to_string())?;
    let region =
        crate::sigv4::region_from_lookup(lookup).map_err(|e| format!("{e} (or set aws.region)"))?;
    Ok(Some((creds, region)))
}

/// Everything a request needs.
pub struct ProxyState {
    pub cfg: Config,
    pub routes: Vec<Route>,
    /// `[upstreams].default`: where requests no configured API matches go untouched
    /// (`None`: they get a 404).
    pub default_upstream: Option<String>,
    pub http: reqwest::Client,
    /// HTTP/2 only (prior knowledge on `http://`): for gRPC upstreams.
    pub http2: reqwest::Client,
    pub online: Option<Arc<Online>>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Re-signing for Rekognition, when the proxy has AWS credentials.
    pub resign: Option<Resigner>,
    /// `aws.resign`: which Rekognition requests may be signed with the proxy's identity.
    pub trust: trust::ClientTrust,
    /// What the admin listener's mutating endpoints require ([`admin`]).
    pub admin_token: Option<admin::AdminToken>,
    /// `proxy.max_inflight_body_bytes`, in KiB permits.
    bodies: Arc<Semaphore>,
    run: Arc<Semaphore>,
    admit: Arc<Semaphore>,
    estimates: Arc<Semaphore>,
    /// The estimate tasks running off the request path, drained at shutdown
    /// ([`ProxyState::drain_estimates`]).
    estimate_tasks: Mutex<JoinSet<()>>,
    draining: AtomicBool,
    ready: AtomicBool,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("routes", &self.routes)
            .field(
                "default_upstream",
                &self.default_upstream.as_deref().map(redact_userinfo),
            )
            .field("online", &self.online)
            .finish_non_exhaustive()
    }
}

impl ProxyState {
    /// Builds the state; `online` is the agent (None: every image passes through).
    pub fn new(
        cfg: Config,
        routes: Vec<Route>,
        online: Option<Arc<Online>>,
        resign: Option<Resigner>,
    ) -> Result<ProxyState, ClientError> {
        let roots = match &cfg.proxy.upstream_ca_file {
            Some(path) => upstream_roots(path)?,
            None => Vec::new(),
        };
        let builder = || {
            roots.iter().fold(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs_f64(cfg.proxy.connect_timeout_secs))
                    .timeout(Duration::from_secs_f64(cfg.proxy.upstream_timeout_secs)),
                |b, cert| b.add_root_certificate(cert.clone()),
            )
        };
        let http = builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        let http2 = builder()
            .http2_prior_knowledge()
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        let workers = match cfg.proxy.cpu_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let limits = cfg.codec_limits();
        let body_budget_kib = cfg
            .proxy
            .max_inflight_body_bytes
            .div_ceil(1024)
            .min(Semaphore::MAX_PERMITS);
        Ok(ProxyState {
            run: Arc::new(Semaphore::new(workers)),
            admit: Arc::new(Semaphore::new(workers + cfg.proxy.cpu_queue)),
            estimates: Arc::new(Semaphore::new(MAX_ESTIMATES_IN_FLIGHT)),
            estimate_tasks: Mutex::new(JoinSet::new()),
            default_upstream: cfg.default_upstream(),
            cfg,
            routes,
            http,
            http2,
            online,
            limits,
            metrics: Arc::new(Metrics::new()),
            resign,
            trust: trust::ClientTrust::default(),
            admin_token: None,
            bodies: Arc::new(Semaphore::new(body_budget_kib)),
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the proxy ready (agent loaded, listeners bound).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(self.is_ready()));
    }

    /// Starts draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.ready.set(0);
    }

    /// Ready and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }
}

/// The proxy's router: every path goes to [`handle`].
///
/// Every request carries an `X-Request-Id`: the client's own when it is usable (visible
/// ASCII, at most [`MAX_REQUEST_ID_CHARS`]), else a new UUID (tower-http's request-id
/// layers; an unusable one is dropped first, so it never reaches a log or an answer). The
/// answer carries the same id.
pub fn app(state: Arc<ProxyState>) -> axum::Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    axum::Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
}

/// Longest client request id kept (longer ones are replaced).
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Removes a client `X-Request-Id` that is empty, too long, repeated or not visible ASCII,
/// so that [`SetRequestIdLayer`](tower_http::request_id::SetRequestIdLayer) makes a new one.
async fn drop_unusable_request_id(mut req: Request) -> Request {
    let headers = req.headers_mut();
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    let usable = match (values.next(), values.next()) {
        (Some(v), None) => {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_REQUEST_ID_CHARS
                && b.iter().all(|c| c.is_ascii_graphic())
        }
        _ => false,
    };
    if !usable {
        headers.remove(REQUEST_ID_HEADER);
    }
    req
}

/// Decrements the in-flight gauge when a request ends, however it ends.
struct InflightGuard(Arc<Metrics>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

/// Every answer the proxy makes itself, instead of relaying the upstream's: one place
/// decides the status, the stable `code` clients and dashboards can match on, the log
/// level and the counter.
#[derive(Debug)]
pub enum ProxyError {
    /// No upstream at all is configured.
    NoUpstream,
    /// CONNECT or TRACE: a proxy in front of an API is no tunnel and echoes nothing.
    MethodNotAllowed { method: String },
    /// The request speaks (or belongs to) an API with no upstream configured.
    NoUpstreamForApi { api: Protocol },
    /// No configured API matches and no `[upstreams].default` is set; `path` without its
    /// query, shortened ([`shown_path`]).
    Unrouted { method: String, path: String },
    /// The body is (or declares itself) over `proxy.max_body_bytes`.
    BodyTooLarge { declared: Option<u64>, limit: usize },
    /// The body did not arrive within `proxy.body_read_timeout_secs`.
    BodyTimeout { secs: f64 },
    /// Bodies in memory already fill `proxy.max_inflight_body_bytes`.
    BodiesInFlight { limit: usize },
    /// The body could not be read (client reset, bad chunking, …).
    BodyUnreadable(String),
    /// The upstream exchange failed; `upstream` is the base URL, password redacted.
    Upstream {
        error: UpstreamError,
        upstream: String,
        timeout_secs: f64,
    },
    /// A Rekognition request `aws.resign = "verified"` refused: answered in Rekognition's
    /// own 403 shape, never forwarded.
    ClientSignature(trust::Refusal),
}

impl ProxyError {
    /// Status, stable code and message.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ProxyError::NoUpstream => (
                StatusCode::BAD_GATEWAY,
                "no_upstream",
                "no upstream is configured (set [upstreams] or --upstream PROTOCOL=URL)".into(),
            ),
            ProxyError::MethodNotAllowed { method } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{method} is not forwarded: the proxy passes API requests to their upstream; \
                     it opens no tunnels (CONNECT) and echoes nothing back (TRACE)"
                ),
            ),
            ProxyError::NoUpstreamForApi { api } => {
                let name = api.name();
                (
                    StatusCode::NOT_FOUND,
                    "no_upstream_for_api",
                    format!(
                        "this is a {name} request and no {name} upstream is configured: set \
                         [upstreams].{name} (ADACOMPRESS_UPSTREAMS__{} or --upstream {name}=URL)",
                        name.to_ascii_uppercase()
                    ),
                )
            }
            ProxyError::Unrouted { method, path } => (
                StatusCode::NOT_FOUND,
                "unrouted",
                format!(
                    "no configured API matches {method} {path}; the proxy forwards only the APIs \
                     in [upstreams] (set [upstreams].default = URL to forward other requests \
                     untouched)"
                ),
            ),
            ProxyError::BodyTooLarge {
                declared: Some(len),
                limit,
            } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is {len} bytes, over proxy.max_body_bytes = {limit}"),
            ),
            ProxyError::BodyTooLarge {
                declared: None,
                limit,
            } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is over proxy.max_body_bytes = {limit}"),
            ),
            ProxyError::BodyTimeout { secs } => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("request body not received within proxy.body_read_timeout_secs = {secs} s"),
            ),
            ProxyError::BodiesInFlight { limit } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "request bodies in memory are at proxy.max_inflight_body_bytes = {limit}; retry shortly"
                ),
            ),
            ProxyError::BodyUnreadable(e) => (
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("could not read the request body: {e}"),
            ),
            ProxyError::ClientSignature(r) => (StatusCode::FORBIDDEN, r.kind, r.message.clone()),
            ProxyError::Upstream {
                error,
                upstream,
                timeout_secs,
            } => match error {
                UpstreamError::Timeout(m) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "upstream {upstream} did not answer within proxy.upstream_timeout_secs = {timeout_secs} s ({m})"
                    ),
                ),
                UpstreamError::Connect(m) => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!("upstream {upstream} is unreachable ({m})"),
                ),
                UpstreamError::Other(m) => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("upstream {upstream} failed ({m})"),
                ),
                UpstreamError::TooLarge(read, limit) => (
                    StatusCode::BAD_GATEWAY,
                    "answer_too_large",
                    format!(
                        "upstream {upstream} answered with over {read} bytes, over limits.max_answer_bytes = {limit}"
                    ),
                ),
            },
        }
    }

    /// Counts, logs and renders the error as the client gets it: in the shape of `api` (the
    /// API the request speaks or belongs to, [`crate::protocol::shape`]), else the proxy's
    /// neutral JSON naming the cause; `X-AdaCompress-Error` carries the stable code either way.
    pub fn respond(self, metrics: &Metrics, request_id: &str, api: Option<Protocol>) -> Response {
        let (status, code, message) = self.parts();
        match &self {
            ProxyError::ClientSignature(refusal) => {
                tracing::info!(id = %request_id, code, %message, "Rekognition request refused (aws.resign = verified)");
                let mut resp = refusal.respond();
                if let Ok(v) = HeaderValue::from_str(request_id) {
                    resp.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
                resp.headers_mut()
                    .insert(ERROR_HEADER, HeaderValue::from_static(code));
                return resp;
            }
            ProxyError::Upstream { error, .. } => {
                let kind = match error {
                    UpstreamError::Timeout(_) => "timeout",
                    UpstreamError::Connect(_) => "connect",
                    UpstreamError::Other(_) => "other",
                    UpstreamError::TooLarge(..) => "answer_too_large",
                };
                metrics
                    .upstream_errors
                    .get_or_create(&metrics::KindLabel { kind })
                    .inc();
                tracing::warn!(id = %request_id, code, %status, %message, "upstream error");
            }
            ProxyError::BodyTimeout { .. } => {
                metrics
                    .slow_clients
                    .get_or_create(&metrics::KindLabel { kind: "body" })
                    .inc();
                tracing::info!(id = %request_id, code, "request body not received in time");
            }
            ProxyError::NoUpstream => tracing::error!(id = %request_id, code, "{message}"),
            ProxyError::MethodNotAllowed { .. }
            | ProxyError::NoUpstreamForApi { .. }
            | ProxyError::Unrouted { .. } => {
                let reason = match &self {
                    ProxyError::NoUpstreamForApi { .. } => "no_upstream_for_api",
                    ProxyError::Unrouted { .. } => "unknown_path",
                    _ => "method_not_allowed",
                };
                metrics.unrouted(reason);
                tracing::info!(id = %request_id, code, "{message}");
            }
            ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyUnreadable(_)
            | ProxyError::BodiesInFlight { .. } => {
                tracing::info!(id = %request_id, code, "{message}");
            }
        }
        let mut resp = match api {
            Some(api) => crate::protocol::shape::proxy_error(api, status, &message, request_id)
                .into_response(),
            None => {
                let body = serde_json::json!({
                    "error": {
                        "code": status.as_u16(),
                        "status": status.canonical_reason().unwrap_or("error"),
                        "reason": code,
                        "message": message,
                        "source": "adacompress-proxy",
                        "request_id": request_id,
                    }
                });
                (
                    status,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
        };
        if let Ok(v) = HeaderValue::from_str(request_id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        resp.headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(code));
        if matches!(self, ProxyError::MethodNotAllowed { .. }) {
            // RFC 9110 §15.5.6: a 405 lists the methods the target supports.
            resp.headers_mut().insert(
                "allow",
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if matches!(self, ProxyError::BodyTimeout { .. }) {
            // The rest of the body may still be on its way: this connection is done.
            resp.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Headers that describe one hop, not the message: never forwarded either way.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Header names a `Connection:` header lists: hop-by-hop for this message (RFC 9110
/// §7.6.1), never forwarded.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The client's headers as they go upstream: hop-by-hop dropped (including those the
/// client's `Connection:` names), `accept-encoding` dropped (so answers come back readable
/// for estimation), our control headers dropped.
pub fn upstream_headers(client: &HeaderMap, set: &[(String, String)]) -> HeaderMap {
    let mut out = HeaderMap::new();
    let listed = connection_listed(client);
    for (name, value) in client {
        if is_hop_by_hop(name)
            || listed.iter().any(|l| l == name.as_str())
            || name == "accept-encoding"
            || name.as_str() == QUALITY_HEADER
            || name.as_str() == BYPASS_HEADER
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    for (name, value) in set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            out.insert(n, v);
        }
    }
    out
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    Timeout(String),
    Connect(String),
    Other(String),
    /// The answer grew past the limit (bytes read so far, the limit).
    TooLarge(usize, usize),
}

/// An upstream's answer, whole.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailers after the body (gRPC's status), passed back unchanged.
    pub trailers: Option<HeaderMap>,
}

/// Sends one request upstream and reads the whole answer, at most `max_answer` bytes
/// (read chunk by chunk: an oversized answer is dropped as soon as it crosses the limit,
/// whatever its `Content-Length` claimed).
pub async fn send_upstream(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
    max_answer: usize,
) -> Result<UpstreamAnswer, UpstreamError> {
    let classify = |e: reqwest::Error| {
        // Without the URL: its query may hold a client's API key (`?key=…`). Callers name
        // the upstream's base URL instead.
        let (timeout, connect) = (e.is_timeout(), e.is_connect());
        let text = error_chain(&e.without_url());
        if timeout {
            UpstreamError::Timeout(text)
        } else if connect {
            UpstreamError::Connect(text)
        } else {
            UpstreamError::Other(text)
        }
    };
    let resp = http
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(classify)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if let Some(len) = resp.content_length().filter(|&l| l > max_answer as u64) {
        return Err(UpstreamError::TooLarge(
            usize::try_from(len).unwrap_or(usize::MAX),
            max_answer,
        ));
    }
    use http_body_util::BodyExt;
    let mut stream = axum::http::Response::from(resp).into_body();
    let mut buf = Vec::new();
    let mut trailers = None;
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(classify)?;
        match frame.into_data() {
            Ok(chunk) => {
                if buf.len() + chunk.len() > max_answer {
                    return Err(UpstreamError::TooLarge(buf.len() + chunk.len(), max_answer));
                }
                buf.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let body = Bytes::from(buf);
    Ok(UpstreamAnswer {
        status,
        headers,
        body,
        trailers,
    })
}

/// Why the upstream HTTP clients could not be built ([`ProxyState::new`]); `serve` stops
/// with it at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("proxy.upstream_ca_file = {}: {source}", path.display())]
    CaRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Not PEM, no certificate in it, or a certificate that is not a usable trust anchor.
    #[error("proxy.upstream_ca_file = {}: {reason}", path.display())]
    CaInvalid {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot build the upstream HTTP client: {0}")]
    Build(String),
}

/// The certificates of `proxy.upstream_ca_file`, each checked as a trust anchor here, so
/// that a bad one is reported against the file rather than by the client builder.
fn upstream_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let invalid = |reason: String| ClientError::CaInvalid {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("not a PEM certificate bundle: {}", error_chain(&e))))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert.clone())
            .build()
            .map_err(|e| {
                invalid(format!(
                    "certificate {} of {} is not a usable CA certificate: {}",
                    i + 1,
                    certs.len(),
                    error_chain(&e)
                ))
            })?;
    }
    Ok(certs)
}

/// An error and its sources, `: `-joined (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One request as the stages pass it along: who asked, when, and what they sent.
struct RequestCtx {
    /// `X-Request-Id` as the client sent it (≤ 128 bytes), else a fresh UUID.
    request_id: String,
    started: Instant,
    /// Method, URI and headers as the client sent them.
    parts: axum::http::request::Parts,
    /// Path and query as the client sent them (`/` when absent).
    path_q: String,
    /// The protocol label of `adacompress_requests_total`, once `route` picked one; until
    /// then (no upstream at all) the request is not counted there.
    label: Option<&'static str>,
    /// The API the request speaks or belongs to ([`Protocol::owner`]), once `route` looked:
    /// the proxy's own errors are answered in its shape.
    api: Option<Protocol>,
    /// A gRPC call: the proxy's own errors become gRPC statuses ([`grpc::status_answer`]).
    grpc: bool,
    /// The body's share of `proxy.max_inflight_body_bytes`, held until the answer is sent.
    body_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl RequestCtx {
    fn new(parts: axum::http::request::Parts, started: Instant) -> RequestCtx {
        // Set (and checked) by the request-id layers of [`app`]; the fallback is for a
        // handler mounted without them.
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_CHARS)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let path_q = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        RequestCtx {
            request_id,
            started,
            parts,
            path_q,
            label: None,
            api: None,
            grpc: false,
            body_permit: None,
        }
    }

    /// The one place a request ends: an error becomes its JSON answer
    /// ([`ProxyError::respond`]), and once routed the request is counted and timed.
    fn finish(&self, s: &ProxyState, result: Result<Response, ProxyError>) -> Response {
        let (resp, status) = match result {
            Ok(resp) => {
                let status = resp.status();
                (resp, status)
            }
            Err(e) if self.grpc => {
                // A trailers-only gRPC status; counted under the HTTP status it stands for.
                let (status, code, message) = e.parts();
                let _ = e.respond(&s.metrics, &self.request_id, self.api);
                let answer = grpc::status_answer(
                    grpc::code_for_http(status),
                    &message,
                    code,
                    &self.request_id,
                );
                (answer, status)
            }
            Err(e) => {
                let resp = e.respond(&s.metrics, &self.request_id, self.api);
                let status = resp.status();
                (resp, status)
            }
        };
        if let Some(label) = self.label {
            s.metrics
                .requests
                .get_or_create(&metrics::ProtocolStatus {
                    protocol: label.to_owned(),
                    status: status.as_u16(),
                })
                .inc();
            s.metrics
                .request_duration
                .get_or_create(&metrics::ProtocolLabel {
                    protocol: label.to_owned(),
                })
                .observe(self.started.elapsed().as_secs_f64());
        }
        resp
    }
}

/// Where a request goes: the API it speaks (`None`: not one the proxy compresses) and the
/// upstream that gets it.
struct Routed {
    protocol: Option<Protocol>,
    /// A gRPC call (its images are found in the protobuf message; HTTP/2 upstream).
    grpc: Option<grpc::GrpcCall>,
    /// Why it goes up untouched when `protocol` is `None`: `OtherOperation` (a known API's
    /// other routes) or `UnknownPath` (`[upstreams].default`).
    untouched: Passthrough,
    /// The upstream's base URL.
    base: String,
    /// Goes to the Rekognition upstream (any operation, compressed or not): checked under
    /// `aws.resign` and re-signed.
    rekognition: bool,
}

/// What goes upstream, as `compress` left it.
struct Upload {
    outcome: compress::Outcome,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    /// Whether the client's request goes up as sent (no new body, or re-signing failed).
    original: bool,
    bytes_saved: usize,
}

/// The whole request path (see the module doc): the stages in order; whichever fails,
/// `RequestCtx::finish` renders it.
pub async fn handle(State(s): State<Arc<ProxyState>>, req: Request) -> Response {
    let started = Instant::now();
    s.metrics.inflight.inc();
    let _inflight = InflightGuard(s.metrics.clone());
    let (parts, body) = req.into_parts();
    let mut ctx = RequestCtx::new(parts, started);
    let result = stages(&s, &mut ctx, body).await;
    ctx.finish(&s, result)
}

async fn stages(
    s: &Arc<ProxyState>,
    ctx: &mut RequestCtx,
    body: Body,
) -> Result<Response, ProxyError> {
    let routed = route(s, ctx)?;
    let body = read_body(s, ctx, body).await?;
    if routed.rekognition {
        s.trust
            .check(
                ctx.parts.method.as_str(),
                &ctx.path_q,
                &ctx.parts.headers,
                &body,
            )
            .map_err(ProxyError::ClientSignature)?;
    }
    let upload = compress(s, ctx, &routed, &body).await;
    let answer = forward(s, &routed, &upload, ctx.parts.method.clone()).await?;
    let reasked = reask::maybe_reask(s, ctx, &routed, &body, &upload, &answer).await;
    Ok(answer_client(
        s, ctx, &routed, body, upload, answer, reasked,
    ))
}

/// Stage 1: recognise the API and pick its upstream; never a guess (see the module doc).
fn route(s: &ProxyState, ctx: &mut RequestCtx) -> Result<Routed, ProxyError> {
    let method = &ctx.parts.method;
    let headers = &ctx.parts.headers;
    if grpc::is_grpc(headers) {
        ctx.grpc = true;
        return route_grpc(s, ctx);
    }
    let recognized = Protocol::recognize(method, &ctx.path_q, headers);
    // Requests of a known API that are not compressed (other Rekognition operations,
    // KServe/Triton and TorchServe health and metadata, the API's other endpoints) go to
    // that API's upstream untouched; Rekognition ones are signed for it like DetectLabels.
    let api = recognized.or_else(|| Protocol::owner(method, &ctx.path_q, headers));
    // Whatever happens next, the proxy's own errors speak this API's error shape.
    ctx.api = api;
    if *method == Method::CONNECT || *method == Method::TRACE {
        ctx.label = Some("other");
        return Err(ProxyError::MethodNotAllowed {
            method: method.as_str().to_owned(),
        });
    }
    if s.routes.is_empty() && s.default_upstream.is_none() {
        return Err(ProxyError::NoUpstream);
    }
    if let Some(api) = api {
        ctx.label = Some(api.name());
        let route = s
            .routes
            .iter()
            .find(|r| r.protocol == api)
            .ok_or(ProxyError::NoUpstreamForApi { api })?;
        return Ok(Routed {
            protocol: recognized,
            grpc: None,
            untouched: Passthrough::OtherOperation,
            base: route.base.clone(),
            rekognition: api == Protocol::Rekognition,
        });
    }
    ctx.label = Some("other");
    match &s.default_upstream {
        Some(base) => Ok(Routed {
            protocol: None,
            grpc: None,
            untouched: Passthrough::UnknownPath,
            base: base.clone(),
            rekognition: false,
        }),
        None => Err(ProxyError::Unrouted {
            method: shown(method.as_str(), 16),
            path: shown_path(ctx.parts.uri.path()),
        }),
    }
}

/// Stage 1 for a gRPC call: its service names the API; a service no adapter knows is
/// `UNIMPLEMENTED` (the 404 `unrouted` as a gRPC status), never forwarded to a guess.
fn route_grpc(s: &ProxyState, ctx: &mut RequestCtx) -> Result<Routed, ProxyError> {
    let method = &ctx.parts.method;
    let Some(call) = grpc::recognize(method, &ctx.path_q) else {
        ctx.label = Some("other");
        return Err(ProxyError::Unrouted {
            method: shown(method.as_str(), 16),
            path: shown_path(ctx.parts.uri.path()),
        });
    };
    ctx.api = Some(call.api);
    ctx.label = Some(call.api.name());
    let route = s
        .routes
        .iter()
        .find(|r| r.protocol == call.api)
        .ok_or(ProxyError::NoUpstreamForApi { api: call.api })?;
    Ok(Routed {
        protocol: None,
        grpc: Some(call),
        untouched: Passthrough::OtherOperation,
        base: route.base.clone(),
        rekognition: false,
    })
}

/// Longest path an error message repeats.
const MAX_SHOWN_PATH_CHARS: usize = 100;

/// A path as an answer or a log may repeat it: never the query (it may hold a key), at most
/// [`MAX_SHOWN_PATH_CHARS`] characters.
fn shown_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    shown(
        if path.is_empty() { "/" } else { path },
        MAX_SHOWN_PATH_CHARS,
    )
}

/// At most `max` characters of `text`, anything but visible ASCII as `?`, `…` when cut.
fn shown(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Stage 2: the body, within `proxy.max_body_bytes` (declared or not), the in-memory
/// budget (its permit kept in `ctx`) and `proxy.body_read_timeout_secs`.
async fn read_body(s: &ProxyState, ctx: &mut RequestCtx, body: Body) -> Result<Bytes, ProxyError> {
    let max = s.cfg.proxy.max_body_bytes;
    let declared = ctx
        .parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&l| l > max as u64) {
        return Err(ProxyError::BodyTooLarge {
            declared: Some(len),
            limit: max,
        });
    }
    let kib = declared.map_or(max, |l| l as usize).div_ceil(1024).max(1) as u32;
    let Ok(Ok(permit)) = tokio::time::timeout(
        Duration::from_secs(1),
        s.bodies.clone().acquire_many_owned(kib),
    )
    .await
    else {
        return Err(ProxyError::BodiesInFlight {
            limit: s.cfg.proxy.max_inflight_body_bytes,
        });
    };
    ctx.body_permit = Some(permit);
    let body_timeout = Duration::from_secs_f64(s.cfg.proxy.body_read_timeout_secs);
    match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|src| src.is::<http_body_util::LengthLimitError>());
            Err(if too_big {
                ProxyError::BodyTooLarge {
                    declared: None,
                    limit: max,
                }
            } else {
                ProxyError::BodyUnreadable(e.to_string())
            })
        }
        Err(_) => Err(ProxyError::BodyTimeout {
            secs: s.cfg.proxy.body_read_timeout_secs,
        }),
    }
}

/// Stage 3: compress what can be compressed, re-sign what must be. Fail-open, so never an
/// error: whatever goes wrong leaves the original in place, counted as a [`Passthrough`].
async fn compress(s: &Arc<ProxyState>, ctx: &RequestCtx, routed: &Routed, body: &Bytes) -> Upload {
    let headers = &ctx.parts.headers;
    let bypass = headers
        .get(BYPASS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let forced = headers
        .get(QUALITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok());
    let outcome = match (routed.protocol, routed.grpc) {
        (None, Some(call)) if call.compress && !bypass => {
            let view = ProxyRequest {
                path_and_query: &ctx.path_q,
                headers,
                body,
            };
            compress::compress_request(s, &grpc::GrpcWire(call.api), &view, forced).await
        }
        (None, Some(call)) if call.compress => {
            compress::Outcome::passthrough(&s.metrics, Passthrough::Bypass)
        }
        (None, _) => compress::Outcome::passthrough(&s.metrics, routed.untouched),
        (Some(_), _) if bypass => compress::Outcome::passthrough(&s.metrics, Passthrough::Bypass),
        // A signed body cannot change without the proxy's own credentials to re-sign it.
        (Some(Protocol::Rekognition), _)
            if s.resign.is_none() && headers.contains_key("authorization") =>
        {
            compress::Outcome::passthrough(&s.metrics, Passthrough::NoCredentials)
        }
        (Some(p), _) => {
            let view = ProxyRequest {
                path_and_query: &ctx.path_q,
                headers,
                body,
            };
            compress::compress_request(s, &p, &view, forced).await
        }
    };
    let url = format!("{}{}", routed.base, ctx.path_q);
    let mut up_headers = upstream_headers(headers, &outcome.set_headers);
    if routed.grpc.is_some() {
        // gRPC's one hop-by-hop header that must reach the server ("te: trailers").
        up_headers.insert("te", HeaderValue::from_static("trailers"));
    }
    let mut send_body = outcome.body.clone().unwrap_or_else(|| body.clone());
    let mut original = outcome.body.is_none();
    // Every request to the Rekognition upstream, changed or not: the client signed it for
    // the proxy's Host (admitted by `aws.resign` in `stages`).
    if routed.rekognition
        && let Some(resign) = &s.resign
        && let Err(e) = resign(&url, &mut up_headers, &send_body)
    {
        tracing::warn!(id = %ctx.request_id, error = %e, "re-signing failed; forwarding the original");
        s.metrics.passthrough(Passthrough::Error);
        up_headers = upstream_headers(headers, &[]);
        send_body = body.clone();
        original = true;
    }
    let bytes_saved = if original { 0 } else { outcome.bytes_saved };
    Upload {
        outcome,
        url,
        headers: up_headers,
        body: send_body,
        original,
        bytes_saved,
    }
}

/// Stage 4: the exchange with the upstream, timed (`stage="upstream"`).
async fn forward(
    s: &ProxyState,
    routed: &Routed,
    upload: &Upload,
    method: Method,
) -> Result<UpstreamAnswer, ProxyError> {
    let t_up = Instant::now();
    let answer = send_upstream(
        if routed.grpc.is_some() {
            &s.http2
        } else {
            &s.http
        },
        method,
        &upload.url,
        upload.headers.clone(),
        upload.body.clone(),
        s.cfg.limits.max_answer_bytes,
    )
    .await;
    s.metrics.stage("upstream", t_up.elapsed().as_secs_f64());
    answer.map_err(|error| ProxyError::Upstream {
        error,
        upstream: redact_userinfo(&routed.base),
        timeout_secs: s.cfg.proxy.upstream_timeout_secs,
    })
}

/// Stage 5: the upstream's answer with our headers, the byte counters, the log line, and
/// (off the request path) now and then an estimate.
fn answer_client(
    s: &Arc<ProxyState>,
    ctx: &RequestCtx,
    routed: &Routed,
    body: Bytes,
    upload: Upload,
    answer: UpstreamAnswer,
    reasked: Option<reask::Reasked>,
) -> Response {
    let Upload {
        outcome,
        url,
        original: uploaded_all_original,
        mut bytes_saved,
        ..
    } = upload;
    let reask_bytes = reasked.as_ref().map_or(0, |r| r.image_bytes);
    let reasked = reasked.and_then(|r| r.answer);
    // The client gets the answer to the original when it was re-asked.
    let client = reasked.clone().unwrap_or_else(|| answer.clone());
    if reask_bytes > 0 {
        bytes_saved = 0;
    }
    let protocol = routed.protocol;
    let request_id = &ctx.request_id;
    let compressed_call = routed.grpc.filter(|c| c.compress).map(|c| c.api);
    if let Some(p) = protocol.or(compressed_call) {
        let in_bytes: usize = outcome.slots.iter().map(|x| x.original_len).sum();
        let out_bytes: usize = reask_bytes
            + if uploaded_all_original {
                in_bytes
            } else {
                outcome.slots.iter().map(|x| x.uploaded_len).sum()
            };
        let l = metrics::ProtocolLabel {
            protocol: p.name().to_owned(),
        };
        s.metrics.bytes_in.get_or_create(&l).inc_by(in_bytes as u64);
        s.metrics
            .bytes_out
            .get_or_create(&l)
            .inc_by(out_bytes as u64);
    }
    let mut resp = Response::builder().status(client.status);
    if let Some(h) = resp.headers_mut() {
        let listed = connection_listed(&client.headers);
        for (name, value) in &client.headers {
            if !is_hop_by_hop(name) && !listed.iter().any(|l| l == name.as_str()) {
                h.append(name.clone(), value.clone());
            }
        }
        let mut actions = if uploaded_all_original && outcome.body.is_some() {
            "original".to_owned()
        } else {
            outcome.action_header(s.cfg.limits.max_header_images)
        };
        if reasked.is_some() {
            actions.insert_str(0, "reasked:");
        }
        if let Ok(v) = HeaderValue::from_str(&actions) {
            h.insert(ACTION_HEADER, v);
        }
        h.insert(SAVED_HEADER, HeaderValue::from(bytes_saved as u64));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID_HEADER, v);
        }
    }
    tracing::info!(
        id = %request_id,
        protocol = ctx.label.unwrap_or("other"),
        status = client.status.as_u16(),
        reasked = reasked.is_some(),
        actions = %outcome.action_header(s.cfg.limits.max_header_images),
        bytes_saved,
        ms = ctx.started.elapsed().as_millis() as u64,
        "proxied"
    );

    // gRPC calls whose answers the proxy cannot read yet are not audited: the credit an
    // audit reserved is given back.
    let readable = routed.grpc.is_none_or(|c| grpc::reads_answers(c.api));
    if !readable && let Some(online) = &s.online {
        for slot in &outcome.slots {
            if slot.audit.is_some() {
                online.refund_audit(slot.original_len as f64);
            }
        }
    }
    // Off the request path: compare with the other version now and then.
    if let (Some(p), Some(online)) = (protocol.or(compressed_call), s.online.clone())
        && readable
        && outcome.has_decisions()
    {
        estimate::maybe_estimate(
            s.clone(),
            online,
            estimate::Pending {
                protocol: p,
                grpc: routed.grpc.is_some(),
                method: ctx.parts.method.clone(),
                url,
                client_headers: ctx.parts.headers.clone(),
                path_and_query: ctx.path_q.clone(),
                original_body: body,
                served: answer,
                served_original: uploaded_all_original,
                reasked,
                outcome,
                request_id: request_id.clone(),
            },
        );
    }
    let body = match client.trailers {
        Some(trailers) => grpc::body_with_trailers(client.body, Some(trailers)),
        None => Body::from(client.body),
    };
    resp.body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl ProxyState {
    /// The semaphores the compression pool uses: (run, admit).
    pub(crate) fn pool(&self) -> (Arc<Semaphore>, Arc<Semaphore>) {
        (self.run.clone(), self.admit.clone())
    }

    /// Slots for estimation uploads.
    pub(crate) fn estimation_slots(&self) -> Arc<Semaphore> {
        self.estimates.clone()
    }

    fn estimate_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.estimate_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs an estimate task in the set shutdown drains; reaps the finished ones first so
    /// the set holds only what is running.
    pub(crate) fn spawn_estimate<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.estimate_tasks();
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %e, "an estimate task panicked");
            }
        }
        tasks.spawn(task);
    }

    /// Estimate tasks running.
    pub fn estimates_running(&self) -> usize {
        let mut tasks = self.estimate_tasks();
        while tasks.try_join_next().is_some() {}
        tasks.len()
    }

    /// Waits for the estimate tasks until `deadline`, then aborts the rest (an aborted
    /// estimate just teaches nothing). Returns whether all finished in time.
    pub async fn drain_estimates(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Taken out of the lock to be awaited; tasks spawned meanwhile (by requests still
            // finishing) land in the fresh set and are picked up by the next round.
            let mut tasks = std::mem::take(&mut *self.estimate_tasks());
            if tasks.is_empty() {
                return true;
            }
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout_at(deadline, all).await.is_err() {
                let mut late = std::mem::take(&mut *self.estimate_tasks());
                let aborted = tasks.len() + late.len();
                tasks.abort_all();
                late.abort_all();
                // Aborted tasks end at their next await point.
                let reap = async {
                    while tasks.join_next().await.is_some() {}
                    while late.join_next().await.is_some() {}
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), reap).await;
                tracing::warn!(
                    aborted,
                    "estimates did not finish within proxy.drain_secs; aborted"
                );
                return false;
            }
        }
    }
}
