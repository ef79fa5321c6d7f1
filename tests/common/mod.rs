//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use adacompress::backend::{self, Backend, BackendConfig};
use adacompress::protocol::ClientRequest;
use base64::Engine as _;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed EfficientNet-Lite0 model.
pub fn lite0() -> PathBuf {
    root().join("models/efficientnet-lite0.onnx")
}

/// A folder of the sample photos; panics with the command to run when missing.
pub fn photos(set: &str) -> PathBuf {
    let dir = root().join("data/photos").join(set);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch_photos.sh (scripts/test.sh does it for you)",
        dir.display()
    );
    dir
}

/// Bytes of one sample photo.
pub fn photo(set: &str, name: &str) -> Vec<u8> {
    std::fs::read(photos(set).join(name)).expect("sample photo")
}

/// A phone-like upload of the photo at `path`: enlarged to 2048 px wide, saved at quality
/// 95. The shipped pair (q95 at ≤ 960 px) shrinks it; a 512 px sample photo it leaves as
/// sent (`not_smaller`).
pub fn phone_upload(path: &std::path::Path) -> Vec<u8> {
    upload_at(path, 2048)
}

/// A sample photo resized to `width` px wide and saved at JPEG q95.
pub fn upload_at(path: &std::path::Path, width: u32) -> Vec<u8> {
    use adacompress::codec::{self, EncoderMode, Limits};
    let photo = codec::decode(
        &std::fs::read(path).expect("sample photo"),
        &Limits::default(),
    )
    .expect("a decodable photo")
    .image;
    let (w, h) = photo.dimensions();
    let big = image::imageops::resize(
        &photo,
        width,
        width * h / w,
        image::imageops::FilterType::Triangle,
    );
    codec::encode_jpeg(&big, 95, EncoderMode::default()).expect("encode")
}

/// Turns the live pair's audits off. Audits upload the original and candidate pairs beside
/// the client's request, off the request path: a test that counts or reads what the upstream
/// saw, over more than a couple of images, turns them off.
pub fn no_audits(cfg: &mut adacompress::config::Config) {
    cfg.pair.max_audit_rate = 0.0;
}

/// A local backend (lite0 at its native 224 px) on a free loopback port.
/// Returns its base URL, its state (for request counts) and a shutdown sender.
pub async fn spawn_backend() -> (String, Arc<Backend>, tokio::sync::oneshot::Sender<()>) {
    spawn_backend_with(BackendConfig::new(lite0())).await
}

/// A local backend with the given settings on a free loopback port.
pub async fn spawn_backend_with(
    cfg: BackendConfig,
) -> (String, Arc<Backend>, tokio::sync::oneshot::Sender<()>) {
    let state = Arc::new(Backend::load(&cfg).expect("load backend"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _handle) = backend::spawn_local(state.clone(), async move {
        let _ = rx.await;
    })
    .await
    .expect("bind backend");
    (format!("http://{addr}"), state, tx)
}

/// A fixture from `tests/fixtures/protocol/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = root().join("tests/fixtures/protocol").join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()))
}

/// Standard base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The value of one un-labelled or labelled sample in a Prometheus exposition (0 when
/// absent).
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A `POST` of `request` (its path, headers and body) to `base` (a proxy or a backend).
pub fn post(
    http: &reqwest::Client,
    base: &str,
    request: &ClientRequest,
) -> reqwest::RequestBuilder {
    let mut builder = http
        .post(format!("{base}{}", request.path_and_query))
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
}

/// A fresh temporary folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "adacompress-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// The shipped agent (`agent.checkpoint` in `config/adacompress.toml`): the calibrated
/// checkpoint, whose images all go up at the live pair (the only agent `serve` runs). Every
/// proxy the tests start runs it.
pub fn calibrated_agent() -> PathBuf {
    root().join("models/agent-calibrated.json")
}

/// A proxy on loopback ports with every protocol routed to `upstream`, the shipped
/// (calibrated) agent, state in a fresh folder named by `tag`; `tweak` adjusts the config
/// before it starts.
pub async fn proxy_to(
    upstream: &str,
    tag: &str,
    tweak: impl FnOnce(&mut adacompress::config::Config),
) -> adacompress::proxy::server::Server {
    proxy_with_agent(upstream, tag, calibrated_agent(), tweak)
        .await
        .expect("proxy starts")
}

/// [`proxy_to`] with `checkpoint` as `agent.checkpoint`; the start-up error as it is.
pub async fn proxy_with_agent(
    upstream: &str,
    tag: &str,
    checkpoint: PathBuf,
    tweak: impl FnOnce(&mut adacompress::config::Config),
) -> Result<adacompress::proxy::server::Server, adacompress::proxy::server::ServeError> {
    let mut cfg = adacompress::config::Config::default();
    cfg.proxy.listen = "127.0.0.1:0".parse().unwrap();
    cfg.proxy.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.agent.checkpoint = checkpoint;
    cfg.state.dir = temp_dir(tag);
    for p in adacompress::protocol::Protocol::ALL {
        cfg.upstreams
            .insert(p.name().to_owned(), upstream.to_owned());
    }
    tweak(&mut cfg);
    adacompress::proxy::server::start(cfg, None).await
}

/// A KServe v2 binary-data `infer` request of `n` zero-length `BYTES` elements: the
/// headers it needs and its body (4 bytes an element after the JSON header).
pub fn kserve_empty_elements(n: usize) -> (Vec<(String, String)>, Vec<u8>) {
    let header = serde_json::json!({"inputs": [{
        "name": "image", "shape": [n], "datatype": "BYTES",
        "parameters": {"binary_data_size": 4 * n},
    }]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.resize(body.len() + 4 * n, 0);
    let headers = vec![
        ("content-type".into(), "application/octet-stream".into()),
        (
            "inference-header-content-length".into(),
            header.len().to_string(),
        ),
    ];
    (headers, body)
}

/// A running proxy's `/metrics` text (its admin listener).
pub async fn metrics_of(p: &adacompress::proxy::server::Server) -> String {
    reqwest::get(format!("http://{}/metrics", p.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A running proxy's `GET /agent` (its admin listener).
pub async fn agent_of(p: &adacompress::proxy::server::Server) -> serde_json::Value {
    reqwest::get(format!("http://{}/agent", p.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The live pair a running proxy serves now (`pair.served` of `GET /agent`), e.g. `q95@960`.
pub async fn served_pair(p: &adacompress::proxy::server::Server) -> String {
    let agent = agent_of(p).await;
    agent["pair"]["served"]
        .as_str()
        .unwrap_or_else(|| panic!("no live pair in {agent}"))
        .to_owned()
}

/// Sends `image` as a Google Vision `images:annotate` request to `base` (a proxy or a
/// backend); returns the status, `X-AdaCompress-Action` (empty when absent) and the JSON
/// answer.
pub async fn google_annotate(
    http: &reqwest::Client,
    base: &str,
    image: &[u8],
) -> (u16, String, serde_json::Value) {
    let req = adacompress::protocol::Protocol::GoogleVision.client_request(image, 5);
    let resp = post(http, base, &req).send().await.expect("an answer");
    let status = resp.status().as_u16();
    let action = resp
        .headers()
        .get("x-adacompress-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, action, resp.json().await.expect("a JSON answer"))
}
