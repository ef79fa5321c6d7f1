//! SigV4 end to end on loopback: the local backend checks signatures as AWS does,
//! and a request re-signed by the proxy's `Signer` passes where unsigned, wrongly
//! signed or tampered ones get AWS's 403.

mod common;

use std::time::SystemTime;

use adacompress::backend::BackendConfig;
use adacompress::protocol::Protocol;
use adacompress::sigv4::{AwsCredentials, Signer, Verifier};
use axum::http::HeaderMap;

const REGION: &str = "us-east-1";

fn backend_key() -> AwsCredentials {
    AwsCredentials::new("AKIDBACKEND", "backend-secret-key-0123456789", None)
}

/// A Rekognition DetectLabels request for a sample photo, as a client builds it.
fn detect_labels() -> (HeaderMap, Vec<u8>) {
    let req = Protocol::Rekognition.client_request(&common::photo("objects", "3.jpg"), 5);
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        headers.insert(
            axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (headers, req.body)
}

async fn post(url: &str, headers: HeaderMap, body: Vec<u8>) -> (u16, HeaderMap, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let json = resp.json().await.unwrap();
    (status, headers, json)
}

async fn verifying_backend() -> (
    String,
    std::sync::Arc<adacompress::backend::Backend>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut cfg = BackendConfig::new(common::lite0());
    cfg.aws_verify = Some(Verifier::new(backend_key(), REGION));
    common::spawn_backend_with(cfg).await
}

fn assert_invalid_signature(
    status: u16,
    headers: &HeaderMap,
    json: &serde_json::Value,
    fragment: &str,
) {
    assert_eq!(status, 403, "{json}");
    assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");
    assert_eq!(json["__type"], "InvalidSignatureException", "{json}");
    let message = json["Message"].as_str().unwrap();
    assert!(message.contains(fragment), "{message}");
    assert!(!message.contains("secret-key"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigned_request_is_answered() {
    let (url, state, _stop) = verifying_backend().await;
    let (mut headers, body) = detect_labels();
    // The client signed with its own key for the proxy; the proxy replaces it.
    let client = Signer::new(
        AwsCredentials::new("AKIDCLIENT", "client-secret", None),
        REGION,
    );
    client
        .resign(
            "POST",
            "http://127.0.0.1:8080/",
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .unwrap();
    headers.insert("host", "127.0.0.1:8080".parse().unwrap());
    Signer::new(backend_key(), REGION)
        .resign(
            "POST",
            &format!("{url}/"),
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .unwrap();

    let (status, _, json) = post(&url, headers, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["Labels"][0]["Name"], "lesser panda", "{json}");
    assert_eq!(json["Labels"].as_array().unwrap().len(), 5);
    assert_eq!(state.signatures_verified(), 1);
    assert_eq!(state.images_classified(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrongly_signed_and_tampered_requests_get_403() {
    let (url, state, _stop) = verifying_backend().await;

    // Unsigned.
    let (headers, body) = detect_labels();
    let (status, h, json) = post(&url, headers, body).await;
    assert_invalid_signature(status, &h, &json, "missing Authorization");

    // The client's own signature, passed through unchanged (a proxy that forgot to re-sign).
    let (mut headers, body) = detect_labels();
    Signer::new(
        AwsCredentials::new("AKIDCLIENT", "client-secret", None),
        REGION,
    )
    .resign(
        "POST",
        &format!("{url}/"),
        &mut headers,
        &body,
        SystemTime::now(),
    )
    .unwrap();
    let (status, h, json) = post(&url, headers, body).await;
    assert_invalid_signature(status, &h, &json, "access key id");

    // The right key id with the wrong secret.
    let (mut headers, body) = detect_labels();
    Signer::new(
        AwsCredentials::new("AKIDBACKEND", "wrong-secret", None),
        REGION,
    )
    .resign(
        "POST",
        &format!("{url}/"),
        &mut headers,
        &body,
        SystemTime::now(),
    )
    .unwrap();
    let (status, h, json) = post(&url, headers, body).await;
    assert_invalid_signature(status, &h, &json, "does not match");

    // Signed, then the image changed (re-encoded without re-signing).
    let (mut headers, body) = detect_labels();
    Signer::new(backend_key(), REGION)
        .resign(
            "POST",
            &format!("{url}/"),
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .unwrap();
    let other = Protocol::Rekognition
        .client_request(&common::photo("objects", "4.jpg"), 5)
        .body;
    let (status, h, json) = post(&url, headers, other).await;
    assert_invalid_signature(status, &h, &json, "does not match");

    // Signed an hour ago.
    let (mut headers, body) = detect_labels();
    let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
    Signer::new(backend_key(), REGION)
        .resign("POST", &format!("{url}/"), &mut headers, &body, hour_ago)
        .unwrap();
    let (status, h, json) = post(&url, headers, body).await;
    assert_invalid_signature(status, &h, &json, "expired");

    assert_eq!(state.signatures_verified(), 0);
    assert_eq!(state.images_classified(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_is_off_by_default_and_only_on_the_rekognition_route() {
    // Off (the default): an unsigned Rekognition request is answered.
    let (url, state, _stop) = common::spawn_backend().await;
    let (headers, body) = detect_labels();
    let (status, _, json) = post(&url, headers, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(state.signatures_verified(), 0);

    // On: Google Vision requests (key= auth, nothing signed) are not checked.
    let (url, _state, _stop) = verifying_backend().await;
    let req = Protocol::GoogleVision.client_request(&common::photo("objects", "3.jpg"), 3);
    let resp = reqwest::Client::new()
        .post(format!("{url}{}", req.path_and_query))
        .header("content-type", "application/json")
        .body(req.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
