//! Hostile clients and faulty upstreams against a real `serve` on loopback (issue 8):
//! slow and numerous connections, hung-up clients, oversized answers, images built to
//! exhaust memory or CPU, leaks of secrets, and the admin token. Every case asserts a
//! clear, counted answer and that ordinary traffic is still served.
//!
//! The upstream is the real local backend, except where a fault is needed that a real
//! server cannot be made to show (an oversized answer, an echo of received headers).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use adacompress::config::Config;
use adacompress::protocol::Protocol;
use adacompress::proxy::server::Server;
use axum::http::StatusCode;
use base64::Engine;

use common::*;

/// A proxy with every protocol routed to `upstream`, state in a fresh folder.
async fn proxy(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Server {
    proxy_to(upstream, "hostile-state", tweak).await
}

fn first_street_photo() -> Vec<u8> {
    let mut names: Vec<String> = std::fs::read_dir(photos("street"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    photo("street", &names[0])
}

/// An ordinary one-image Google request through the proxy: (status, action header, time).
async fn ordinary(p: &Server, image: &[u8]) -> (StatusCode, String, Duration) {
    let req = Protocol::GoogleVision.client_request(image, 5);
    let t = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("http://{}{}", p.proxy_addr, req.path_and_query))
        .header("content-type", "application/json")
        .body(req.body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("proxy answers");
    let action = resp
        .headers()
        .get("x-adacompress-action")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = resp.status();
    let _ = resp.bytes().await;
    (status, action, t.elapsed())
}

/// A Google `images:annotate` body carrying `images`.
fn google_body(images: &[Vec<u8>]) -> String {
    let requests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "image": {"content": base64::engine::general_purpose::STANDARD.encode(i)},
                "features": [{"type": "LABEL_DETECTION", "maxResults": 5}],
            })
        })
        .collect();
    serde_json::json!({ "requests": requests }).to_string()
}

/// Reads from a raw connection until EOF or `limit`; returns what came and whether the
/// peer closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_within_the_configured_timeouts() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| {
        c.proxy.header_read_timeout_secs = 0.5;
        c.proxy.body_read_timeout_secs = 0.5;
    })
    .await;
    let addr = p.proxy_addr;
    let outcome = tokio::task::spawn_blocking(move || {
        // 1. A header dribbled one byte at a time, never finished.
        let mut dribble = TcpStream::connect(addr).unwrap();
        dribble.write_all(b"POS").unwrap();
        let t = Instant::now();
        let (_, closed) = read_until_closed(&mut dribble, Duration::from_secs(5));
        let header_cut = (closed, t.elapsed());
        // 2. A body promised and never sent.
        let mut stall = TcpStream::connect(addr).unwrap();
        stall
            .write_all(
                b"POST /v1/images:annotate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{\"requests\":",
            )
            .unwrap();
        let t = Instant::now();
        let (answer, closed) = read_until_closed(&mut stall, Duration::from_secs(5));
        let body_cut = (String::from_utf8_lossy(&answer).into_owned(), closed, t.elapsed());
        // 3. A keep-alive connection left idle after one request.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let t = Instant::now();
        let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5));
        let idle_cut = (closed, t.elapsed());
        (header_cut, body_cut, idle_cut)
    })
    .await
    .unwrap();
    let ((h_closed, h_t), (b_answer, b_closed, b_t), (i_closed, i_t)) = outcome;
    assert!(h_closed, "a header that never ends is cut");
    assert!(
        h_t < Duration::from_secs(2),
        "header cut after {h_t:?} (timeout 0.5 s)"
    );
    assert!(b_answer.starts_with("HTTP/1.1 408"), "{b_answer}");
    assert!(
        b_answer.contains("proxy.body_read_timeout_secs"),
        "{b_answer}"
    );
    assert!(
        b_closed && b_t < Duration::from_secs(2),
        "body cut after {b_t:?}"
    );
    assert!(
        i_closed && i_t < Duration::from_secs(2),
        "idle cut after {i_t:?}"
    );
    let metrics = metrics_of(&p).await;
    assert!(
        metric_value(&metrics, "adacompress_slow_clients_total{kind=\"header\"}") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "adacompress_slow_clients_total{kind=\"body\"}"),
        1.0
    );
    // Ordinary traffic still flows.
    let (status, _, _) = ordinary(&p, &first_street_photo()).await;
    assert_eq!(status, StatusCode::OK);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_refused_clearly_and_the_admin_port_still_answers() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| c.proxy.max_connections = 8).await;
    let addr = p.proxy_addr;
    // Eight silent connections hold every slot.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::task::spawn_blocking(move || {
        let mut extra = TcpStream::connect(addr).unwrap();
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(3));
        (String::from_utf8_lossy(&answer).into_owned(), closed)
    })
    .await
    .unwrap();
    assert!(refused.0.starts_with("HTTP/1.1 503"), "{}", refused.0);
    assert!(refused.0.contains("proxy.max_connections"), "{}", refused.0);
    assert!(refused.1, "the refused connection is closed");
    let health = reqwest::get(format!("http://{}/healthz", p.admin_addr))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "admin answers during a flood"
    );
    let metrics = metrics_of(&p).await;
    assert!(metric_value(&metrics, "adacompress_refused_connections_total") >= 1.0);
    assert_eq!(
        metric_value(&metrics, "adacompress_client_connections"),
        8.0
    );
    drop(held);
    // Slots free up as the flood ends.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = reqwest::get(format!("http://{addr}/nothing")).await {
            status = r.status();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
        }
    }
    assert_ne!(status, StatusCode::SERVICE_UNAVAILABLE);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_hang_up_never_push_compression_past_the_worker_count() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| {
        c.proxy.cpu_workers = 1;
        c.proxy.cpu_queue = 8;
        c.limits.worker_wait_secs = 30.0;
    })
    .await;
    // Big images (8 MP) so that each job takes a while; every client gives up at once.
    let big = {
        let img = image::RgbImage::from_fn(4000, 2000, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
        });
        adacompress::codec::encode_jpeg(&img, 95, adacompress::codec::EncoderMode::Fastest).unwrap()
    };
    let body = google_body(&[big.clone(), big.clone(), big]);
    for _ in 0..6 {
        let _ = reqwest::Client::new()
            .post(format!("http://{}/v1/images:annotate", p.proxy_addr))
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_millis(150))
            .send()
            .await;
    }
    let mut peak = 0.0f64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        peak = peak.max(metric_value(
            &metrics_of(&p).await,
            "adacompress_busy_workers",
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(peak >= 1.0, "the jobs did run");
    assert!(
        peak <= 1.0,
        "busy workers peaked at {peak} with cpu_workers = 1"
    );
    // Ordinary requests are answered meanwhile (waiting, then going up as sent at worst).
    let (status, _, took) = ordinary(&p, &first_street_photo()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(20), "{took:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_images_than_the_api_takes_go_up_as_sent_and_the_header_stays_short() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| c.limits.max_header_images = 3).await;
    let photo = first_street_photo();
    let post = |body: String| {
        reqwest::Client::new()
            .post(format!("http://{}/v1/images:annotate", p.proxy_addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 17 images: over Google's documented 16.
    let resp = post(google_body(&vec![photo.clone(); 17])).await.unwrap();
    assert_eq!(
        resp.headers()["x-adacompress-action"],
        "original:too_many_images"
    );
    // 5 images: each gets an action; the header lists 3 and counts the rest.
    let resp = post(google_body(&vec![photo; 5])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let action = resp.headers()["x-adacompress-action"].to_str().unwrap();
    assert!(action.ends_with(",+2 more"), "{action}");
    assert_eq!(action.split(',').count(), 4, "{action}");
    let metrics = metrics_of(&p).await;
    assert_eq!(
        metric_value(
            &metrics,
            "adacompress_passthrough_total{reason=\"too_many_images\"}"
        ),
        1.0
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_strip_image_is_forwarded_not_resized_into_gigabytes() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |_| {}).await;
    // 1 × 1,000,000 pixels: under the pixel limit, a 77 GB square crop before the fix.
    let strip = {
        use image::ImageEncoder as _;
        let img = image::GrayImage::from_pixel(1, 1_000_000, image::Luma([128u8]));
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::NoFilter,
        )
        .write_image(img.as_raw(), 1, 1_000_000, image::ExtendedColorType::L8)
        .unwrap();
        out
    };
    assert!(strip.len() < 100_000, "{}", strip.len());
    let (_, action, took) = ordinary(&p, &strip).await;
    assert_eq!(action, "original:too_thin");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (status, _, _) = ordinary(&p, &first_street_photo()).await;
    assert_eq!(status, StatusCode::OK, "the process lives on");
    p.shutdown().await;
}

/// A fake upstream (a fault the real backend cannot show): answers every request with
/// `answer_bytes` of JSON-ish filler, and records the headers it received.
async fn fake_upstream(
    answer_bytes: usize,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>>,
) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>> = Default::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(req.headers().clone());
            let mut body = vec![b' '; answer_bytes];
            if answer_bytes >= 2 {
                body[0] = b'{';
                body[answer_bytes - 1] = b'}';
            }
            axum::response::Response::builder()
                .header("content-type", "application/json")
                .header("connection", "x-upstream-secret")
                .header("x-upstream-secret", "hop")
                .body(axum::body::Body::from(body))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_a_clear_502_and_connection_headers_stay_on_their_hop() {
    let (upstream, seen) = fake_upstream(3 * 1024 * 1024).await;
    let p = proxy(&upstream, |c| c.limits.max_answer_bytes = 1024 * 1024).await;
    let req = Protocol::GoogleVision.client_request(&first_street_photo(), 5);
    let resp = reqwest::Client::new()
        .post(format!("http://{}{}", p.proxy_addr, req.path_and_query))
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "private")
        .body(req.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.unwrap();
    assert!(text.contains("limits.max_answer_bytes"), "{text}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].contains_key("x-client-hop"),
        "a header the client's Connection names went upstream"
    );
    let metrics = metrics_of(&p).await;
    assert_eq!(
        metric_value(
            &metrics,
            "adacompress_upstream_errors_total{kind=\"answer_too_large\"}"
        ),
        1.0
    );
    p.shutdown().await;

    // Under the limit the answer comes back, minus the upstream's Connection-named header.
    let (upstream, _) = fake_upstream(1000).await;
    let p = proxy(&upstream, |_| {}).await;
    let req = Protocol::GoogleVision.client_request(&first_street_photo(), 5);
    let resp = reqwest::Client::new()
        .post(format!("http://{}{}", p.proxy_addr, req.path_and_query))
        .header("content-type", "application/json")
        .body(req.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("x-upstream-secret"));
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_password_never_reaches_the_client() {
    // Nothing listens on port 9 of loopback: the proxy answers 502 naming the upstream.
    let p = proxy("http://svc-user:hunter2-secret@127.0.0.1:9", |_| {}).await;
    let req = Protocol::GoogleVision.client_request(&first_street_photo(), 5);
    let resp = reqwest::Client::new()
        .post(format!("http://{}{}", p.proxy_addr, req.path_and_query))
        .header("content-type", "application/json")
        .body(req.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let text = resp.text().await.unwrap();
    assert!(text.contains("svc-user:***@127.0.0.1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{:?}", p.state).contains("hunter2"));
    p.shutdown().await;
}

/// The admin token guards the one mutating endpoint, `POST /agent/relearn`: without it or
/// with a wrong one the request is refused (401) and the live pair is untouched; with it
/// the pair relearns (202). The token is never shown anywhere. The Q-head agent's
/// `POST /agent/retrain` and `DELETE /agent/memory` are gone (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_relearn_and_is_never_shown() {
    let (backend, _state, _stop) = spawn_backend().await;
    let dir = temp_dir("admin-token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-admin\n").unwrap();
    let p = proxy_to(&backend, "hostile-state", |c| {
        c.proxy.admin_token_file = Some(token_file)
    })
    .await;
    let admin = format!("http://{}", p.admin_addr);
    let http = reqwest::Client::new();
    let relearn = |token: Option<&'static str>| {
        let mut req = http.post(format!("{admin}/agent/relearn"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for token in [None, Some("wrong"), Some("s3cret-admin-but-longer")] {
        let resp = relearn(token).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("Authorization: Bearer"), "{body}");
        assert!(!body.contains("s3cret"), "{body}");
    }
    assert_eq!(agent_of(&p).await["pair"]["relearns"], 0);
    let resp = relearn(Some("s3cret-admin")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let status: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status["pair"]["relearns"], 1, "{status}");
    assert_eq!(status["pair"]["learning"], true, "{status}");
    assert_eq!(agent_of(&p).await["pair"]["relearns"], 1);
    assert!(
        metrics_of(&p)
            .await
            .contains("adacompress_pair_relearns_total 1")
    );
    for (method, path) in [
        (reqwest::Method::POST, "/agent/retrain"),
        (reqwest::Method::DELETE, "/agent/memory"),
    ] {
        let resp = http
            .request(method, format!("{admin}{path}"))
            .bearer_auth("s3cret-admin")
            .send()
            .await
            .unwrap();
        assert!(
            matches!(
                resp.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{path}: {}",
            resp.status()
        );
    }
    // Reads need no token.
    let agent = http.get(format!("{admin}/agent")).send().await.unwrap();
    assert_eq!(agent.status(), StatusCode::OK);
    let text = agent.text().await.unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!metrics_of(&p).await.contains("s3cret"));
    assert!(!format!("{:?}", p.state).contains("s3cret"));
    p.shutdown().await;
}

/// The port speaks HTTP/1.1 and HTTP/2: telling them apart must not wait forever. A client
/// that connects and sends nothing, or half the HTTP/2 preface, is cut at the header
/// deadline like a dribbled HTTP/1 header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_http2_clients_are_cut_at_the_header_deadline() {
    let (backend, _state, _stop) = spawn_backend().await;
    let p = proxy(&backend, |c| c.proxy.header_read_timeout_secs = 0.5).await;
    let addr = p.proxy_addr;
    let cuts = tokio::task::spawn_blocking(move || {
        let mut cuts = Vec::new();
        for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(first).unwrap();
            let t = Instant::now();
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
            cuts.push((closed, t.elapsed()));
        }
        cuts
    })
    .await
    .unwrap();
    for (i, (closed, t)) in cuts.into_iter().enumerate() {
        assert!(
            closed && t < Duration::from_secs(2),
            "client {i} cut after {t:?}"
        );
    }
    let metrics = metrics_of(&p).await;
    assert!(
        metric_value(&metrics, "adacompress_slow_clients_total{kind=\"header\"}") >= 2.0,
        "{metrics}"
    );
    p.shutdown().await;
}
