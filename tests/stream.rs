//! The short stream benchmark (issue 15), as CI runs it: three small "deployments" of
//! phone-like uploads (day objects, day street scenes, then a scenery change to night
//! versions) go one at a time through a real `serve` on the calibrated agent, through a
//! recording hop that counts every image byte the upstream receives, to the real local
//! backend. The full benchmark (4,500 uploads, EfficientNet-Lite2 as the cloud, fixed pairs
//! in hindsight) is `scripts/stream_bench.sh`; its last results are `docs/bench/stream.md`.
//!
//! What this checks, with numbers that could fail:
//! - every upstream byte is accounted for: the hop's image bytes equal the proxy's
//!   `adacompress_image_bytes_out_total` plus `adacompress_estimation_bytes_total`;
//! - estimation stays within the credit the live pair grants (at most `learn_share` of the
//!   served bytes, plus at most 8 originals banked);
//! - the stream is compressed, and the client's top-1 answers agree with the cloud's
//!   answers for the originals (asked directly) on at least 85 % of the uploads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adacompress::codec::{self, EncoderMode, Limits};
use adacompress::protocol::{Protocol, ProxyRequest};

use common::*;

/// A pass-through in front of `target` that adds up the image bytes of every request.
async fn counting_hop(target: String) -> (String, Arc<AtomicU64>) {
    let bytes = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let counted = bytes.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (counted, http, target) = (counted.clone(), http.clone(), target.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let view = ProxyRequest {
                path_and_query: path,
                headers: &parts.headers,
                body: &body,
            };
            let images: usize = Protocol::GoogleVision
                .extract_images(&view)
                .map(|slots| {
                    slots
                        .iter()
                        .filter_map(|s| s.bytes())
                        .map(<[u8]>::len)
                        .sum()
                })
                .unwrap_or(0);
            counted.fetch_add(images as u64, Ordering::SeqCst);
            let mut headers = parts.headers.clone();
            headers.remove("host");
            headers.remove("content-length");
            let resp = http
                .post(format!("{target}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let answer = resp.bytes().await.unwrap();
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(answer))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), bytes)
}

/// A phone-like upload of a sample photo: enlarged to 1600 px wide at quality 95; `night`
/// darkens it to a third and tints it blue.
fn upload(path: &std::path::Path, night: bool) -> Vec<u8> {
    let photo = codec::decode(&std::fs::read(path).unwrap(), &Limits::default())
        .unwrap()
        .image;
    let (w, h) = photo.dimensions();
    let mut big = image::imageops::resize(
        &photo,
        1600,
        1600 * h / w,
        image::imageops::FilterType::Triangle,
    );
    if night {
        for p in big.pixels_mut() {
            let [r, g, b] = p.0;
            p.0 = [
                (f32::from(r) * 0.25) as u8,
                (f32::from(g) * 0.3) as u8,
                (f32::from(b) * 0.45) as u8,
            ];
        }
    }
    codec::encode_jpeg(&big, 95, EncoderMode::default()).unwrap()
}

/// The top-1 label of a Google Vision answer.
fn top1(answer: &serde_json::Value) -> Option<String> {
    answer["responses"][0]["labelAnnotations"][0]["description"]
        .as_str()
        .map(str::to_owned)
}

async fn ask(http: &reqwest::Client, base: &str, image: &[u8]) -> (serde_json::Value, String) {
    let (status, action, answer) = google_annotate(http, base, image).await;
    assert_eq!(status, 200);
    (answer, action)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stream_is_compressed_agrees_and_accounts_for_every_upstream_byte() {
    let (backend, _state, _stop) = spawn_backend().await;
    let (hop, hop_bytes) = counting_hop(backend.clone()).await;
    let state = temp_dir("stream-state");
    let (learn_images, learn_share, budget_share) = (40u64, 1.0f64, 0.08);
    let proxy = proxy_to(&hop, "stream", move |cfg| {
        cfg.state.dir = state;
        cfg.pair.learn_images = learn_images;
        cfg.pair.learn_share = learn_share;
        cfg.pair.budget_share = budget_share;
    })
    .await;
    let base = format!("http://{}", proxy.proxy_addr);
    let http = reqwest::Client::new();

    let per = 24usize;
    let mut traffic = Vec::new();
    for (set, night) in [("objects", false), ("street", false), ("objects", true)] {
        let mut files: Vec<_> = std::fs::read_dir(photos(set))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        // The night deployment uses other photos than the day one.
        let skip = if night { per } else { 0 };
        traffic.extend(files.into_iter().skip(skip).take(per).map(|f| (f, night)));
    }

    let (mut agree, mut original_bytes, mut max_original) = (0usize, 0u64, 0u64);
    let mut reasked = 0usize;
    for (path, night) in &traffic {
        let image = upload(path, *night);
        original_bytes += image.len() as u64;
        max_original = max_original.max(image.len() as u64);
        let (direct, _) = ask(&http, &backend, &image).await;
        let (served, action) = ask(&http, &base, &image).await;
        // An unsure answer at the pair was asked again as sent (`pair.reask_rate`).
        let pair_action = action.strip_prefix("reasked:");
        reasked += usize::from(pair_action.is_some());
        let pair_action = pair_action.unwrap_or(&action);
        assert!(pair_action.starts_with('q'), "served at a pair: {action}");
        agree += usize::from(top1(&direct).is_some() && top1(&direct) == top1(&served));
        // One upload at a time: let its audit finish (what the full benchmark does too).
        let started = Instant::now();
        while proxy.state.online.as_ref().unwrap().status().state == "estimate" {
            assert!(started.elapsed() < Duration::from_secs(60), "audit stuck");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let metrics = metrics_of(&proxy).await;
    let served = metric(&metrics, "adacompress_image_bytes_out_total") as u64;
    let estimation = metric(&metrics, "adacompress_estimation_bytes_total") as u64;
    let hop = hop_bytes.load(Ordering::SeqCst);
    eprintln!(
        "stream: {} uploads, served {:.3}× the originals, estimation {:.3}× the served bytes, \
         top-1 agreement {:.3}, {} re-asked",
        traffic.len(),
        served as f64 / original_bytes as f64,
        estimation as f64 / served.max(1) as f64,
        agree as f64 / traffic.len() as f64,
        reasked
    );
    // Served bytes include the re-asked originals (also counted on their own).
    assert_eq!(
        hop,
        served + estimation,
        "every upstream byte accounted for"
    );
    assert_eq!(
        metric(&metrics, "adacompress_reasks_total{outcome=\"answered\"}") as usize,
        reasked
    );
    assert!(metric(&metrics, "adacompress_reask_bytes_total") as u64 <= served);
    assert!(served < original_bytes, "the stream is compressed");
    // The credit bound: at most learn_share of what was served (the share of a learning
    // phase; after one, budget_share is smaller), plus at most 8 originals banked.
    let bound = learn_share * served as f64 + 8.0 * max_original as f64;
    assert!(
        (estimation as f64) <= bound,
        "estimation {estimation} B over the credit bound {bound:.0} B"
    );
    assert!(estimation > 0, "the learning phase audits");
    let rate = agree as f64 / traffic.len() as f64;
    assert!(rate >= 0.85, "top-1 agreement {rate:.3}");
    let status = proxy.state.online.as_ref().unwrap().status();
    let pair = status.pair;
    assert!(pair.audits > 0);
    assert_eq!(pair.estimation_bytes, estimation, "{pair:?}");
    assert!(proxy.shutdown().await);
}
