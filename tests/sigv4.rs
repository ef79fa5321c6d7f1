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

// --- Through the proxy: `aws.resign` (issue 9, item 1) ---------------------------------

/// A proxy on loopback whose own AWS key is the verifying backend's, with a Rekognition
/// upstream at `backend`; `tweak` sets `aws.resign`, `aws.clients`, listeners, ….
async fn resigning_proxy(
    backend: &str,
    tag: &str,
    tweak: impl FnOnce(&mut adacompress::config::Config),
) -> Result<adacompress::proxy::server::Server, adacompress::proxy::server::ServeError> {
    let mut cfg = adacompress::config::Config::default();
    cfg.proxy.listen = "127.0.0.1:0".parse().unwrap();
    cfg.proxy.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.agent.checkpoint = common::calibrated_agent();
    cfg.state.dir = common::temp_dir(tag);
    cfg.upstreams
        .insert("rekognition".into(), backend.to_owned());
    cfg.aws.region = Some(REGION.to_owned());
    cfg.aws.access_key_id = Some("AKIDBACKEND".to_owned());
    cfg.aws.secret_access_key = Some("backend-secret-key-0123456789".into());
    tweak(&mut cfg);
    let resign = adacompress::proxy::resign_from_config(&cfg).unwrap();
    adacompress::proxy::server::start(cfg, resign).await
}

fn known_client() -> adacompress::config::AwsClientKey {
    adacompress::config::AwsClientKey {
        access_key_id: "AKIDAPP".to_owned(),
        secret_access_key: "app-secret-key".into(),
    }
}

/// A DetectLabels request for the proxy at `proxy` (`host:port`), signed by `key` when
/// given, for the proxy's Host as an SDK pointed at the proxy signs it.
fn to_proxy(proxy: std::net::SocketAddr, key: Option<(&str, &str)>) -> (HeaderMap, Vec<u8>) {
    let (mut headers, body) = detect_labels();
    if let Some((id, secret)) = key {
        Signer::new(AwsCredentials::new(id, secret, None), REGION)
            .resign(
                "POST",
                &format!("http://{proxy}/"),
                &mut headers,
                &body,
                SystemTime::now(),
            )
            .unwrap();
    }
    (headers, body)
}

/// Regression (issue 9): a kept image went up with the client's signature, made for the
/// proxy's Host, and got 403. Under "any" every Rekognition request is re-signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_any_kept_image_gets_labels() {
    let (url, backend, _stop) = verifying_backend().await;
    let p = resigning_proxy(&url, "resign-any-kept", |_| {})
        .await
        .unwrap();
    let (mut headers, body) = to_proxy(p.proxy_addr, Some(("AKIDCLIENT", "client-secret")));
    headers.insert("x-adacompress-bypass", "1".parse().unwrap());
    let (status, h, json) = post(&format!("http://{}", p.proxy_addr), headers, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(h["x-adacompress-action"], "original:bypass", "{h:?}");
    assert_eq!(json["Labels"][0]["Name"], "lesser panda", "{json}");
    assert_eq!(backend.signatures_verified(), 1);

    // An unsigned request too: "any" trusts whoever reaches the (loopback) listener.
    let (headers, body) = to_proxy(p.proxy_addr, None);
    let (status, _, json) = post(&format!("http://{}", p.proxy_addr), headers, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(backend.signatures_verified(), 2);
    p.shutdown().await;
}

fn assert_refused(status: u16, headers: &HeaderMap, json: &serde_json::Value, kind: &str) {
    assert_eq!(status, 403, "{json}");
    assert_eq!(headers["x-amzn-errortype"], kind);
    assert_eq!(json["__type"], kind, "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(!message.contains("app-secret-key"), "{message}");
    assert!(!message.contains("backend-secret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_verified_refuses_unsigned_and_unknown_keys_and_forwards_nothing() {
    let (url, backend, _stop) = verifying_backend().await;
    let p = resigning_proxy(&url, "resign-verified-refuse", |c| {
        c.aws.resign = Some(adacompress::config::ResignPolicy::Verified);
        c.aws.clients = vec![known_client()];
    })
    .await
    .unwrap();
    let proxy = format!("http://{}", p.proxy_addr);

    // Unsigned, even asking for a forced quality (what went up with the proxy's identity).
    let (mut headers, body) = to_proxy(p.proxy_addr, None);
    headers.insert("x-adacompress-quality", "30".parse().unwrap());
    let (status, h, json) = post(&proxy, headers, body).await;
    assert_refused(status, &h, &json, "InvalidSignatureException");

    // Signed with a key the proxy does not hold.
    let (headers, body) = to_proxy(p.proxy_addr, Some(("AKIDSTRANGER", "stranger-secret")));
    let (status, h, json) = post(&proxy, headers, body).await;
    assert_refused(status, &h, &json, "UnrecognizedClientException");

    // A known key id with the wrong secret.
    let (headers, body) = to_proxy(p.proxy_addr, Some(("AKIDAPP", "not-the-secret")));
    let (status, h, json) = post(&proxy, headers, body).await;
    assert_refused(status, &h, &json, "InvalidSignatureException");

    // Another operation, unsigned: refused the same way.
    let (mut headers, body) = to_proxy(p.proxy_addr, None);
    headers.insert(
        "x-amz-target",
        "RekognitionService.DetectFaces".parse().unwrap(),
    );
    let (status, h, json) = post(&proxy, headers, body).await;
    assert_refused(status, &h, &json, "InvalidSignatureException");

    assert_eq!(backend.requests(), 0, "the upstream received nothing");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_verified_known_clients_and_the_proxys_own_key_get_labels() {
    let (url, backend, _stop) = verifying_backend().await;
    let p = resigning_proxy(&url, "resign-verified-known", |c| {
        c.aws.resign = Some(adacompress::config::ResignPolicy::Verified);
        c.aws.clients = vec![known_client()];
    })
    .await
    .unwrap();
    let proxy = format!("http://{}", p.proxy_addr);
    for key in [
        ("AKIDAPP", "app-secret-key"),
        ("AKIDBACKEND", "backend-secret-key-0123456789"),
    ] {
        // Compressed or kept: both re-signed.
        for bypass in [false, true] {
            let (mut headers, body) = to_proxy(p.proxy_addr, Some(key));
            if bypass {
                headers.insert("x-adacompress-bypass", "1".parse().unwrap());
            }
            let (status, _, json) = post(&proxy, headers, body).await;
            assert_eq!(status, 200, "{key:?} bypass={bypass}: {json}");
            assert_eq!(json["Labels"].as_array().unwrap().len(), 5, "{json}");
        }
    }
    assert_eq!(backend.signatures_verified(), 4);
    p.shutdown().await;
}

/// Regression (issue 9): operations other than DetectLabels went up with the client's
/// signature (and to whichever upstream came first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_other_rekognition_operations_are_resigned_too() {
    let (url, backend, _stop) = verifying_backend().await;
    let p = resigning_proxy(&url, "resign-detect-faces", |c| {
        c.aws.resign = Some(adacompress::config::ResignPolicy::Verified);
        c.aws.clients = vec![known_client()];
    })
    .await
    .unwrap();
    let (mut headers, body) = detect_labels();
    headers.insert(
        "x-amz-target",
        "RekognitionService.DetectFaces".parse().unwrap(),
    );
    Signer::new(
        AwsCredentials::new("AKIDAPP", "app-secret-key", None),
        REGION,
    )
    .resign(
        "POST",
        &format!("http://{}/", p.proxy_addr),
        &mut headers,
        &body,
        SystemTime::now(),
    )
    .unwrap();
    let (status, h, json) = post(&format!("http://{}", p.proxy_addr), headers, body).await;
    // The local backend does not serve DetectFaces: past the signature check it answers
    // Rekognition's 400 for the operation, not a 403.
    assert_ne!(status, 403, "{h:?} {json}");
    assert_eq!(backend.signatures_verified(), 1, "{json}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_implicit_any_on_a_non_loopback_listener_refuses_to_start() {
    let (url, _backend, _stop) = verifying_backend().await;
    for exposed in ["proxy", "admin"] {
        let err = resigning_proxy(&url, "resign-refuse-start", |c| {
            let any = "0.0.0.0:0".parse().unwrap();
            if exposed == "proxy" {
                c.proxy.listen = any;
            } else {
                c.proxy.admin_listen = any;
            }
        })
        .await
        .err()
        .expect("refused");
        let text = err.to_string();
        assert!(text.contains("aws.resign"), "{text}");
        assert!(text.contains("0.0.0.0"), "{text}");
    }
    // Explicit "any" starts (the operator says only the app reaches the listener).
    let p = resigning_proxy(&url, "resign-explicit-any", |c| {
        c.proxy.listen = "0.0.0.0:0".parse().unwrap();
        c.aws.resign = Some(adacompress::config::ResignPolicy::Any);
    })
    .await
    .unwrap();
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_without_credentials_readyz_says_rekognition_cannot_be_forwarded() {
    let (url, _backend, _stop) = verifying_backend().await;
    let p = common::proxy_to(&url, "resign-no-creds", |_| {}).await;
    let resp = reqwest::get(format!("http://{}/readyz", p.admin_addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["ready"], true, "{json}");
    assert_eq!(json["rekognition"]["forwardable"], false, "{json}");
    assert!(
        json["rekognition"]["reason"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );
    p.shutdown().await;

    let p = resigning_proxy(&url, "resign-creds", |_| {}).await.unwrap();
    let json: serde_json::Value = reqwest::get(format!("http://{}/readyz", p.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["rekognition"]["forwardable"], true, "{json}");
    assert_eq!(json["rekognition"]["resign"], "any", "{json}");
    p.shutdown().await;
}
