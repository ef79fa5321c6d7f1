//! The local vision backend end to end on loopback: real model, real wire formats,
//! our HTTP client and the SQLite answer cache in front of it.

mod common;

use std::time::Duration;

use adacompress::client::{CachedService, HttpService, VisionService};
use adacompress::protocol::Protocol;
use adacompress::store::{Outcome, Store};

/// Our HTTP client against every API of the backend (the wire formats themselves are
/// exercised in `tests/protocols.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_returns_real_labels() {
    let (url, state, _stop) = common::spawn_backend().await;
    let panda = common::photo("objects", "3.jpg");
    for protocol in Protocol::ALL {
        let svc = HttpService::new(protocol, &url, Duration::from_secs(30)).unwrap();
        let Outcome::Answer(answer) = svc.annotate(&panda).await.unwrap() else {
            panic!("{protocol}: refused");
        };
        assert_eq!(
            answer.top1(),
            Some("lesser panda"),
            "{protocol}: {answer:?}"
        );
        // The client asks for 10; Baidu, Face++ and TorchServe have no parameter for it.
        let expected = match protocol {
            Protocol::Baidu | Protocol::FacePlusPlus | Protocol::TorchServe => 5,
            _ => 10,
        };
        assert_eq!(answer.labels.len(), expected, "{protocol}");
        assert!(answer.labels.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(answer.labels[0].score > 0.5 && answer.labels[0].score <= 1.0);
    }
    assert_eq!(state.images_classified(), Protocol::ALL.len() as u64);
}

/// Baidu refuses with an `error_code` inside an HTTP 200: the client counts it as a
/// refusal (an outcome), not as an answer it cannot parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baidu_refusals_in_a_200_are_outcomes() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let svc = HttpService::new(Protocol::Baidu, &url, Duration::from_secs(30)).unwrap();
    match svc.annotate(b"definitely not a jpeg").await.unwrap() {
        Outcome::Rejected(msg) => assert!(msg.contains("error_code 216201"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_batch_reports_per_image_errors() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let body = serde_json::json!({"requests": [
        {"image": {"content": common::b64(&common::photo("objects", "4.jpg"))}, "features": [{"type": "LABEL_DETECTION", "maxResults": 3}]},
        {"image": {"content": common::b64(b"not an image at all")}, "features": [{"type": "LABEL_DETECTION"}]},
        {"image": {"content": common::b64(&common::photo("objects", "35.jpg"))}, "features": [{"type": "LABEL_DETECTION", "maxResults": 5}]},
    ]});
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/images:annotate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let r = v["responses"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["labelAnnotations"][0]["description"], "giant panda");
    assert_eq!(r[0]["labelAnnotations"].as_array().unwrap().len(), 3);
    assert!(
        r[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decode"),
        "{}",
        r[1]
    );
    assert_eq!(r[2]["labelAnnotations"][0]["description"], "golf ball");
    assert_eq!(r[2]["labelAnnotations"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx() {
    let (url, state, _stop) = common::spawn_backend().await;
    let http = reqwest::Client::new();
    // Not JSON.
    let resp = http
        .post(format!("{url}/v1/images:annotate"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("JSON"));
    // Over Google's 16 images per request: the message names the limit and the value.
    let one = serde_json::json!({"image": {"content": common::b64(b"x")}});
    let many = serde_json::json!({"requests": vec![one; 17]});
    let resp = http
        .post(format!("{url}/v1/images:annotate"))
        .json(&many)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("16") && text.contains("17"), "{text}");
    // Rekognition without its target header.
    let resp = http
        .post(format!("{url}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(serde_json::json!({"Image": {"Bytes": common::b64(b"x")}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Rekognition with an undecodable image: its own error type.
    let resp = http
        .post(format!("{url}/"))
        .header("x-amz-target", "RekognitionService.DetectLabels")
        .header("content-type", "application/x-amz-json-1.1")
        .body(serde_json::json!({"Image": {"Bytes": common::b64(b"garbage")}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidImageFormatException"
    );
    assert_eq!(state.images_classified(), 0);
}

/// Training runs many epochs over the same photos: the cache must stop repeats
/// from ever reaching the service. Counted at the backend itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_prevents_repeat_requests() {
    let (url, state, _stop) = common::spawn_backend().await;
    let dir = common::temp_dir("cache");
    let store = Store::open(&dir.join("answers.sqlite")).unwrap();
    let svc = HttpService::new(Protocol::GoogleVision, &url, Duration::from_secs(30)).unwrap();
    let cached = CachedService::new(&svc, &store);
    let photo = common::photo("objects", "5.jpg");
    let first = cached.answer("sha-5", "q75", &photo).await.unwrap();
    for _ in 0..5 {
        assert_eq!(cached.answer("sha-5", "q75", &photo).await.unwrap(), first);
    }
    assert_eq!(state.images_classified(), 1);
    assert_eq!(cached.requests(), 1);
    // Another action of the same image is a new question.
    cached.answer("sha-5", "q35", &photo).await.unwrap();
    assert_eq!(state.images_classified(), 2);
    // The cache persists: a new client on the same file asks nothing.
    drop(store);
    let store = Store::open(&dir.join("answers.sqlite")).unwrap();
    let cached = CachedService::new(&svc, &store);
    cached.answer("sha-5", "q75", &photo).await.unwrap();
    assert_eq!(state.images_classified(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused image is an outcome (it counts as a failure to agree), not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_outcomes() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let svc = HttpService::new(Protocol::Rekognition, &url, Duration::from_secs(30)).unwrap();
    match svc.annotate(b"definitely not a jpeg").await.unwrap() {
        Outcome::Rejected(msg) => assert!(msg.contains("InvalidImageFormat"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Bounded concurrency: with one slot and no queue, a request that arrives while a
/// long batch is being classified is refused at once with 429, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_backend_answers_429_instead_of_queueing() {
    let mut cfg = adacompress::backend::BackendConfig::new(common::lite0());
    cfg.concurrency = 1;
    cfg.queue = 0;
    let (url, state, _stop) = common::spawn_backend_with(cfg).await;
    let image =
        serde_json::json!({"image": {"content": common::b64(&common::photo("street", "0.jpg"))}});
    let batch = serde_json::json!({"requests": vec![image.clone(); 16]});
    let http = reqwest::Client::new();
    let long = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/images:annotate"))
                .json(&batch)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the batch holds the only slot (its first image is done, 15 to go).
    while state.images_classified() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let single = serde_json::json!({"requests": [image]});
    let resp = http
        .post(format!("{url}/v1/images:annotate"))
        .json(&single)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.text().await.unwrap().contains("RESOURCE_EXHAUSTED"));
    assert_eq!(long.await.unwrap(), 200);
    assert_eq!(state.images_classified(), 16);
}

/// Issue 9: what the official clients send besides inference — KServe v2 / Triton health,
/// readiness and metadata (tritonclient's `is_server_live`, `is_model_ready`,
/// `get_model_metadata`), TorchServe's `/ping` — answered in the protocols' shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metadata_routes() {
    let (url, state, _stop) = common::spawn_backend().await;
    let http = reqwest::Client::new();
    // (path, expected status, expected JSON fields)
    let cases: Vec<(&str, u16, serde_json::Value)> = vec![
        ("/v2/health/live", 200, serde_json::json!({"live": true})),
        ("/v2/health/ready", 200, serde_json::json!({"ready": true})),
        (
            "/v2",
            200,
            serde_json::json!({"name": "adacompress-backend",
                               "extensions": ["binary_tensor_data"]}),
        ),
        (
            "/v2/models/densenet",
            200,
            serde_json::json!({"name": "densenet", "versions": ["1"], "platform": "onnx",
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]}),
        ),
        (
            "/v2/models/densenet/versions/7",
            200,
            serde_json::json!({"name": "densenet", "versions": ["7"]}),
        ),
        (
            "/v2/models/densenet/ready",
            200,
            serde_json::json!({"name": "densenet", "ready": true}),
        ),
        (
            "/v2/models/densenet/versions/7/ready",
            200,
            serde_json::json!({"name": "densenet", "ready": true}),
        ),
        ("/ping", 200, serde_json::json!({"status": "Healthy"})),
    ];
    for (path, status, expected) in cases {
        let resp = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let got: serde_json::Value = resp.json().await.unwrap();
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&got[key], value, "{path}: {key} in {got}");
        }
    }
    assert_eq!(state.images_classified(), 0);
}

/// Issue 9: Google Vision REST as google-cloud-vision and @google-cloud/vision send it
/// (numeric enums, `$alt=json;enum-encoding=int`), and Azure at the api-version of
/// azure-ai-vision-imageanalysis, straight to the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_request_forms_get_labels() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let panda = common::photo("objects", "3.jpg");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"requests": [{
        "image": {"content": common::b64(&panda)},
        "features": [{"type": 4, "maxResults": 4}],
    }]});
    for query in ["?$alt=json;enum-encoding=int", "?alt=json", ""] {
        let resp = http
            .post(format!("{url}/v1/images:annotate{query}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        let v: serde_json::Value = resp.json().await.unwrap();
        let labels = v["responses"][0]["labelAnnotations"].as_array().unwrap();
        assert_eq!(labels.len(), 4, "{query}");
        assert_eq!(labels[0]["description"], "lesser panda", "{query}");
    }
    let path = format!(
        "{url}/computervision/imageanalysis:analyze?api-version={}&features=tags\
         &language=en&gender-neutral-caption=true",
        adacompress::protocol::azure::SDK_API_VERSION
    );
    let resp = http
        .post(path)
        .header("content-type", "application/octet-stream")
        .header("ocp-apim-subscription-key", "k")
        .body(panda.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["tagsResult"]["values"][0]["name"], "lesser panda");
}
