//! The proxy end to end on loopback: client → proxy → recording hop → real local backend.
//!
//! The recording hop is a real HTTP server of ours that forwards to the backend and keeps
//! what it saw, so a test can check the bytes the upstream received and the exact answer it
//! gave. Only the "too slow" upstream is a server made to misbehave (a real backend cannot
//! be made slow on demand).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adacompress::codec::{self, EncoderMode, Limits};
use adacompress::config::Config;
use adacompress::protocol::{Protocol, ProxyRequest};
use adacompress::proxy::server::{self, Server};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

use common::*;

/// What the recording hop saw of one exchange.
#[derive(Debug, Clone)]
struct Seen {
    method: axum::http::Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    answer: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A recording hop in front of `target`; returns its base URL and the log.
async fn recorder(target: String) -> (String, Log) {
    let log: Log = Arc::default();
    let http = reqwest::Client::new();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (log, http, target) = (l.clone(), http.clone(), target.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut headers = parts.headers.clone();
            headers.remove("host");
            headers.remove("content-length");
            let resp = http
                .request(parts.method.clone(), format!("{target}{path}"))
                .headers(headers)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let ctype = resp.headers().get("content-type").cloned();
            let answer = resp.bytes().await.unwrap();
            let path = path.to_owned();
            log.lock().unwrap().push(Seen {
                method: parts.method,
                path,
                headers: parts.headers,
                body,
                answer: answer.clone(),
            });
            let mut out = axum::response::Response::builder().status(status);
            if let Some(c) = ctype {
                out = out.header("content-type", c);
            }
            out.body(axum::body::Body::from(answer)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

/// A proxy with every protocol routed to `upstream`, state in a fresh folder.
async fn proxy(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Server {
    proxy_to(upstream, "proxy-state", tweak).await
}

/// Backend, recording hop and proxy, wired; keep the sender alive for the backend to live.
async fn stack(tweak: impl FnOnce(&mut Config)) -> (Server, Log, tokio::sync::oneshot::Sender<()>) {
    let (backend, _state, stop) = spawn_backend().await;
    let (hop, log) = recorder(backend).await;
    (proxy(&hop, tweak).await, log, stop)
}

/// Sends `protocol`'s one-image request through the proxy.
async fn send(
    proxy: &Server,
    protocol: Protocol,
    image: &[u8],
    extra: &[(&str, &str)],
) -> (reqwest::Response, Vec<u8>) {
    let req = protocol.client_request(image, 5);
    let base = format!("http://{}", proxy.proxy_addr);
    let mut b = post(&reqwest::Client::new(), &base, &req);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    (b.send().await.expect("proxy answers"), req.body)
}

fn image_of(protocol: Protocol, seen: &Seen) -> Vec<u8> {
    let view = ProxyRequest {
        path_and_query: "/",
        headers: &seen.headers,
        body: &seen.body,
    };
    let slots = protocol
        .extract_images(&view)
        .expect("upstream got a valid request");
    slots[0].bytes().expect("inline image").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_uploads_a_smaller_jpeg_and_returns_the_exact_answer() {
    // One image per protocol: reading the upstream's last request needs no audits beside it.
    let (p, log, _stop) = stack(no_audits).await;
    // A phone-like 2048 px upload at q95: the live pair (q95 at ≤ 960 px) shrinks it.
    let original = phone_upload(&photos("objects").join("2.jpg"));
    let served = served_pair(&p).await;
    for protocol in Protocol::ALL {
        let (resp, _) = send(&p, protocol, &original, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{protocol}");
        let action = resp.headers()["x-adacompress-action"]
            .to_str()
            .unwrap()
            .to_owned();
        let saved: usize = resp.headers()["x-adacompress-bytes-saved"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = resp.bytes().await.unwrap();
        let seen = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            body, seen.answer,
            "{protocol}: the client gets the upstream's bytes"
        );
        let uploaded = image_of(protocol, &seen);
        assert_eq!(
            action, served,
            "{protocol}: every image goes up at the live pair"
        );
        assert!(
            uploaded.len() < original.len(),
            "{protocol}: {} !< {}",
            uploaded.len(),
            original.len()
        );
        assert_eq!(saved, original.len() - uploaded.len(), "{protocol}");
        let decoded = codec::decode(&uploaded, &Limits::default()).expect("a valid JPEG");
        // The 2048 × 2048 upload at the served pair's side.
        let side = adacompress::action::Action::parse(&served)
            .unwrap()
            .max_side
            .expect("the served pair resizes");
        assert_eq!(decoded.image.dimensions(), (side, side));
        let answer = protocol.parse_answer(200, &body).unwrap();
        assert!(answer.top1().is_some(), "{protocol}: {answer:?}");
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_forwards_the_original_byte_for_byte() {
    let (p, log, _stop) = stack(|_| {}).await;
    let photo = photo("objects", "2.jpg");
    let decoded = codec::decode(&photo, &Limits::default()).unwrap();
    // Already at q5: re-encoding at a forced q95 would grow it.
    let tiny = codec::encode_jpeg(&decoded.image, 5, EncoderMode::FastOptimized).unwrap();
    // A JPEG start marker and nothing a decoder can use. (A merely truncated JPEG decodes:
    // libjpeg fills the missing rows, like every browser.)
    let mut broken = vec![0xFF, 0xD8, 0xFF, 0xDB];
    broken.extend(std::iter::repeat_n(0u8, 300));
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "garbage",
            b"definitely not an image".to_vec(),
            vec![],
            "original:decode_error",
        ),
        ("broken jpeg", broken, vec![], "original:decode_error"),
        (
            "would grow",
            tiny,
            vec![("x-adacompress-quality", "95")],
            "forced:q95:original:not_smaller",
        ),
        (
            "bypass",
            photo.clone(),
            vec![("x-adacompress-bypass", "1")],
            "original:bypass",
        ),
    ];
    for protocol in Protocol::ALL {
        for (name, image, headers, expected) in &cases {
            let before = log.lock().unwrap().len();
            let (resp, sent) = send(&p, protocol, image, headers).await;
            let action = resp.headers()["x-adacompress-action"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(&action, expected, "{protocol} {name}");
            assert_eq!(resp.headers()["x-adacompress-bytes-saved"], "0");
            let _ = resp.bytes().await;
            let log = log.lock().unwrap();
            assert_eq!(log.len(), before + 1, "{protocol} {name}: forwarded once");
            assert_eq!(log[before].body, sent, "{protocol} {name}: byte for byte");
        }
    }
    let metrics = metrics_of(&p).await;
    let n = Protocol::ALL.len();
    for (reason, count) in [("decode_error", 2 * n), ("not_smaller", n), ("bypass", n)] {
        let line = format!("adacompress_passthrough_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_quality_is_applied_and_clamped() {
    let (p, log, _stop) = stack(|c| c.agent.min_quality = 30).await;
    let original = photo("street", &first_photo("street"));
    let (resp, _) = send(
        &p,
        Protocol::GoogleVision,
        &original,
        &[("x-adacompress-quality", "10")],
    )
    .await;
    assert_eq!(resp.headers()["x-adacompress-action"], "forced:q30");
    let _ = resp.bytes().await;
    let seen = log.lock().unwrap().last().cloned().unwrap();
    let uploaded = image_of(Protocol::GoogleVision, &seen);
    let decoded = codec::decode(&original, &Limits::default()).unwrap();
    let q30 = codec::encode_jpeg(&decoded.image, 30, EncoderMode::FastOptimized).unwrap();
    assert_eq!(uploaded, q30, "exactly the q30 re-encode went up");
    p.shutdown().await;
}

/// `agent.fixed` puts the agent aside: every image goes up as that one action, made the
/// way training and eval make it (a DCT-scaled decode, then the resize), and the answer
/// header says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_fixed_pair_is_applied_to_every_image() {
    let (p, log, _stop) = stack(|c| c.agent.fixed = Some("q70@512".into())).await;
    let original = photo("street", &first_photo("street"));
    let (resp, _) = send(&p, Protocol::GoogleVision, &original, &[]).await;
    assert_eq!(resp.headers()["x-adacompress-action"], "fixed:q70@512");
    let _ = resp.bytes().await;
    let seen = log.lock().unwrap().last().cloned().unwrap();
    let uploaded = image_of(Protocol::GoogleVision, &seen);
    let mut source = adacompress::action::Source::new(&original, &Limits::default()).unwrap();
    let expected = source
        .apply(
            &adacompress::action::Action::parse("q70@512").unwrap(),
            EncoderMode::FastOptimized,
        )
        .unwrap();
    assert!(!expected.original);
    assert_eq!(
        uploaded, expected.bytes,
        "exactly the fixed pair's upload went up"
    );
    let d = codec::decode(&uploaded, &Limits::default()).unwrap();
    assert_eq!(d.image.width().max(d.image.height()), 512);
    p.shutdown().await;
    // A misspelt pair is refused at start-up, naming the key.
    let err = Config::load(
        None,
        [("ADACOMPRESS_AGENT__FIXED".to_string(), "q70@".to_string())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("agent.fixed") && err.contains("q70@"), "{err}");
}

/// An image over the API's documented size limit (Face++: 2 MB) is not sent to be
/// refused: the proxy makes it fit by the smallest step down that does, says so in the
/// action header and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_apis_limit_is_made_to_fit() {
    // "keep" as the fixed action: only the limit can change the bytes.
    let (p, log, _stop) = stack(|c| c.agent.fixed = Some("keep".into())).await;
    // 2400×1800 of fine noise at quality 98: far over 2 MB.
    let mut state = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(2400, 1800, |x, y| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (state >> 24) as u8;
        image::Rgb([n, (x % 256) as u8 ^ n, (y % 256) as u8])
    });
    let original = codec::encode_jpeg(&img, 98, EncoderMode::Fastest).unwrap();
    assert!(original.len() > 2 * 1024 * 1024, "{}", original.len());
    let (resp, _) = send(&p, Protocol::FacePlusPlus, &original, &[]).await;
    let action = resp.headers()["x-adacompress-action"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(action.starts_with("fixed:keep+fit:q"), "{action}");
    let _ = resp.bytes().await;
    let seen = log.lock().unwrap().last().cloned().unwrap();
    let uploaded = image_of(Protocol::FacePlusPlus, &seen);
    assert!(uploaded.len() <= 2 * 1024 * 1024, "{}", uploaded.len());
    assert!(codec::decode(&uploaded, &Limits::default()).is_ok());
    assert!(
        metrics_of(&p)
            .await
            .contains("adacompress_fitted_to_limit_total 1")
    );
    p.shutdown().await;
}

fn first_photo(set: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(photos(set))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_unreachable_and_slow_upstreams_get_clear_errors() {
    // 413 names the limit and the size.
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| c.proxy.max_body_bytes = 10_000).await;
    let (resp, sent) = send(&p, Protocol::GoogleVision, &photo("objects", "2.jpg"), &[]).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = resp.text().await.unwrap();
    assert!(text.contains("proxy.max_body_bytes = 10000"), "{text}");
    assert!(text.contains(&sent.len().to_string()), "{text}");
    p.shutdown().await;

    // 502: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = proxy(&format!("http://{closed}"), |_| {}).await;
    let (resp, _) = send(&p, Protocol::GoogleVision, &photo("objects", "2.jpg"), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("unreachable") && text.contains(&closed.to_string()),
        "{text}"
    );
    p.shutdown().await;

    // 504: an upstream slower than the timeout.
    let slow = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let p = proxy(&format!("http://{addr}"), |c| {
        c.proxy.upstream_timeout_secs = 0.5
    })
    .await;
    let started = std::time::Instant::now();
    let (resp, _) = send(&p, Protocol::GoogleVision, &photo("objects", "2.jpg"), &[]).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(4));
    let text = resp.text().await.unwrap();
    assert!(text.contains("proxy.upstream_timeout_secs = 0.5"), "{text}");
    let metrics = metrics_of(&p).await;
    assert!(
        metrics.contains("adacompress_upstream_errors_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("adacompress_requests_total{protocol=\"google\",status=\"504\"} 1"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_images_pass_through_untouched() {
    let (p, log, _stop) = stack(|_| {}).await;
    let body = br#"{"requests":[{"image":{"source":{"imageUri":"https://example.com/a.jpg"}},"features":[{"type":"LABEL_DETECTION"}]}]}"#;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/images:annotate", p.proxy_addr))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-adacompress-action"],
        "original:remote_image"
    );
    let status = resp.status();
    let _ = resp.bytes().await;
    assert_eq!(log.lock().unwrap().last().unwrap().body.as_ref(), body);
    // The backend refuses to fetch it, in Google's shape, and the client sees that.
    assert!(status.is_success() || status.is_client_error());
    p.shutdown().await;
}

/// Issue 9, routing that never guesses, through `serve` on loopback: a path no configured
/// API matches gets a 404 in the proxy's JSON shape and reaches no upstream; CONNECT gets a
/// 405 and is never tunnelled; with `[upstreams].default` unknown paths go there untouched;
/// KServe health goes to the KServe upstream, not the Google one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_connect_are_refused_unless_a_default_upstream_takes_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, _state, _stop) = spawn_backend().await;
    let (google, google_log) = recorder(backend.clone()).await;
    let (kserve, kserve_log) = recorder(backend.clone()).await;
    let only = |cfg: &mut Config, google: &str, kserve: &str| {
        cfg.upstreams.clear();
        cfg.upstreams.insert("google".into(), google.to_owned());
        cfg.upstreams.insert("kserve".into(), kserve.to_owned());
    };
    let p = proxy_to(&google, "proxy-unrouted", |cfg| only(cfg, &google, &kserve)).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "http://{}/some/other/api?key=AIza-secret",
            p.proxy_addr
        ))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get("x-adacompress-action").is_none());
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["reason"], "unrouted", "{json}");
    assert_eq!(json["error"]["code"], 404, "{json}");
    assert_eq!(json["error"]["source"], "adacompress-proxy", "{json}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("POST /some/other/api"), "{message}");
    assert!(!message.contains("secret"), "{message}");

    // CONNECT, as a client asking for a tunnel sends it (authority form).
    let mut conn = tokio::net::TcpStream::connect(p.proxy_addr).await.unwrap();
    conn.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(head.contains("method_not_allowed"), "{head}");
    drop(conn);

    // KServe health: the KServe upstream's, untouched.
    let resp = http
        .get(format!("http://{}/v2/health/ready", p.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-adacompress-action"],
        "original:other_operation"
    );
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"ready": true})
    );
    assert_eq!(kserve_log.lock().unwrap().len(), 1);
    assert!(
        google_log.lock().unwrap().is_empty(),
        "nothing reached the Google upstream"
    );
    let metrics = metrics_of(&p).await;
    for line in [
        "adacompress_unrouted_requests_total{reason=\"unknown_path\"} 1",
        "adacompress_unrouted_requests_total{reason=\"method_not_allowed\"} 1",
        "adacompress_requests_total{protocol=\"other\",status=\"404\"} 1",
        "adacompress_requests_total{protocol=\"other\",status=\"405\"} 1",
        "adacompress_passthrough_total{reason=\"other_operation\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    p.shutdown().await;

    // With a default upstream, unknown paths go there untouched; CONNECT is still refused.
    let (other, other_log) = recorder(backend).await;
    let p = proxy_to(&google, "proxy-default", |cfg| {
        only(cfg, &google, &kserve);
        cfg.upstreams.insert("default".into(), other.clone());
    })
    .await;
    let resp = http
        .post(format!("http://{}/some/other/api?x=1", p.proxy_addr))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-adacompress-action"],
        "original:unknown_path"
    );
    let _ = resp.bytes().await;
    let seen = other_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.path, "/some/other/api?x=1");
    assert_eq!(seen.body.as_ref(), b"hello");
    let resp = http
        .request(reqwest::Method::TRACE, format!("http://{}/", p.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(other_log.lock().unwrap().len(), 1, "TRACE never went up");
    assert!(google_log.lock().unwrap().is_empty());
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_draining() {
    let slow = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        "slow but fine"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let slow = format!("http://{addr}");
    // The in-flight request below takes a path no API owns: the default upstream gets it.
    let p = proxy(&slow, |c| {
        c.proxy.drain_secs = 5.0;
        c.upstreams.insert("default".into(), slow.clone());
    })
    .await;
    let admin = format!("http://{}", p.admin_addr);
    assert_eq!(
        reqwest::get(format!("{admin}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{admin}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let agent: serde_json::Value = reqwest::get(format!("{admin}/agent"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["state"], "inference");
    assert!(agent["version"].as_u64().is_some());
    assert_eq!(
        agent["pair"]["served"], "q95@960",
        "the shipped prior: {agent}"
    );

    // A request in flight when shutdown starts still gets its answer.
    let url = format!("http://{}/other", p.proxy_addr);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body("x")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = p.state.clone();
    let drained = tokio::spawn(p.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!state.is_ready(), "readyz fails while draining");
    assert_eq!(in_flight.await.unwrap(), "slow but fine");
    assert!(drained.await.unwrap(), "drained within proxy.drain_secs");
}

/// `serve` runs only the calibrated live-pair agent (issue 15): the paper's Q-head agent as
/// `agent.checkpoint` is refused at start-up, naming the key, the file and the way out;
/// with `agent.fixed` set (the operator's override) the same file starts, no agent is
/// loaded and every image goes up at the fixed pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_q_head_checkpoint_unless_agent_fixed_is_set() {
    let qhead = root().join("models/agent.json");
    let err = proxy_with_agent("http://127.0.0.1:9", "proxy-qhead", qhead.clone(), |_| {})
        .await
        .err()
        .expect("serve refuses a Q-head checkpoint")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "agent.checkpoint = {}: not a calibrated checkpoint",
            qhead.display()
        )),
        "{err}"
    );
    for says in ["models/agent-calibrated.json", "agent.fixed"] {
        assert!(err.contains(says), "{says} in {err}");
    }

    let (backend, _state, _stop) = spawn_backend().await;
    let (hop, _log) = recorder(backend).await;
    let p = proxy_with_agent(&hop, "proxy-qhead-fixed", qhead, |c| {
        c.agent.fixed = Some("q70@512".into())
    })
    .await
    .expect("agent.fixed starts without an agent");
    let original = photo("street", &first_photo("street"));
    let (resp, _) = send(&p, Protocol::GoogleVision, &original, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-adacompress-action"], "fixed:q70@512");
    let agent = reqwest::get(format!("http://{}/agent", p.admin_addr))
        .await
        .unwrap();
    assert_eq!(agent.status(), StatusCode::NOT_FOUND);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekognition_is_resigned_with_the_proxys_credentials_and_verifies_upstream() {
    use adacompress::sigv4::{AwsCredentials, Signer, Verifier};
    let proxy_creds = AwsCredentials::new("AKIDPROXY", "proxy-secret", None);
    let mut bcfg = adacompress::backend::BackendConfig::new(lite0());
    bcfg.aws_verify = Some(Verifier::new(proxy_creds.clone(), "us-east-1"));
    let (backend, state, _stop) = spawn_backend_with(bcfg).await;
    let signer = Signer::new(proxy_creds, "us-east-1");
    let resign: adacompress::proxy::Resigner =
        Arc::new(move |url: &str, headers: &mut HeaderMap, body: &[u8]| {
            signer
                .resign("POST", url, headers, body, std::time::SystemTime::now())
                .map_err(|e| e.to_string())
        });
    let mut cfg = Config::default();
    cfg.proxy.listen = "127.0.0.1:0".parse().unwrap();
    cfg.proxy.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.agent.checkpoint = calibrated_agent();
    cfg.state.dir = temp_dir("proxy-sigv4");
    cfg.upstreams.insert("rekognition".into(), backend.clone());
    let p = server::start(cfg, Some(resign)).await.unwrap();
    // The client signs with its own key, for the proxy's host: the upstream would reject that.
    let client = Signer::new(
        AwsCredentials::new("AKIDCLIENT", "client-secret", None),
        "us-east-1",
    );
    let image = phone_upload(&photos("objects").join("2.jpg"));
    let req = Protocol::Rekognition.client_request(&image, 5);
    let url = format!("http://{}{}", p.proxy_addr, req.path_and_query);
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        headers.insert(
            axum::http::HeaderName::try_from(k.as_str()).unwrap(),
            v.parse().unwrap(),
        );
    }
    client
        .resign(
            "POST",
            &url,
            &mut headers,
            &req.body,
            std::time::SystemTime::now(),
        )
        .unwrap();
    let resp = reqwest::Client::new()
        .post(&url)
        .headers(headers)
        .body(req.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-adacompress-action"],
        served_pair(&p).await.as_str(),
        "compressed at the live pair, then re-signed"
    );
    let answer = Protocol::Rekognition
        .parse_answer(200, &resp.bytes().await.unwrap())
        .unwrap();
    assert!(answer.top1().is_some());
    assert!(
        state.signatures_verified() >= 1,
        "the backend verified the proxy's signature"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_cpu_pool_forwards_originals_instead_of_queueing() {
    let (p, log, _stop) = stack(|c| {
        c.proxy.cpu_workers = 1;
        c.proxy.cpu_queue = 0;
        // Eight images and an exact count of upstream requests: no audits beside them.
        no_audits(c);
    })
    .await;
    let image = photo("street", &first_photo("street"));
    let sends = (0..8).map(|_| {
        let image = image.clone();
        let addr = p.proxy_addr;
        tokio::spawn(async move {
            let req = Protocol::GoogleVision.client_request(&image, 5);
            let resp = reqwest::Client::new()
                .post(format!("http://{addr}{}", req.path_and_query))
                .header("content-type", "application/json")
                .body(req.body)
                .send()
                .await
                .unwrap();
            let action = resp.headers()["x-adacompress-action"]
                .to_str()
                .unwrap()
                .to_owned();
            (resp.status(), action)
        })
    });
    let mut saturated = 0;
    for s in sends.collect::<Vec<_>>() {
        let (status, action) = s.await.unwrap();
        assert_eq!(status, StatusCode::OK, "every request is answered");
        saturated += usize::from(action == "original:saturated");
    }
    assert!(
        saturated >= 1,
        "with one worker and no queue, some of 8 went as sent"
    );
    assert_eq!(log.lock().unwrap().len(), 8, "none was dropped");
    let metrics = metrics_of(&p).await;
    assert!(
        metrics.contains(&format!(
            "adacompress_passthrough_total{{reason=\"saturated\"}} {saturated}"
        )),
        "{metrics}"
    );
    p.shutdown().await;
}

/// A live-pair audit still uploading when shutdown starts is waited for only until
/// `proxy.drain_secs`, then aborted: shutdown returns in time and leaves no audit behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_an_audit_in_flight_returns_within_drain_secs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    // Answers the client's two requests at once and hangs on every later one (the audit's).
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let upstream = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n > 1 {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    // The first image banks the credit (an audit is drawn only against credit banked
    // before the image, so that which image is audited never depends on the image), and
    // its served bytes pay for more than one audit: the second image is audited for sure.
    let p = proxy(&format!("http://{addr}"), |c| {
        c.proxy.drain_secs = 1.0;
        c.proxy.upstream_timeout_secs = 300.0;
        c.pair.learn_share = 10.0;
        c.pair.max_audit_rate = 1.0;
    })
    .await;
    // 1280 × 960 at q95: the live pair (≤ 960 px) re-encodes it to about half its bytes.
    let mut seed = 0x9e37_79b9_u32;
    let img = image::RgbImage::from_fn(1280, 960, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (seed >> 28) as u8;
        image::Rgb([(x / 5) as u8 ^ n, (y / 4) as u8, ((x + y) / 9) as u8])
    });
    let original = codec::encode_jpeg(&img, 95, EncoderMode::Fastest).unwrap();
    let (first, _) = send(&p, Protocol::GoogleVision, &original, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let _ = first.bytes().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "nothing banked before the first image: no audit"
    );
    let (resp, _) = send(&p, Protocol::GoogleVision, &original, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let action = resp.headers()["x-adacompress-action"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(action, served_pair(&p).await, "served at the live pair");
    let _ = resp.bytes().await;
    // The audit's reference upload (the original) reaches the upstream and hangs there.
    let wait = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) < 3 && Instant::now() < wait {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3, "an audit went up");
    let state = p.state.clone();
    assert_eq!(state.estimates_running(), 1);
    let started = Instant::now();
    let drained = p.shutdown().await;
    let took = started.elapsed();
    assert!(!drained, "the audit could not have finished");
    // drain_secs, plus the bounded reap of the aborted task and the store's flush.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(state.estimates_running(), 0, "the audit was aborted");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "no candidate went up after it"
    );
}

/// Issue 9: KServe/Triton and TorchServe health and metadata reach their own API's upstream
/// (not the alphabetically first one) untouched, and the local backend answers them in the
/// protocols' shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata_go_to_their_apis_upstream_untouched() {
    let (backend, _state, _stop) = spawn_backend().await;
    let (first, first_log) = recorder(backend.clone()).await;
    let (serving, serving_log) = recorder(backend).await;
    let p = proxy_to(&first, "proxy-health", |cfg| {
        cfg.upstreams.insert("kserve".into(), serving.clone());
        cfg.upstreams.insert("torchserve".into(), serving.clone());
    })
    .await;
    // (path, expected answer)
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("/v2/health/live", serde_json::json!({"live": true})),
        ("/v2/health/ready", serde_json::json!({"ready": true})),
        (
            "/v2/models/classifier/ready",
            serde_json::json!({"name": "classifier", "ready": true}),
        ),
        (
            "/v2/models/resnet/versions/3/ready",
            serde_json::json!({"name": "resnet", "ready": true}),
        ),
        ("/ping", serde_json::json!({"status": "Healthy"})),
    ];
    let http = reqwest::Client::new();
    for (path, expected) in &cases {
        let resp = http
            .get(format!("http://{}{path}", p.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            resp.headers()["x-adacompress-action"],
            "original:other_operation",
            "{path}"
        );
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(&answer, expected, "{path}");
        let seen = serving_log.lock().unwrap().last().cloned().unwrap();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", *path));
        assert!(seen.body.is_empty(), "{path}");
    }
    // Metadata, server and model, as tritonclient reads it.
    let server: serde_json::Value = http
        .get(format!("http://{}/v2", p.proxy_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["name"], "adacompress-backend");
    assert!(server["extensions"].as_array().is_some());
    let model: serde_json::Value = http
        .get(format!("http://{}/v2/models/classifier", p.proxy_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["name"], "classifier");
    assert_eq!(model["inputs"][0]["name"], "image");
    assert_eq!(model["inputs"][0]["datatype"], "BYTES");
    assert_eq!(model["outputs"][0]["name"], "labels");
    assert_eq!(serving_log.lock().unwrap().len(), cases.len() + 2);
    assert!(
        first_log.lock().unwrap().is_empty(),
        "nothing went to the first upstream"
    );
    p.shutdown().await;
}

/// Issue 9: Google Vision as the official clients' REST transports send it
/// (`?$alt=json;enum-encoding=int`, `"type": 4`) is compressed by the proxy and answered
/// with labels by the local backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_rest_with_numeric_enums_is_compressed_and_labelled() {
    use base64::Engine;
    let (p, log, _stop) = stack(no_audits).await;
    let original = phone_upload(&photos("objects").join("2.jpg"));
    let served = served_pair(&p).await;
    let body = serde_json::json!({"requests": [{
        "image": {"content": base64::engine::general_purpose::STANDARD.encode(&original)},
        "features": [{"type": 4, "maxResults": 3}],
    }]});
    for query in [
        "?$alt=json;enum-encoding=int",
        "?%24alt=json%3Benum-encoding%3Dint",
    ] {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/images:annotate{query}", p.proxy_addr))
            .header("content-type", "application/json")
            .header("x-goog-api-client", "gl-python/3.12 rest/2.0")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{query}");
        let action = resp.headers()["x-adacompress-action"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(action, served, "{query}");
        let answer: serde_json::Value = resp.json().await.unwrap();
        let labels = answer["responses"][0]["labelAnnotations"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: no labels in {answer}"));
        assert_eq!(labels.len(), 3, "{query}");
        let seen = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.path, format!("/v1/images:annotate{query}"));
        let uploaded = image_of(Protocol::GoogleVision, &seen);
        assert!(uploaded.len() < original.len(), "{query}");
    }
    p.shutdown().await;
}

/// HTTP/2 cleartext by prior knowledge (how gRPC's insecure channels connect) and HTTP/1.1
/// on the same port: the same request gets the same compression and the upstream's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_and_http1_share_the_proxy_port() {
    use http_body_util::BodyExt;
    let (p, log, _stop) = stack(no_audits).await;
    let original = phone_upload(&photos("objects").join("2.jpg"));
    let req = Protocol::GoogleVision.client_request(&original, 5);

    let stream = tokio::net::TcpStream::connect(p.proxy_addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake with the proxy");
    tokio::spawn(conn);
    let mut b = axum::http::Request::post(format!("http://{}{}", p.proxy_addr, req.path_and_query));
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let resp = h2
        .send_request(
            b.body(http_body_util::Full::new(axum::body::Bytes::from(
                req.body.clone(),
            )))
            .unwrap(),
        )
        .await
        .expect("an answer over HTTP/2");
    assert_eq!(resp.version(), axum::http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let action = resp.headers()["x-adacompress-action"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(body, seen.answer, "the client gets the upstream's bytes");
    let over_h2 = image_of(Protocol::GoogleVision, &seen);
    assert!(over_h2.len() < original.len(), "compressed over HTTP/2");
    assert_eq!(action, served_pair(&p).await, "at the live pair");

    // The same request over HTTP/1.1 on the same port: the same action and upload.
    let (resp, _) = send(&p, Protocol::GoogleVision, &original, &[]).await;
    assert_eq!(resp.version(), axum::http::Version::HTTP_11);
    assert_eq!(resp.headers()["x-adacompress-action"], action.as_str());
    let _ = resp.bytes().await.unwrap();
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(image_of(Protocol::GoogleVision, &seen), over_h2);
    p.shutdown().await;
}
