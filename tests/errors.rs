//! Failures have one home (issue 8): every `ProxyError` arm and every `Passthrough` arm a
//! request can reach, driven through `proxy::app` in-process (`tower::ServiceExt::oneshot`).
//! Each case asserts the status, the `X-AdaCompress-Error` reason (proxy errors) or the
//! `X-AdaCompress-Action` value (passthroughs), and that the matching counter went up by
//! exactly one. A proxy error is in the shape of the request's API when it has one (issue 9:
//! one per API below), else in the proxy's neutral shape.
//!
//! The upstream is the real local backend on loopback, except for faults it cannot show: a
//! hung upstream, an oversized answer and a garbled answer come from tiny servers here.
//!
//! Not reachable from a request, so not here:
//! - `Passthrough::Abandoned`: counted only after the client hung up, so there is no answer
//!   to assert on (the job skips the images it had not started).
//! - `Passthrough::Error` from a panicking compression task, an agent failure, an encoder
//!   failure or an adapter that cannot put images back: none of these can be provoked by a
//!   request's bytes (they are bugs or resource failures). The one `Error` a request can
//!   reach — re-signing a changed Rekognition body failing — is tested, with a re-signer
//!   that always fails.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use adacompress::codec::{self, EncoderMode};
use adacompress::config::Config;
use adacompress::protocol::Protocol;
use adacompress::proxy::{self, ProxyState, Resigner, Route};
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine;
use tower::ServiceExt;

use common::*;

// ---------------------------------------------------------------------------------------------
// Harness.

/// A proxy state with every protocol routed to `upstream` (none when empty) and no agent.
fn state(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Arc<ProxyState> {
    state_with(upstream, tweak, None)
}

fn state_with(
    upstream: &str,
    tweak: impl FnOnce(&mut Config),
    resign: Option<Resigner>,
) -> Arc<ProxyState> {
    let mut cfg = Config::default();
    tweak(&mut cfg);
    let routes = if upstream.is_empty() {
        Vec::new()
    } else {
        Protocol::ALL
            .iter()
            .map(|&protocol| Route {
                protocol,
                base: upstream.to_owned(),
            })
            .collect()
    };
    Arc::new(ProxyState::new(cfg, routes, None, resign).expect("proxy state"))
}

/// One sample of the state's `/metrics` exposition (0 when absent).
fn sample(s: &ProxyState, name: &str) -> f64 {
    metric_value(&s.metrics.render(), name)
}

fn passthroughs(s: &ProxyState, reason: &str) -> f64 {
    sample(
        s,
        &format!("adacompress_passthrough_total{{reason=\"{reason}\"}}"),
    )
}

fn requests(s: &ProxyState, protocol: &str, status: u16) -> f64 {
    sample(
        s,
        &format!("adacompress_requests_total{{protocol=\"{protocol}\",status=\"{status}\"}}"),
    )
}

/// A request as a client sends it (path, headers, body), replayable against the proxy and
/// the backend alike.
#[derive(Clone)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn of(protocol: Protocol, image: &[u8]) -> Req {
        let r = protocol.client_request(image, 5);
        Req {
            path: r.path_and_query,
            headers: r.headers,
            body: r.body,
        }
    }

    /// A Google `images:annotate` request with `requests` as given.
    fn google_json(requests: serde_json::Value) -> Req {
        Req {
            path: "/v1/images:annotate".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::json!({ "requests": requests })
                .to_string()
                .into_bytes(),
        }
    }

    fn google(images: &[Vec<u8>]) -> Req {
        Req::google_json(
            images
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "image": {"content": base64::engine::general_purpose::STANDARD.encode(i)},
                        "features": [{"type": "LABEL_DETECTION", "maxResults": 5}],
                    })
                })
                .collect(),
        )
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Forced quality: the image path runs without an agent.
    fn forced(self, q: u8) -> Req {
        self.header(proxy::QUALITY_HEADER, &q.to_string())
    }

    /// As the proxy gets it: POST with the body's `Content-Length`, as a client sends it.
    fn to_request(&self) -> Request<Body> {
        let mut b = Request::post(self.path.as_str()).header("content-length", self.body.len());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Body::from(self.body.clone())).unwrap()
    }

    /// The status the upstream gives this request sent straight to it.
    async fn direct_status(&self, upstream: &str) -> StatusCode {
        let mut b = reqwest::Client::new()
            .post(format!("{upstream}{}", self.path))
            .body(self.body.clone());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.send().await.expect("backend answers").status()
    }
}

/// What the client got.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn action(&self) -> Option<&str> {
        self.headers
            .get(proxy::ACTION_HEADER)
            .map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The proxy's own error: its `X-AdaCompress-Error` reason, after checking the body is
    /// JSON (and, in the neutral shape, names the same reason).
    fn reason(&self) -> String {
        let reason = self
            .headers
            .get(proxy::ERROR_HEADER)
            .unwrap_or_else(|| panic!("no X-AdaCompress-Error in {:?}", self.headers))
            .to_str()
            .unwrap()
            .to_owned();
        let json = self.json();
        if json["error"]["source"] == "adacompress-proxy" {
            assert_eq!(self.neutral_reason(), reason, "{json}");
        }
        reason
    }

    /// The proxy's neutral error body (the request's API unknown): `error.reason`, after
    /// checking the JSON's shape.
    fn neutral_reason(&self) -> String {
        let json = self.json();
        let err = &json["error"];
        assert_eq!(err["source"], "adacompress-proxy", "{json}");
        assert_eq!(err["code"], self.status.as_u16(), "{json}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            self.headers["content-type"], "application/json",
            "{:?}",
            self.headers
        );
        err["reason"].as_str().expect("a reason").to_owned()
    }

    /// A Google Vision error body: `{"error": {"code": status, "message", "status"}}`, the
    /// `google.rpc.Code` name returned.
    fn google_status(&self) -> String {
        let json = self.json();
        let err = &json["error"];
        assert_eq!(err["code"], self.status.as_u16(), "{json}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert!(err.get("source").is_none(), "not the neutral shape: {json}");
        assert_eq!(json.as_object().map(|o| o.len()), Some(1), "{json}");
        err["status"].as_str().expect("a status").to_owned()
    }
}

async fn call(s: &Arc<ProxyState>, req: Request<Body>) -> Answer {
    let resp = proxy::app(s.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("answer body");
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends `req` through the proxy and checks a passthrough: the backend's own status for the
/// request, `X-AdaCompress-Action: action`, and exactly one more `reason` counted.
async fn expect_passthrough(
    s: &Arc<ProxyState>,
    backend: &str,
    req: Req,
    action: &str,
    reason: &str,
) {
    let before = passthroughs(s, reason);
    let got = call(s, req.to_request()).await;
    assert_eq!(
        got.action(),
        Some(action),
        "{reason}: {:?}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(
        passthroughs(s, reason) - before,
        1.0,
        "{reason} counted once\n{}",
        s.metrics.render()
    );
    assert_eq!(
        got.status,
        req.direct_status(backend).await,
        "{reason}: the upstream's status comes back"
    );
    assert!(got.headers.contains_key(proxy::REQUEST_ID_HEADER));
}

/// Checks a proxy error: status, JSON reason, no action header, and one more request
/// counted under `protocol` with that status.
fn expect_error(s: &ProxyState, got: &Answer, status: StatusCode, reason: &str, before: f64) {
    assert_eq!(
        got.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.reason(), reason);
    // Every request here is Google's: the body is in Google's error shape.
    got.google_status();
    assert_eq!(got.action(), None, "the proxy's own answer has no action");
    assert!(got.headers.contains_key(proxy::REQUEST_ID_HEADER));
    assert_eq!(
        requests(s, "google", status.as_u16()) - before,
        1.0,
        "{reason}: request counted once"
    );
}

/// A request body that yields `chunks` (no size hint: as chunked transfer encoding), then
/// either ends or never yields again.
struct Chunks {
    chunks: VecDeque<Result<Bytes, std::io::Error>>,
    then_hang: bool,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.chunks.pop_front() {
            Some(c) => Poll::Ready(Some(c.map(http_body::Frame::data))),
            // Never woken again: the body stalls until the proxy gives up on it.
            None if self.then_hang => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

fn streamed(
    path: &str,
    chunks: Vec<Result<Bytes, std::io::Error>>,
    then_hang: bool,
) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::new(Chunks {
            chunks: chunks.into(),
            then_hang,
        }))
        .unwrap()
}

/// A tiny upstream with `app` on loopback (for faults the real backend cannot show).
async fn fake_upstream(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A small JPEG the proxy can compress a lot (saved at q95, forced to q30).
fn compressible() -> Vec<u8> {
    hostile::jpeg_rgb(&hostile::gradient(256, 256), 95, EncoderMode::Fastest)
}

/// Noise saved at q5: its blocky artefacts, re-encoded faithfully at q95, are not smaller.
fn already_small() -> Vec<u8> {
    let noise = image::RgbImage::from_fn(128, 128, |x, y| {
        let v = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ (x * y)) % 256;
        image::Rgb([v as u8, (v * 3 % 256) as u8, (v * 7 % 256) as u8])
    });
    codec::encode_jpeg(&noise, 5, EncoderMode::Fastest).unwrap()
}

// ---------------------------------------------------------------------------------------------
// ProxyError: every arm.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_is_a_502_and_is_not_counted_as_a_routed_request() {
    let s = state("", |_| {});
    let got = call(&s, Req::google(&[compressible()]).to_request()).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(got.reason(), "no_upstream");
    assert_eq!(got.google_status(), "UNAVAILABLE");
    assert_eq!(got.action(), None);
    // A request of no known API: the neutral shape.
    let got = call(
        &s,
        Request::post("/some/other/api")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(got.neutral_reason(), "no_upstream");
    // No route, no protocol label: no `requests_total` sample at all.
    assert!(
        !s.metrics.render().contains("adacompress_requests_total{"),
        "{}",
        s.metrics.render()
    );
}

fn unrouted(s: &ProxyState, reason: &str) -> f64 {
    sample(
        s,
        &format!("adacompress_unrouted_requests_total{{reason=\"{reason}\"}}"),
    )
}

/// Routing never guesses (issue 9): a path no configured API matches, an API without an
/// upstream and CONNECT/TRACE are answered by the proxy itself, counted, and nothing goes
/// up. The upstream here counts what reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_requests_are_404_or_405_with_their_reason_and_never_forwarded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let upstream = fake_upstream(axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { "upstream" }
    }))
    .await;
    // Only Google is configured.
    let mut cfg = Config::default();
    cfg.upstreams.insert("google".into(), upstream.clone());
    let routes = vec![Route {
        protocol: Protocol::GoogleVision,
        base: upstream.clone(),
    }];
    let s = Arc::new(ProxyState::new(cfg, routes, None, None).expect("proxy state"));

    // No API matches: 404 naming the method and the path, never the query.
    let req = Request::post("/some/other/api?key=SECRET-KEY-123")
        .body(Body::from("hello"))
        .unwrap();
    let got = call(&s, req).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.neutral_reason(), "unrouted");
    assert_eq!(got.reason(), "unrouted");
    assert_eq!(got.action(), None);
    let text = String::from_utf8_lossy(&got.body).into_owned();
    assert!(text.contains("POST /some/other/api"), "{text}");
    assert!(text.contains("[upstreams].default"), "{text}");
    assert!(
        !text.contains("SECRET"),
        "the query is never echoed: {text}"
    );
    assert_eq!(unrouted(&s, "unknown_path"), 1.0);
    assert_eq!(requests(&s, "other", 404), 1.0);
    // A long path is cut.
    let long = format!("/{}", "a".repeat(5000));
    let got = call(&s, Request::get(long.as_str()).body(Body::empty()).unwrap()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.body.len() < 1000, "{}", got.body.len());

    // A known API without an upstream: Azure's analyze, KServe's health, Azure 3.2's
    // analyze (an endpoint `owner` claims for Azure), each in its API's error shape.
    let azure = Req::of(Protocol::Azure, &compressible());
    let got = call(&s, azure.to_request()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.reason(), "no_upstream_for_api");
    let json = got.json();
    assert_eq!(json["error"]["code"], "404", "{json}");
    let text = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("azure") && text.contains("[upstreams].azure"),
        "{text}"
    );
    assert_eq!(requests(&s, "azure", 404), 1.0);
    let health = Request::get("/v2/health/ready")
        .body(Body::empty())
        .unwrap();
    let got = call(&s, health).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.reason(), "no_upstream_for_api");
    let json = got.json();
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|m| m.contains("[upstreams].kserve")),
        "KServe's {{\"error\": text}}: {json}"
    );
    let v32 = Request::post("/vision/v3.2/analyze?visualFeatures=Tags")
        .body(Body::from("x"))
        .unwrap();
    let got = call(&s, v32).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.reason(), "no_upstream_for_api");
    assert!(String::from_utf8_lossy(&got.body).contains("[upstreams].azure"));
    assert_eq!(unrouted(&s, "no_upstream_for_api"), 3.0);

    // CONNECT and TRACE: 405 with `Allow`, even on a path an API owns.
    for method in ["CONNECT", "TRACE"] {
        let req = Request::builder()
            .method(method)
            .uri("/v1/images:annotate")
            .body(Body::empty())
            .unwrap();
        let got = call(&s, req).await;
        assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(got.reason(), "method_not_allowed", "{method}");
        // The path is Google's: Google's shape.
        assert_eq!(got.google_status(), "UNIMPLEMENTED", "{method}");
        assert!(got.headers.contains_key("allow"), "{method}");
        assert!(String::from_utf8_lossy(&got.body).contains(method));
    }
    assert_eq!(unrouted(&s, "method_not_allowed"), 2.0);
    assert_eq!(requests(&s, "other", 405), 2.0);

    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing went up");
    // The configured API still goes up, and so do its other endpoints (`owner`), whatever
    // the method.
    let got = call(&s, Req::google(&[]).to_request()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], b"upstream");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    for (method, path) in [
        ("POST", "/v1/files:asyncBatchAnnotate"),
        ("POST", "/v1p4beta1/images:annotate"),
        ("GET", "/v1/images:annotate"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from("{}"))
            .unwrap();
        let got = call(&s, req).await;
        assert_eq!(got.status, StatusCode::OK, "{method} {path}");
        assert_eq!(
            got.action(),
            Some("original:other_operation"),
            "{method} {path}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!(unrouted(&s, "unknown_path"), 2.0, "none of them unrouted");
}

/// With `[upstreams].default`, what matches no API goes there untouched; a known API
/// without its own upstream still gets the 404 (the default is not a fallback for APIs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_upstream_takes_unknown_paths_but_not_a_known_apis_requests() {
    let default = fake_upstream(axum::Router::new().fallback(
        |req: axum::extract::Request| async move { format!("default saw {}", req.uri()) },
    ))
    .await;
    let mut cfg = Config::default();
    cfg.upstreams.insert("default".into(), default.clone());
    let s = Arc::new(ProxyState::new(cfg, Vec::new(), None, None).expect("proxy state"));
    let req = Request::put("/some/other/api?x=1")
        .body(Body::from("hello"))
        .unwrap();
    let got = call(&s, req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], b"default saw /some/other/api?x=1");
    assert_eq!(got.action(), Some("original:unknown_path"));
    assert_eq!(passthroughs(&s, "unknown_path"), 1.0);
    assert_eq!(requests(&s, "other", 200), 1.0);
    let got = call(&s, Req::google(&[compressible()]).to_request()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.reason(), "no_upstream_for_api");
    assert_eq!(unrouted(&s, "unknown_path"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_errors_are_413_408_and_400_each_with_its_reason() {
    let (backend, _b, _stop) = spawn_backend().await;
    let s = state(&backend, |c| {
        c.proxy.max_body_bytes = 64 * 1024;
        c.proxy.body_read_timeout_secs = 0.2;
    });
    let path = "/v1/images:annotate";

    // Declared over the limit: refused before a byte is read.
    let before = requests(&s, "google", 413);
    let req = Request::post(path)
        .header("content-length", 64 * 1024 + 1)
        .body(Body::from(vec![b' '; 64 * 1024 + 1]))
        .unwrap();
    let got = call(&s, req).await;
    expect_error(
        &s,
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        before,
    );
    assert!(String::from_utf8_lossy(&got.body).contains("is 65537 bytes"));

    // Undeclared (chunked), found over the limit as it arrives.
    let before = requests(&s, "google", 413);
    let chunk = Bytes::from(vec![b' '; 16 * 1024]);
    let got = call(
        &s,
        streamed(path, (0..5).map(|_| Ok(chunk.clone())).collect(), false),
    )
    .await;
    expect_error(
        &s,
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        before,
    );
    assert!(!String::from_utf8_lossy(&got.body).contains("bytes, over"));

    // A body that stops arriving: 408 after body_read_timeout_secs, connection closed.
    let before = requests(&s, "google", 408);
    let slow = sample(&s, "adacompress_slow_clients_total{kind=\"body\"}");
    let got = call(
        &s,
        streamed(path, vec![Ok(Bytes::from_static(b"{\"requests\":"))], true),
    )
    .await;
    expect_error(
        &s,
        &got,
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        before,
    );
    assert_eq!(got.headers["connection"], "close");
    assert_eq!(
        sample(&s, "adacompress_slow_clients_total{kind=\"body\"}") - slow,
        1.0
    );

    // A body that breaks off (client reset, bad chunking): 400.
    let before = requests(&s, "google", 400);
    let got = call(
        &s,
        streamed(
            path,
            vec![
                Ok(Bytes::from_static(b"{\"requests\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "client reset",
                )),
            ],
            false,
        ),
    )
    .await;
    expect_error(&s, &got, StatusCode::BAD_REQUEST, "body_unreadable", before);
    assert!(String::from_utf8_lossy(&got.body).contains("client reset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_over_the_budget_are_a_503_busy() {
    let (backend, _b, _stop) = spawn_backend().await;
    // 4 KiB of bodies in memory at once; a 3 KiB body stalls while holding its share.
    let s = state(&backend, |c| {
        c.proxy.max_inflight_body_bytes = 4 * 1024;
        c.proxy.body_read_timeout_secs = 5.0;
    });
    let path = "/v1/images:annotate";
    let holder = {
        let s = s.clone();
        let req = Request::post(path)
            .header("content-length", 3 * 1024)
            .body(Body::new(Chunks {
                chunks: VecDeque::new(),
                then_hang: true,
            }))
            .unwrap();
        tokio::spawn(async move { call(&s, req).await })
    };
    // The holder has its permit once it is in flight and reading.
    while sample(&s, "adacompress_inflight_requests") < 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = requests(&s, "google", 503);
    let req = Req::google(&[vec![0u8; 1500]]); // ~2 KiB: more than is left
    let got = call(&s, req.to_request()).await;
    expect_error(&s, &got, StatusCode::SERVICE_UNAVAILABLE, "busy", before);
    assert!(String::from_utf8_lossy(&got.body).contains("proxy.max_inflight_body_bytes"));
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_504_or_502_with_their_kind_counted() {
    let req = || {
        Req::google(&[compressible()])
            .header(proxy::BYPASS_HEADER, "1")
            .to_request()
    };
    let kind = |s: &ProxyState, kind: &str| {
        sample(
            s,
            &format!("adacompress_upstream_errors_total{{kind=\"{kind}\"}}"),
        )
    };

    // Too slow: an upstream that never answers.
    let hung = fake_upstream(axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    }))
    .await;
    let s = state(&hung, |c| c.proxy.upstream_timeout_secs = 0.2);
    let got = call(&s, req()).await;
    expect_error(
        &s,
        &got,
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        0.0,
    );
    assert_eq!(kind(&s, "timeout"), 1.0);

    // Unreachable: a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = state(&format!("http://127.0.0.1:{port}"), |_| {});
    let got = call(&s, req()).await;
    expect_error(
        &s,
        &got,
        StatusCode::BAD_GATEWAY,
        "upstream_unreachable",
        0.0,
    );
    assert_eq!(kind(&s, "connect"), 1.0);

    // Failed: connected, then an answer that is not HTTP.
    let garbled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = garbled.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = garbled.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        }
    });
    let s = state(&format!("http://{addr}"), |_| {});
    let got = call(&s, req()).await;
    expect_error(&s, &got, StatusCode::BAD_GATEWAY, "upstream_failed", 0.0);
    assert_eq!(kind(&s, "other"), 1.0);

    // An answer over limits.max_answer_bytes.
    let big = fake_upstream(axum::Router::new().fallback(|| async { vec![b' '; 64 * 1024] })).await;
    let s = state(&big, |c| c.limits.max_answer_bytes = 1024);
    let got = call(&s, req()).await;
    expect_error(&s, &got, StatusCode::BAD_GATEWAY, "answer_too_large", 0.0);
    assert!(String::from_utf8_lossy(&got.body).contains("limits.max_answer_bytes"));
    assert_eq!(kind(&s, "answer_too_large"), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Passthrough: every arm a request reaches.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_passthrough_reason_is_named_and_counted_once() {
    let (backend, _b, _stop) = spawn_backend().await;
    // Unknown paths reach an upstream only through `[upstreams].default`.
    let s = state(&backend, |c| {
        c.upstreams.insert("default".into(), backend.clone());
    });
    let image = compressible();

    // Whole requests, before any image is looked at.
    let unknown = Req {
        path: "/nothing/here".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
    };
    expect_passthrough(
        &s,
        &backend,
        unknown,
        "original:unknown_path",
        "unknown_path",
    )
    .await;
    // A known API's route the proxy does not compress: TorchServe's `/ping`.
    let ping = Req {
        path: "/ping".into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    expect_passthrough(
        &s,
        &backend,
        ping,
        "original:other_operation",
        "other_operation",
    )
    .await;
    let bypass = Req::google(std::slice::from_ref(&image)).header(proxy::BYPASS_HEADER, "1");
    expect_passthrough(&s, &backend, bypass, "original:bypass", "bypass").await;
    let signed = Req::of(Protocol::Rekognition, &image).header(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/rekognition/aws4_request, SignedHeaders=host, Signature=00",
    );
    expect_passthrough(
        &s,
        &backend,
        signed,
        "original:no_credentials",
        "no_credentials",
    )
    .await;
    let garbage = Req {
        body: b"this is not JSON".to_vec(),
        ..Req::google(&[])
    }
    .forced(50);
    expect_passthrough(&s, &backend, garbage, "original:unparsable", "unparsable").await;
    // 5,000 zero-length KServe elements: refused by the parser before a slot is built.
    let (headers, body) = kserve_empty_elements(5_000);
    let elements = Req {
        path: "/v2/models/classifier/infer".into(),
        headers,
        body,
    };
    expect_passthrough(
        &s,
        &backend,
        elements,
        "original:too_complex",
        "too_complex",
    )
    .await;
    let remote = Req::google_json(serde_json::json!([{
        "image": {"source": {"imageUri": "https://example.com/a.jpg"}},
        "features": [{"type": "LABEL_DETECTION", "maxResults": 5}],
    }]))
    .forced(50);
    expect_passthrough(
        &s,
        &backend,
        remote,
        "original:remote_image",
        "remote_image",
    )
    .await;
    let empty = Req::google(&[]).forced(50);
    expect_passthrough(&s, &backend, empty, "original:no_image", "no_image").await;
    let no_agent = Req::google(std::slice::from_ref(&image));
    expect_passthrough(&s, &backend, no_agent, "original:no_agent", "no_agent").await;
    let many = Req::google(&vec![image.clone(); 17]).forced(50);
    expect_passthrough(
        &s,
        &backend,
        many,
        "original:too_many_images",
        "too_many_images",
    )
    .await;

    // Per image, from the limits and the codec.
    let header_bomb = hostile::jpeg_with_size(&hostile::small_jpeg(), 65_500, 65_500);
    let req = Req::google(&[header_bomb]).forced(50);
    expect_passthrough(&s, &backend, req, "original:too_large", "too_large").await;
    let strip = hostile::zero_png(1, 100_000);
    let req = Req::google(&[strip]).forced(50);
    expect_passthrough(&s, &backend, req, "original:too_thin", "too_thin").await;
    let scans = hostile::scan_bomb(64, 200);
    let req = Req::google(&[scans]).forced(50);
    expect_passthrough(
        &s,
        &backend,
        req,
        "original:too_many_scans",
        "too_many_scans",
    )
    .await;
    let req = Req::google(&[b"definitely not an image".to_vec()]).forced(50);
    expect_passthrough(&s, &backend, req, "original:decode_error", "decode_error").await;
    let req = Req::google(&[already_small()]).forced(95);
    expect_passthrough(
        &s,
        &backend,
        req,
        "forced:q95:original:not_smaller",
        "not_smaller",
    )
    .await;

    // The JPEG decode budget: a many-scan progressive JPEG, allowed its scans, 50 ms.
    let s = state(&backend, |c| {
        c.limits.max_scans = 1_000_000;
        c.limits.max_decode_ms = 50;
    });
    let bomb = hostile::scan_bomb(2048, 5000);
    let req = Req::google(&[bomb]).forced(50);
    expect_passthrough(
        &s,
        &backend,
        req,
        "original:decode_timeout",
        "decode_timeout",
    )
    .await;

    // Re-signing a changed Rekognition body fails: the original goes up as signed.
    let failing: Resigner =
        Arc::new(|_: &str, _: &mut HeaderMap, _: &[u8]| Err("no clock today".to_owned()));
    let s = state_with(&backend, |_| {}, Some(failing));
    let req = Req::of(Protocol::Rekognition, &image).forced(30);
    expect_passthrough(&s, &backend, req, "original", "error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_is_saturated_and_a_slow_worker_is_worker_wait() {
    let (backend, _b, _stop) = spawn_backend().await;
    // One worker, one place in the queue. The worker is held by a scan bomb cut off by the
    // decode budget (1.5 s); meanwhile one request waits in the queue (worker_wait 0.5 s)
    // and one finds the queue full.
    let s = state(&backend, |c| {
        c.proxy.cpu_workers = 1;
        c.proxy.cpu_queue = 1;
        c.limits.worker_wait_secs = 0.5;
        c.limits.max_scans = 1_000_000;
        c.limits.max_decode_ms = 1500;
    });
    // 20,000 scans: several seconds of decode on any machine, so the budget always cuts it
    // (5,000 took ~1.5 s here, and now and then finished inside the budget).
    let bomb = Req::google(&[hostile::scan_bomb(4096, 20_000)]).forced(50);
    let worker = {
        let (s, req) = (s.clone(), bomb.to_request());
        tokio::spawn(async move { call(&s, req).await })
    };
    while s.metrics.busy_workers.get() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = {
        let (s, req) = (s.clone(), Req::google(&[compressible()]).forced(50));
        let backend = backend.clone();
        tokio::spawn(async move {
            expect_passthrough(&s, &backend, req, "original:worker_wait", "worker_wait").await
        })
    };
    // The queued request is in flight (and, a moment later, holds the queue's place).
    while sample(&s, "adacompress_inflight_requests") < 2.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let full = Req::google(&[compressible()]).forced(50);
    expect_passthrough(&s, &backend, full, "original:saturated", "saturated").await;
    queued.await.expect("the queued request");
    let got = worker.await.expect("the worker's request");
    assert_eq!(got.action(), Some("original:decode_timeout"));
    assert_eq!(passthroughs(&s, "decode_timeout"), 1.0);
}

// Request ids (tower-http's layers in `proxy::app`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_the_clients_when_usable_else_new_and_match_the_error_body() {
    let s = state("", |_| {});
    // A path of no API: the neutral body, which carries the request id.
    let id_of = |got: &Answer| {
        let header = got.headers[proxy::REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(json["error"]["request_id"], header.as_str(), "{json}");
        header
    };
    let unknown = || Req {
        path: "/some/other/api".into(),
        headers: Vec::new(),
        body: b"hello".to_vec(),
    };
    let with_id = |id: &str| unknown().header(proxy::REQUEST_ID_HEADER, id).to_request();
    assert_eq!(
        id_of(&call(&s, with_id("trace-42.a_b")).await),
        "trace-42.a_b"
    );
    let kept = "k".repeat(proxy::MAX_REQUEST_ID_CHARS);
    assert_eq!(id_of(&call(&s, with_id(&kept)).await), kept);
    // Absent, too long, or with spaces: a fresh UUID, never the client's text.
    let long = "x".repeat(proxy::MAX_REQUEST_ID_CHARS + 1);
    let mut seen = std::collections::HashSet::new();
    for req in [unknown().to_request(), with_id(&long), with_id("two words")] {
        let id = id_of(&call(&s, req).await);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert!(seen.insert(id), "each request gets its own id");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 9: the proxy's own errors in each API's error shape.

/// A dead upstream (nothing listens) answered 502 for each API's own request: the body in
/// that API's error shape with the proxy's message (naming the upstream), the stable reason
/// in `X-AdaCompress-Error`, the request id in `X-Request-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_502_in_each_apis_error_shape() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("http://127.0.0.1:{port}");
    let s = state(&upstream, |_| {});
    for protocol in Protocol::ALL {
        let req = Req::of(protocol, &compressible())
            .header(proxy::BYPASS_HEADER, "1")
            .header(proxy::REQUEST_ID_HEADER, "rid-9");
        let got = call(&s, req.to_request()).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{protocol}");
        assert_eq!(got.reason(), "upstream_unreachable", "{protocol}");
        assert_eq!(got.headers[proxy::REQUEST_ID_HEADER], "rid-9", "{protocol}");
        assert_eq!(got.action(), None, "{protocol}");
        let json = got.json();
        let names_upstream = |m: &str| m.contains("unreachable") && m.contains(&upstream);
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        match protocol {
            Protocol::GoogleVision => {
                assert_eq!(got.google_status(), "UNAVAILABLE");
                assert!(names_upstream(&text(&json["error"]["message"])), "{json}");
            }
            Protocol::Rekognition => {
                assert_eq!(json["__type"], "ServiceUnavailableException", "{json}");
                assert_eq!(
                    got.headers["x-amzn-errortype"], "ServiceUnavailableException",
                    "{json}"
                );
                assert!(names_upstream(&text(&json["Message"])), "{json}");
                assert_eq!(got.headers["content-type"], "application/x-amz-json-1.1");
            }
            Protocol::Baidu => {
                assert_eq!(json["error_code"], 2, "{json}");
                let msg = text(&json["error_msg"]);
                assert!(
                    msg.starts_with("Service temporarily unavailable: ") && names_upstream(&msg),
                    "{json}"
                );
                assert!(json["log_id"].is_u64(), "{json}");
            }
            Protocol::FacePlusPlus => {
                let msg = text(&json["error_message"]);
                assert!(
                    msg.starts_with("INTERNAL_ERROR: ") && names_upstream(&msg),
                    "{json}"
                );
                assert_eq!(json["request_id"], "rid-9", "{json}");
                assert_eq!(json["time_used"], 0, "{json}");
            }
            Protocol::Azure => {
                assert_eq!(json["error"]["code"], "ServiceUnavailable", "{json}");
                assert!(names_upstream(&text(&json["error"]["message"])), "{json}");
            }
            Protocol::KServe => {
                assert_eq!(json.as_object().map(|o| o.len()), Some(1), "{json}");
                assert!(names_upstream(&text(&json["error"])), "{json}");
            }
            Protocol::TorchServe => {
                assert_eq!(json["code"], 502, "{json}");
                assert_eq!(json["type"], "ServiceUnavailableException", "{json}");
                assert!(names_upstream(&text(&json["message"])), "{json}");
            }
        }
        assert!(
            json.get("source").is_none(),
            "{protocol}: not neutral: {json}"
        );
        assert_eq!(requests(&s, protocol.name(), 502), 1.0, "{protocol}");
    }
    // No API: the neutral shape, the same header.
    let got = call(
        &s,
        Request::post("/some/other/api")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.neutral_reason(), "unrouted");
    assert_eq!(got.reason(), "unrouted");
}

/// Another status keeps its limit and value in the API's shape: a 413 for Baidu (its
/// `image size error` code) and TorchServe (its `RequestEntityTooLargeException`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_speak_the_apis_shape_and_name_the_limit() {
    let (backend, _b, _stop) = spawn_backend().await;
    let s = state(&backend, |c| c.proxy.max_body_bytes = 1024);
    let big = vec![0x55u8; 4096];

    let got = call(&s, Req::of(Protocol::Baidu, &big).to_request()).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(got.reason(), "body_too_large");
    let json = got.json();
    assert_eq!(json["error_code"], 216_202, "{json}");
    assert!(
        json["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("proxy.max_body_bytes = 1024")),
        "{json}"
    );

    let got = call(&s, Req::of(Protocol::TorchServe, &big).to_request()).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(got.reason(), "body_too_large");
    let json = got.json();
    assert_eq!(json["code"], 413, "{json}");
    assert_eq!(json["type"], "RequestEntityTooLargeException", "{json}");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("proxy.max_body_bytes = 1024")),
        "{json}"
    );
}
