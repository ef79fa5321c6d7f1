//! `serve` on the calibrated agent: every image goes up at the live pair, audits run off the
//! request path against the real local backend, and what they taught survives a restart.
//!
//! client → proxy (calibrated agent) → real local backend (Lite0), on loopback.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use adacompress::proxy::server::Server;

use common::*;

/// A proxy on the shipped calibrated agent with state in `state`, auditing every image it
/// can pay for (a large learning credit), routed to `upstream`. Every image has a
/// deviation candidate (`deviation_floor` 0: any cheaper pair qualifies), so every audit
/// also uploads one for the deviation gate.
async fn calibrated_proxy(upstream: &str, state: &Path) -> Server {
    let state = state.to_path_buf();
    proxy_to(upstream, "live-pair", move |cfg| {
        cfg.state.dir = state;
        cfg.pair.learn_share = 10.0;
        cfg.pair.max_audit_rate = 1.0;
        cfg.pair.candidates = 2;
        cfg.pair.deviation_floor = 0.0;
    })
    .await
}

/// Waits until no audit is in flight (at most 60 s).
async fn audits_done(proxy: &Server) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if agent_of(proxy).await["state"] != "estimate" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("audits still in flight after 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_every_image_at_the_live_pair_audits_it_and_remembers_across_a_restart() {
    let (backend, backend_state, _stop) = spawn_backend().await;
    let state = temp_dir("live-pair-state");
    let proxy = calibrated_proxy(&backend, &state).await;

    // A fresh proxy serves the shipped prior: the calibrated checkpoint's fallback pair.
    let before = agent_of(&proxy).await;
    let prior = before["pair"]["served"]
        .as_str()
        .expect("a live pair")
        .to_owned();
    assert_eq!(prior, "q95@960", "{before}");
    assert_eq!(before["pair"]["audits"], 0);

    let dir = photos("street");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let n = 8;
    for path in names.iter().take(n) {
        let image = phone_upload(path);
        let (status, action, body) = google_annotate(
            &reqwest::Client::new(),
            &format!("http://{}", proxy.proxy_addr),
            &image,
        )
        .await;
        assert_eq!(status, 200);
        // 2048 px at q95: q95 at ≤ 960 px shrinks them.
        assert_eq!(action, prior, "every image goes up at the live pair");
        assert!(
            body["responses"][0]["labelAnnotations"][0]["description"].is_string(),
            "the client gets the cloud's labels: {body}"
        );
        // One request at a time, so each audit is paid before the next image.
        audits_done(&proxy).await;
    }

    let after = agent_of(&proxy).await;
    let pair = &after["pair"];
    let audits = pair["audits"].as_u64().unwrap();
    assert!(audits >= 1, "the learning credit pays for audits: {after}");
    // Each audit uploads the original (the reference) and the candidate pairs: the backend
    // saw the served requests and every extra upload.
    let extra = backend_state.images_classified() - n as u64;
    assert!(extra >= audits, "{extra} extra uploads for {audits} audits");
    let est = pair["estimation_bytes"].as_u64().unwrap();
    assert!(est > 0, "{after}");
    let served_bytes = pair["served_bytes"].as_u64().unwrap();
    assert!(served_bytes > 0 && served_bytes < pair["original_bytes"].as_u64().unwrap());
    // Every audit counts for the served pair (its answer is free).
    let served_row = pair["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["action"] == prior)
        .expect("the served pair has a row")
        .clone();
    assert_eq!(served_row["audits"].as_u64(), Some(audits), "{after}");
    assert!(
        served_row["lower"].as_f64().unwrap() < 0.97,
        "too few audits to certify"
    );
    // Every audit found the image's deviation candidate off the request path (the head ran
    // on the audited image) and recorded its outcome for the gate; 8 records cannot back
    // a deviation, so none happened.
    let gate = &pair["deviation"];
    assert_eq!(gate["records"].as_u64(), Some(audits), "{after}");
    assert!(gate["threshold"].is_null(), "{after}");
    assert_eq!(gate["deviated"], 0);

    // The metrics show the pair, its bounds and the estimation bytes.
    let metrics = metrics_of(&proxy).await;
    assert!(
        metrics.contains(&format!("adacompress_pair_served{{action=\"{prior}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("adacompress_pair_audits_total {audits}")));
    assert!(metrics.contains(&format!(
        "adacompress_pair_lower_bound{{action=\"{prior}\"}}"
    )));
    assert!(metrics.contains("adacompress_pair_target_agreement 0.97"));
    assert!(metrics.contains("adacompress_pair_margin_alarms_total 0"));
    assert!(metrics.contains("adacompress_pair_deviations_total 0"));
    assert!(metrics.contains("adacompress_pair_trials_failed_total 0"));
    assert!(metrics.contains("adacompress_pair_deviation_threshold 2"));
    // Every action of the set has a row, so a drift that forgets audits leaves no stale
    // bound behind; the original is exact.
    let rows = |name: &str| metrics.lines().filter(|l| l.starts_with(name)).count();
    let actions = pair["pairs"].as_array().unwrap().len();
    assert!(
        rows("adacompress_pair_lower_bound{") >= actions,
        "{metrics}"
    );
    assert_eq!(
        rows("adacompress_pair_lower_bound{"),
        rows("adacompress_pair_served{")
    );
    assert!(metrics.contains("adacompress_pair_lower_bound{action=\"keep\"} 1"));
    let estimation_metric = metrics
        .lines()
        .find_map(|l| l.strip_prefix("adacompress_estimation_bytes_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("estimation bytes metric");
    assert_eq!(estimation_metric, est, "one count of the estimation bytes");

    // A restart finds what the audits taught.
    assert!(proxy.shutdown().await);
    let again = calibrated_proxy(&backend, &state).await;
    let restored = agent_of(&again).await;
    assert_eq!(
        restored["pair"]["audits"].as_u64(),
        Some(audits),
        "{restored}"
    );
    assert_eq!(restored["pair"]["served"], after["pair"]["served"]);
    assert_eq!(
        restored["pair"]["deviation"]["records"].as_u64(),
        Some(audits)
    );
    assert!(again.shutdown().await);
}

/// `path` at 1280 px wide and JPEG q95: large enough that the live pair (`q95@960`)
/// shrinks it, cheaper to make than a 2048-px phone upload.
fn large_upload(path: &Path) -> Vec<u8> {
    upload_at(path, 1280)
}

/// A proxy on the calibrated agent without audits (every upload the upstream sees is a
/// served request or a re-ask) that re-asks the less sure half of the answers at the
/// pair; and its base URL.
async fn reask_proxy(upstream: &str, tag: &str) -> (Server, String) {
    let state = temp_dir(&format!("{tag}-state"));
    let proxy = proxy_to(upstream, tag, move |cfg| {
        cfg.state.dir = state;
        no_audits(cfg);
        cfg.pair.reask_rate = 0.5;
    })
    .await;
    let base = format!("http://{}", proxy.proxy_addr);
    (proxy, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsure_answer_is_asked_again_as_sent_and_the_client_gets_the_originals_answer() {
    let (backend, backend_state, _stop) = spawn_backend().await;
    // No audits, so every upload the backend sees is a served request or a re-ask.
    let (proxy, base) = reask_proxy(&backend, "reask").await;
    let http = reqwest::Client::new();
    let mut paths: Vec<_> = ["street", "objects"]
        .iter()
        .flat_map(|set| std::fs::read_dir(photos(set)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let n = 70;
    let (mut reasked, mut reasked_bytes) = (0u64, 0u64);
    for (k, path) in paths.iter().take(n).enumerate() {
        let image = large_upload(path);
        let (status, action, body) = google_annotate(&http, &base, &image).await;
        assert_eq!(status, 200);
        if let Some(actions) = action.strip_prefix("reasked:") {
            // Nothing is re-asked before 10 margins at the pair were seen.
            assert!(
                k >= adacompress::learn::reask::MIN_SERVED_MARGINS,
                "image {k}"
            );
            assert_eq!(actions, "q95@960");
            reasked += 1;
            reasked_bytes += image.len() as u64;
            // The client got the answer to its own request, as the backend gives it.
            let (_, _, direct) = google_annotate(&http, &backend, &image).await;
            assert_eq!(
                body["responses"][0]["labelAnnotations"],
                direct["responses"][0]["labelAnnotations"]
            );
        } else {
            assert_eq!(action, "q95@960", "image {k} goes up at the live pair");
        }
    }
    // About half of the 60 images after the window filled (the quantile moves as it goes).
    let after = n - adacompress::learn::reask::MIN_SERVED_MARGINS;
    assert!(
        (after as u64 / 4..=after as u64 * 3 / 4).contains(&reasked),
        "{reasked} of {after} re-asked"
    );
    let metrics = metrics_of(&proxy).await;
    assert_eq!(
        metric_value(&metrics, "adacompress_reasks_total{outcome=\"answered\"}") as u64,
        reasked,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "adacompress_reask_bytes_total") as u64,
        reasked_bytes
    );
    // The backend saw each request once, each re-ask once more, and the direct requests.
    assert_eq!(
        backend_state.images_classified(),
        n as u64 + 2 * reasked,
        "no audits: only served requests, re-asks and this test's direct ones"
    );
    assert!(proxy.shutdown().await);
}

/// A Google Vision upstream whose answers' top-1 margin varies from request to request
/// (`first` over `second`), and which answers any request carrying `image` as sent (a
/// re-ask) with a 503: the one fault a real server cannot be made to show on demand.
/// Returns its base URL.
async fn margins_upstream(image: &[u8]) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let marker: Arc<str> = b64(image)[..400].into();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/v1/images:annotate",
        axum::routing::post(move |body: String| {
            let (m, seen) = (marker.clone(), seen.clone());
            async move {
                if body.contains(&*m) {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({"error": {"code": 503}})),
                    );
                }
                let i = seen.fetch_add(1, Ordering::SeqCst);
                let margin = ((i * 37) % 100) as f64 / 200.0 + 0.01;
                (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({"responses": [{"labelAnnotations": [
                        {"description": "first", "score": 0.4 + margin},
                        {"description": "second", "score": 0.4}
                    ]}]})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_re_ask_leaves_the_client_the_first_answer() {
    let image = large_upload(&photos("street").join("0.jpg"));
    let upstream = margins_upstream(&image).await;
    let (proxy, base) = reask_proxy(&upstream, "reask-fail").await;
    let http = reqwest::Client::new();
    for k in 0..70 {
        let (status, action, body) = google_annotate(&http, &base, &image).await;
        assert_eq!(status, 200, "image {k}: {body}");
        assert_eq!(
            action, "q95@960",
            "image {k}: the first answer, not re-asked"
        );
        assert_eq!(
            body["responses"][0]["labelAnnotations"][0]["description"],
            "first"
        );
    }
    let metrics = metrics_of(&proxy).await;
    let failed = metric_value(
        &metrics,
        "adacompress_reasks_total{outcome=\"upstream_status\"}",
    );
    assert!(failed >= 5.0, "{failed} re-asks tried: {metrics}");
    assert_eq!(
        metric_value(&metrics, "adacompress_reasks_total{outcome=\"answered\"}"),
        0.0
    );
    // The re-asked originals went up, and are counted.
    assert_eq!(
        metric_value(&metrics, "adacompress_reask_bytes_total"),
        failed * image.len() as f64
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fixed_never_re_asks() {
    // The operator's override sends every image at one pair, and nothing else: the stream
    // bench's fixed pairs in hindsight are measured this way.
    let image = large_upload(&photos("street").join("0.jpg"));
    let upstream = margins_upstream(&image).await;
    let state = temp_dir("reask-fixed-state");
    let proxy = proxy_to(&upstream, "reask-fixed", move |cfg| {
        cfg.state.dir = state;
        cfg.agent.fixed = Some("q95@960".into());
        cfg.pair.reask_rate = 0.5;
    })
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.proxy_addr);
    for k in 0..60 {
        let (status, action, _) = google_annotate(&http, &base, &image).await;
        assert_eq!(status, 200);
        assert_eq!(action, "fixed:q95@960", "image {k}");
    }
    let metrics = metrics_of(&proxy).await;
    assert_eq!(metric_value(&metrics, "adacompress_reask_bytes_total"), 0.0);
    assert!(proxy.shutdown().await);
}
