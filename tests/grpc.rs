//! The local backend's gRPC APIs (Google Vision `BatchAnnotateImages`, KServe v2
//! `inference.GRPCInferenceService`) end to end on loopback: the real backend and model,
//! called over HTTP/2 cleartext with prior knowledge (what gRPC insecure channels speak) by
//! hyper's own HTTP/2 client, on the same port as the REST routes over HTTP/1.1.

mod common;

use std::time::Duration;

use adacompress::backend::BackendConfig;
use adacompress::backend::grpc::{v2, vision};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;

/// A unary call's outcome: `grpc-status` (from the trailers, or the headers of a
/// trailers-only answer), `grpc-message`, and the answer message's bytes.
#[derive(Debug)]
struct Call {
    status: u32,
    message: String,
    payload: Vec<u8>,
}

/// An HTTP/2 connection to `url` (`http://host:port`), opened with prior knowledge.
async fn h2c(url: &str) -> SendRequest<Full<Bytes>> {
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake (h2c prior knowledge)");
    tokio::spawn(conn);
    send
}

/// Calls `path` with `request` as one length-prefixed message.
async fn call(send: &mut SendRequest<Full<Bytes>>, path: &str, request: &impl Message) -> Call {
    let encoded = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&encoded);
    let req = hyper::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "gRPC answers are HTTP 200");
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    // Trailers-only answers carry the status in the headers and have no body.
    let source = if headers.contains_key("grpc-status") {
        assert!(
            body.is_empty() && trailers.is_empty(),
            "trailers-only answer"
        );
        &headers
    } else {
        &trailers
    };
    let status = source["grpc-status"].to_str().unwrap().parse().unwrap();
    let message = source
        .get("grpc-message")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let payload = if body.is_empty() {
        Vec::new()
    } else {
        assert_eq!(body[0], 0, "uncompressed");
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, body.len() - 5, "one message");
        body[5..].to_vec()
    };
    Call {
        status,
        message,
        payload,
    }
}

const ANNOTATE: &str = "/google.cloud.vision.v1.ImageAnnotator/BatchAnnotateImages";
const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

fn annotate_entry(content: &[u8], max_results: i32) -> vision::AnnotateImageRequest {
    vision::AnnotateImageRequest {
        image: Some(vision::Image {
            content: content.to_vec(),
            source: None,
        }),
        features: vec![vision::Feature {
            r#type: vision::LABEL_DETECTION,
            max_results,
        }],
    }
}

/// A `ModelInfer` request as tritonclient sends one: the images in `raw_input_contents`,
/// each a u32 LE length then its bytes.
fn infer_request(images: &[&[u8]], top_k: Option<i64>) -> v2::ModelInferRequest {
    let mut raw = Vec::new();
    for image in images {
        raw.extend_from_slice(&u32::try_from(image.len()).unwrap().to_le_bytes());
        raw.extend_from_slice(image);
    }
    let mut parameters = std::collections::HashMap::new();
    if let Some(k) = top_k {
        parameters.insert(
            "top_k".to_owned(),
            v2::Parameter {
                choice: Some(v2::Choice::Int64(k)),
            },
        );
    }
    v2::ModelInferRequest {
        model_name: "classifier".to_owned(),
        model_version: String::new(),
        id: "req-7".to_owned(),
        parameters,
        inputs: vec![v2::InputTensor {
            name: "image".to_owned(),
            datatype: "BYTES".to_owned(),
            shape: vec![i64::try_from(images.len()).unwrap()],
            contents: None,
        }],
        outputs: Vec::new(),
        raw_input_contents: vec![raw],
    }
}

/// Splits a serialised BYTES tensor into strings.
fn strings_of(blob: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let length = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(rest[4..4 + length].to_vec()).unwrap());
        rest = &rest[4 + length..];
    }
    out
}

/// Both gRPC APIs answer from the same classifier as REST: the same top label for the
/// same photo, a corrupt image as Vision's per-image error 3 and KServe's
/// `INVALID_ARGUMENT`, health and metadata, `UNIMPLEMENTED` for other methods; HTTP/1.1 REST
/// keeps working on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_apis_answer_like_rest_on_the_same_port() {
    let (url, state, _stop) = common::spawn_backend().await;
    let panda = common::photo("objects", "3.jpg");
    let corrupt: &[u8] = b"\xff\xd8\xff\xe0 this is not a JPEG";

    // REST over HTTP/1.1, the reference answer.
    let http = reqwest::Client::new();
    let (status, _, rest) = common::google_annotate(&http, &url, &panda).await;
    assert_eq!(status, 200);
    let rest_top = rest["responses"][0]["labelAnnotations"][0]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rest_top, "lesser panda");

    let mut send = h2c(&url).await;

    // Vision: a photo, a corrupt image, and an entry without an image.
    let request = vision::BatchAnnotateImagesRequest {
        requests: vec![
            annotate_entry(&panda, 3),
            annotate_entry(corrupt, 0),
            annotate_entry(b"", 0),
        ],
    };
    let answer = call(&mut send, ANNOTATE, &request).await;
    assert_eq!(answer.status, 0, "{}", answer.message);
    let answer = vision::BatchAnnotateImagesResponse::decode(&answer.payload[..]).unwrap();
    assert_eq!(answer.responses.len(), 3);
    let labels = &answer.responses[0].label_annotations;
    assert_eq!(labels.len(), 3, "max_results is honoured");
    assert_eq!(labels[0].description, rest_top);
    let rest_score = rest["responses"][0]["labelAnnotations"][0]["score"]
        .as_f64()
        .unwrap();
    assert!((f64::from(labels[0].score) - rest_score).abs() < 1e-6);
    assert!(labels.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(answer.responses[0].error.is_none());
    let error = answer.responses[1].error.as_ref().expect("per-image error");
    assert_eq!(error.code, 3, "INVALID_ARGUMENT");
    assert!(
        error.message.contains("could not be decoded"),
        "{}",
        error.message
    );
    assert!(answer.responses[1].label_annotations.is_empty());
    let error = answer.responses[2].error.as_ref().expect("no image");
    assert_eq!(error.code, 3);
    assert!(
        error.message.contains("requests[2].image"),
        "{}",
        error.message
    );

    // KServe ModelInfer with a batch of two, top_k 4.
    let answer = call(&mut send, INFER, &infer_request(&[&panda, &panda], Some(4))).await;
    assert_eq!(answer.status, 0, "{}", answer.message);
    let answer = v2::ModelInferResponse::decode(&answer.payload[..]).unwrap();
    assert_eq!(answer.model_name, "classifier");
    assert_eq!(answer.id, "req-7");
    let names: Vec<&str> = answer.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["labels", "scores"]);
    assert!(answer.outputs.iter().all(|o| o.shape == [2, 4]));
    let labels = strings_of(&answer.raw_output_contents[0]);
    assert_eq!(labels.len(), 8);
    assert_eq!(labels[0], rest_top);
    assert_eq!(labels[4], rest_top);
    assert_eq!(answer.raw_output_contents[1].len(), 8 * 4, "FP32 scores");

    // A corrupt image fails the call, as KServe's REST route answers 400.
    let answer = call(&mut send, INFER, &infer_request(&[&panda, corrupt], None)).await;
    assert_eq!(answer.status, 3, "INVALID_ARGUMENT");
    assert!(
        answer.message.contains("image element 1"),
        "{}",
        answer.message
    );
    // A shape that does not match the elements.
    let mut bad_shape = infer_request(&[&panda], None);
    bad_shape.inputs[0].shape = vec![2];
    let answer = call(&mut send, INFER, &bad_shape).await;
    assert_eq!(answer.status, 3);
    assert!(
        answer.message.contains("inputs[0].shape"),
        "{}",
        answer.message
    );

    // Health and metadata.
    let empty = v2::Empty {};
    let live = call(
        &mut send,
        "/inference.GRPCInferenceService/ServerLive",
        &empty,
    )
    .await;
    assert!(
        v2::ServerLiveResponse::decode(&live.payload[..])
            .unwrap()
            .live
    );
    let ready = call(
        &mut send,
        "/inference.GRPCInferenceService/ServerReady",
        &empty,
    )
    .await;
    assert!(
        v2::ServerReadyResponse::decode(&ready.payload[..])
            .unwrap()
            .ready
    );
    let model = v2::ModelRef {
        name: "densenet".to_owned(),
        version: String::new(),
    };
    let ready = call(
        &mut send,
        "/inference.GRPCInferenceService/ModelReady",
        &model,
    )
    .await;
    assert!(
        v2::ModelReadyResponse::decode(&ready.payload[..])
            .unwrap()
            .ready
    );
    let meta = call(
        &mut send,
        "/inference.GRPCInferenceService/ModelMetadata",
        &model,
    )
    .await;
    let meta = v2::ModelMetadataResponse::decode(&meta.payload[..]).unwrap();
    assert_eq!(meta.name, "densenet");
    assert_eq!(meta.versions, ["1"]);
    assert_eq!(meta.inputs[0].datatype, "BYTES");

    // Methods not served.
    for path in [
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/google.cloud.vision.v1.ImageAnnotator/AsyncBatchAnnotateFiles",
        "/grpc.health.v1.Health/Check",
    ] {
        let answer = call(&mut send, path, &empty).await;
        assert_eq!(answer.status, 12, "{path}: UNIMPLEMENTED");
        assert!(answer.message.contains(path), "{}", answer.message);
    }

    // Compressed messages are refused, naming the encoding.
    let req = hyper::Request::post(format!("http://localhost{INFER}"))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .body(Full::new(Bytes::from_static(&[1, 0, 0, 0, 1, 0])))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "12");

    // REST on the same port: over HTTP/2 too, and over HTTP/1.1 afterwards.
    let req = hyper::Request::get("http://localhost/v2/health/ready")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    assert_eq!(health.status(), 200);
    let missing = http
        .get(format!("{url}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "non-gRPC requests keep their 404");
    assert_eq!(state.images_classified(), 1 + 1 + 2 + 1);
}

/// The backend's limits hold for gRPC: a full queue (REST's 429) is `RESOURCE_EXHAUSTED`,
/// shared with the REST routes, and so is a message over `max_body_bytes`, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_respect_the_queue_and_the_size_limit() {
    let mut cfg = BackendConfig::new(common::lite0());
    cfg.concurrency = 1;
    cfg.queue = 0;
    cfg.max_body_bytes = 4_000_000;
    let (url, state, _stop) = common::spawn_backend_with(cfg).await;
    let photo = common::photo("street", "0.jpg");
    assert!(photo.len() * 16 < 4_000_000, "the batch fits the limit");
    let mut send = h2c(&url).await;

    // A long Vision batch holds the only slot; a ModelInfer on the same connection is
    // refused at once.
    let batch = vision::BatchAnnotateImagesRequest {
        requests: vec![annotate_entry(&photo, 1); 16],
    };
    let long = {
        let mut send = send.clone();
        tokio::spawn(async move { call(&mut send, ANNOTATE, &batch).await })
    };
    let started = std::time::Instant::now();
    while state.images_classified() == 0 {
        assert!(
            !long.is_finished(),
            "the batch ended before classifying an image"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the batch never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = call(&mut send, INFER, &infer_request(&[&photo], None)).await;
    assert_eq!(refused.status, 8, "RESOURCE_EXHAUSTED");
    assert!(refused.message.contains("saturated"), "{}", refused.message);
    let long = long.await.unwrap();
    assert_eq!(long.status, 0);
    let long = vision::BatchAnnotateImagesResponse::decode(&long.payload[..]).unwrap();
    assert_eq!(long.responses.len(), 16);
    assert!(
        long.responses
            .iter()
            .all(|r| r.label_annotations.len() == 1)
    );

    // Over the size limit.
    let big = vec![0u8; 4_100_000];
    let answer = call(&mut send, INFER, &infer_request(&[&big], None)).await;
    assert_eq!(answer.status, 8, "RESOURCE_EXHAUSTED");
    assert!(
        answer.message.contains("4000000 bytes"),
        "{}",
        answer.message
    );
    // More than 16 Vision images is the REST route's request error.
    let many = vision::BatchAnnotateImagesRequest {
        requests: vec![annotate_entry(b"x", 1); 17],
    };
    let answer = call(&mut send, ANNOTATE, &many).await;
    assert_eq!(answer.status, 3, "INVALID_ARGUMENT");
    assert!(answer.message.contains("16"), "{}", answer.message);
    assert_eq!(state.images_classified(), 16);
}

/// The image bytes the upstream received for an API through the proxy, from the proxy's
/// counters: `adacompress_image_bytes_{in,out}_total{protocol="…"}`.
fn image_bytes(metrics: &str, protocol: &str) -> (f64, f64) {
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{protocol=\"{protocol}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("adacompress_image_bytes_in_total"),
        value("adacompress_image_bytes_out_total"),
    )
}

/// [`image_bytes`] of Vision calls.
fn google_bytes(metrics: &str) -> (f64, f64) {
    image_bytes(metrics, "google")
}

/// gRPC through the proxy (issue 9 item 3): Vision's `BatchAnnotateImages` over h2c is
/// compressed like its REST route and answered with the backend's own labels and status;
/// an image the proxy cannot decode goes up as sent and the backend's per-image error comes
/// back; KServe's health goes to the KServe upstream untouched; a service no adapter knows
/// is `UNIMPLEMENTED` and a dead upstream `UNAVAILABLE`, as gRPC statuses a client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_through_the_proxy_is_compressed_and_answers_like_direct() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let p = common::proxy_to(&url, "grpc-proxy", |c| {
        c.agent.fixed = Some("q70@512".to_owned());
    })
    .await;
    let proxy_url = format!("http://{}", p.proxy_addr);
    let panda = common::photo("objects", "3.jpg");
    let corrupt: &[u8] = b"\xff\xd8\xff\xe0 this is not a JPEG";
    let request = vision::BatchAnnotateImagesRequest {
        requests: vec![annotate_entry(&panda, 3), annotate_entry(corrupt, 0)],
    };

    let mut direct = h2c(&url).await;
    let want = call(&mut direct, ANNOTATE, &request).await;
    assert_eq!(want.status, 0, "{}", want.message);
    let want = vision::BatchAnnotateImagesResponse::decode(&want.payload[..]).unwrap();

    let mut through = h2c(&proxy_url).await;
    let got = call(&mut through, ANNOTATE, &request).await;
    assert_eq!(got.status, 0, "{}", got.message);
    let got = vision::BatchAnnotateImagesResponse::decode(&got.payload[..]).unwrap();
    assert_eq!(got.responses.len(), 2);
    assert_eq!(
        got.responses[0].label_annotations[0].description,
        want.responses[0].label_annotations[0].description,
        "same top label through the proxy"
    );
    assert_eq!(
        got.responses[1].error.as_ref().map(|e| e.code),
        Some(3),
        "the corrupt image went up as sent and the backend's error came back"
    );
    let (bytes_in, bytes_out) = google_bytes(&common::metrics_of(&p).await);
    assert_eq!(bytes_in, (panda.len() + corrupt.len()) as f64);
    // The photo is already a small JPEG (33 KB at 512 px): q70 saves a few KB; the corrupt
    // image goes up as it came.
    assert!(
        bytes_out < bytes_in - 1000.0,
        "the photo went up at q70@512: {bytes_out} of {bytes_in} bytes"
    );

    // KServe health goes to the KServe upstream untouched.
    let live = call(
        &mut through,
        "/inference.GRPCInferenceService/ServerLive",
        &v2::Empty {},
    )
    .await;
    assert_eq!(live.status, 0, "{}", live.message);
    assert!(
        v2::ServerLiveResponse::decode(&live.payload[..])
            .unwrap()
            .live
    );

    // A service no adapter knows: UNIMPLEMENTED, as a status the client can read.
    let unknown = call(&mut through, "/grpc.health.v1.Health/Check", &v2::Empty {}).await;
    assert_eq!(unknown.status, 12, "{}", unknown.message);
    assert!(
        unknown.message.contains("grpc.health.v1.Health"),
        "{}",
        unknown.message
    );
    p.shutdown().await;

    // A dead upstream: UNAVAILABLE.
    let dead = common::proxy_to("http://127.0.0.1:9", "grpc-dead", |c| {
        c.agent.fixed = Some("q70@512".to_owned());
    })
    .await;
    let mut to_dead = h2c(&format!("http://{}", dead.proxy_addr)).await;
    let down = call(&mut to_dead, ANNOTATE, &request).await;
    assert_eq!(down.status, 14, "{}", down.message);
    dead.shutdown().await;
}

/// KServe v2 `ModelInfer` through the proxy (issue 9 item 3): a tritonclient-like request
/// (the images in `raw_input_contents`) is compressed like the REST `infer` route and
/// answered with the backend's own labels; the same images in `contents.bytes_contents`
/// too; a corrupt image goes up as sent and the backend's `INVALID_ARGUMENT` comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_model_infer_through_the_proxy_is_compressed_and_answers_like_direct() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let p = common::proxy_to(&url, "grpc-infer", |c| {
        c.agent.fixed = Some("q70@512".to_owned());
    })
    .await;
    let proxy_url = format!("http://{}", p.proxy_addr);
    let panda = common::photo("objects", "3.jpg");
    let corrupt: &[u8] = b"\xff\xd8\xff\xe0 this is not a JPEG";
    let request = infer_request(&[&panda], Some(3));

    let mut direct = h2c(&url).await;
    let want = call(&mut direct, INFER, &request).await;
    assert_eq!(want.status, 0, "{}", want.message);
    let want = v2::ModelInferResponse::decode(&want.payload[..]).unwrap();
    let want_labels = strings_of(&want.raw_output_contents[0]);

    let mut through = h2c(&proxy_url).await;
    let got = call(&mut through, INFER, &request).await;
    assert_eq!(got.status, 0, "{}", got.message);
    let got = v2::ModelInferResponse::decode(&got.payload[..]).unwrap();
    assert_eq!(got.model_name, "classifier");
    assert_eq!(
        got.id, "req-7",
        "the request's other fields went up as sent"
    );
    assert!(got.outputs.iter().all(|o| o.shape == [1, 3]), "top_k 3");
    let got_labels = strings_of(&got.raw_output_contents[0]);
    assert_eq!(
        got_labels[0], want_labels[0],
        "same top label through the proxy"
    );
    let (bytes_in, bytes_out) = image_bytes(&common::metrics_of(&p).await, "kserve");
    assert_eq!(bytes_in, panda.len() as f64);
    assert!(
        bytes_out < bytes_in - 1000.0,
        "the photo went up at q70@512: {bytes_out} of {bytes_in} bytes"
    );

    // The same image in contents.bytes_contents (no raw contents).
    let mut in_contents = infer_request(&[], Some(3));
    in_contents.raw_input_contents.clear();
    in_contents.inputs[0].shape = vec![1];
    in_contents.inputs[0].contents = Some(v2::TensorContents {
        bytes_contents: vec![panda.clone()],
    });
    let got = call(&mut through, INFER, &in_contents).await;
    assert_eq!(got.status, 0, "{}", got.message);
    let got = v2::ModelInferResponse::decode(&got.payload[..]).unwrap();
    assert_eq!(strings_of(&got.raw_output_contents[0])[0], want_labels[0]);
    let (again_in, again_out) = image_bytes(&common::metrics_of(&p).await, "kserve");
    assert_eq!(again_in, 2.0 * panda.len() as f64);
    assert!(again_out - bytes_out < again_in - bytes_in - 1000.0);

    // A corrupt image beside the photo: the photo is compressed, the corrupt image goes up
    // as it came, and the backend's INVALID_ARGUMENT comes back.
    let bad = call(
        &mut through,
        INFER,
        &infer_request(&[&panda, corrupt], None),
    )
    .await;
    assert_eq!(bad.status, 3, "INVALID_ARGUMENT: {}", bad.message);
    assert!(bad.message.contains("image element 1"), "{}", bad.message);
    let (last_in, last_out) = image_bytes(&common::metrics_of(&p).await, "kserve");
    assert_eq!(last_in - again_in, (panda.len() + corrupt.len()) as f64);
    assert!(last_out - again_out < (panda.len() + corrupt.len()) as f64 - 1000.0);

    // The service's other methods still go up untouched.
    let ready = call(
        &mut through,
        "/inference.GRPCInferenceService/ModelReady",
        &v2::ModelRef {
            name: "classifier".to_owned(),
            version: String::new(),
        },
    )
    .await;
    assert_eq!(ready.status, 0, "{}", ready.message);
    assert!(
        v2::ModelReadyResponse::decode(&ready.payload[..])
            .unwrap()
            .ready
    );
    p.shutdown().await;
}

/// The live pair learns from gRPC traffic as from REST: Vision gRPC calls through a proxy on
/// the calibrated agent are audited (the original and candidate pairs re-sent over HTTP/2,
/// their protobuf answers compared), so `/agent` counts audits and estimation bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_pair_audits_grpc_calls() {
    for kserve in [false, true] {
        live_pair_audits(kserve).await;
    }
}

/// One API's half of [`the_live_pair_audits_grpc_calls`].
async fn live_pair_audits(kserve: bool) {
    use adacompress::codec::{self, EncoderMode, Limits};
    let (url, backend_state, _stop) = common::spawn_backend().await;
    let p = common::proxy_to(&url, "grpc-live-pair", |c| {
        c.pair.learn_share = 10.0;
        c.pair.max_audit_rate = 1.0;
    })
    .await;
    // A phone-like upload (2048 px wide at quality 95): the prior q95@960 makes it smaller.
    let photo = codec::decode(&common::photo("objects", "3.jpg"), &Limits::default())
        .unwrap()
        .image;
    let big = image::imageops::resize(&photo, 2048, 2048, image::imageops::FilterType::Triangle);
    let upload = codec::encode_jpeg(&big, 95, EncoderMode::default()).unwrap();
    let request = vision::BatchAnnotateImagesRequest {
        requests: vec![annotate_entry(&upload, 3)],
    };
    let before = backend_state.images_classified();
    let mut through = h2c(&format!("http://{}", p.proxy_addr)).await;
    for _ in 0..4 {
        let got = call(&mut through, ANNOTATE, &request).await;
        assert_eq!(got.status, 0, "{}", got.message);
        let got = vision::BatchAnnotateImagesResponse::decode(&got.payload[..]).unwrap();
        assert_eq!(
            got.responses[0].label_annotations[0].description,
            "lesser panda"
        );
    }
    // Audits run off the request path: wait for them (at most 60 s).
    let agent = |p: &adacompress::proxy::server::Server| {
        let admin = p.admin_addr;
        async move {
            reqwest::get(format!("http://{admin}/agent"))
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let started = std::time::Instant::now();
    let mut status = agent(&p).await;
    while status["pair"]["audits"].as_u64().unwrap_or(0) == 0
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = agent(&p).await;
    }
    let pair = &status["pair"];
    assert!(
        pair["audits"].as_u64().unwrap() >= 1,
        "kserve {kserve}: {pair}"
    );
    assert!(pair["estimation_bytes"].as_u64().unwrap() > 0, "{pair}");
    assert!(
        backend_state.images_classified() > before + 4,
        "audit uploads reached the backend beside the 4 calls' images"
    );
    p.shutdown().await;
}

/// A private CA and a `localhost` server certificate it signed, made for one test: the CA's
/// PEM, and the server's certificate chain and key as rustls takes them.
struct PrivateCa {
    ca_pem: String,
    server_chain: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    server_key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
}

fn private_ca() -> PrivateCa {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "adacompress test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    PrivateCa {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone()],
        server_key: tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der())
            .into(),
    }
}

/// The local backend's router behind TLS on a loopback port (`https://localhost:PORT`),
/// HTTP/1.1 or HTTP/2 as ALPN settles (hyper-util's auto builder), as a self-hosted
/// KServe/Triton behind an ingress with an internal CA would be. Connections whose
/// handshake fails (a client without the CA) are dropped. Stops with the runtime.
async fn spawn_tls_backend(ca: &PrivateCa) -> String {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(ca.server_chain.clone(), ca.server_key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let state = Arc::new(
        adacompress::backend::Backend::load(&BackendConfig::new(common::lite0())).unwrap(),
    );
    let app = adacompress::backend::app(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    format!("https://localhost:{port}")
}

/// `proxy.upstream_ca_file`: upstreams over TLS behind a private CA. With the CA file, a
/// REST `images:annotate` and a gRPC `BatchAnnotateImages` through the proxy reach the
/// TLS backend (the gRPC call over HTTP/2 negotiated by ALPN) and come back with its
/// labels, compressed on the way; without it, the same calls end at once in the proxy's
/// own errors (502 `upstream_unreachable`, gRPC `UNAVAILABLE`), not a hang. A CA file that
/// cannot be read or holds no certificate stops `serve` with an error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_behind_a_private_ca_over_tls() {
    let ca = private_ca();
    let upstream = spawn_tls_backend(&ca).await;
    let dir = common::temp_dir("tls-upstream");
    let ca_file = dir.join("internal-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let panda = common::photo("objects", "3.jpg");

    // Direct, over TLS with the CA: the reference answer.
    let direct = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let (status, _, want) = common::google_annotate(&direct, &upstream, &panda).await;
    assert_eq!(status, 200, "{want}");
    let want = want["responses"][0]["labelAnnotations"][0]["description"].clone();
    assert!(want.is_string(), "{want}");

    let p = common::proxy_to(&upstream, "tls-upstream", |c| {
        c.agent.fixed = Some("q70@512".to_owned());
        c.proxy.upstream_ca_file = Some(ca_file.clone());
    })
    .await;
    let proxy_url = format!("http://{}", p.proxy_addr);
    let plain = reqwest::Client::new();
    let (status, action, got) = common::google_annotate(&plain, &proxy_url, &panda).await;
    assert_eq!(status, 200, "{got}");
    assert!(action.contains("q70"), "compressed on the way: {action}");
    assert_eq!(
        got["responses"][0]["labelAnnotations"][0]["description"], want,
        "REST through the proxy over TLS"
    );
    let request = vision::BatchAnnotateImagesRequest {
        requests: vec![annotate_entry(&panda, 3)],
    };
    let mut through = h2c(&proxy_url).await;
    let answer = call(&mut through, ANNOTATE, &request).await;
    assert_eq!(answer.status, 0, "{}", answer.message);
    let answer = vision::BatchAnnotateImagesResponse::decode(&answer.payload[..]).unwrap();
    assert_eq!(
        answer.responses[0].label_annotations[0].description,
        want.as_str().unwrap_or_default(),
        "gRPC through the proxy over TLS"
    );
    let (bytes_in, bytes_out) = google_bytes(&common::metrics_of(&p).await);
    assert_eq!(bytes_in, 2.0 * panda.len() as f64);
    assert!(bytes_out < bytes_in, "{bytes_out} of {bytes_in} bytes");
    p.shutdown().await;

    // Without the CA the backend's certificate is unknown: the proxy's own errors, fast.
    let untrusting = common::proxy_to(&upstream, "tls-upstream-no-ca", |c| {
        c.agent.fixed = Some("q70@512".to_owned());
    })
    .await;
    let proxy_url = format!("http://{}", untrusting.proxy_addr);
    let started = std::time::Instant::now();
    let rest = adacompress::protocol::Protocol::GoogleVision.client_request(&panda, 5);
    let mut b = plain
        .post(format!("{proxy_url}{}", rest.path_and_query))
        .body(rest.body);
    for (k, v) in &rest.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let resp = b.send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["x-adacompress-error"],
        "upstream_unreachable"
    );
    let mut to_untrusting = h2c(&proxy_url).await;
    let refused = call(&mut to_untrusting, ANNOTATE, &request).await;
    assert_eq!(refused.status, 14, "UNAVAILABLE: {}", refused.message);
    assert!(
        refused.message.contains("invalid peer certificate"),
        "the reason is the certificate: {}",
        refused.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a failed handshake is not a timeout: {:?}",
        started.elapsed()
    );
    untrusting.shutdown().await;

    // A CA file that cannot be used stops `serve` at start-up, naming the key and the path.
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is no certificate\n").unwrap();
    let not_der = dir.join("not-der.pem");
    std::fs::write(
        &not_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (bad, says) in [
        (dir.join("missing.pem"), "No such file"),
        (not_pem, "holds no PEM certificate"),
        (not_der, "certificate 1 of 1 is not a usable CA certificate"),
    ] {
        let mut cfg = adacompress::config::Config::default();
        cfg.proxy.listen = "127.0.0.1:0".parse().unwrap();
        cfg.proxy.admin_listen = "127.0.0.1:0".parse().unwrap();
        cfg.agent.checkpoint = common::calibrated_agent();
        cfg.state.dir = common::temp_dir("tls-upstream-bad-ca");
        cfg.upstreams.insert("google".to_owned(), upstream.clone());
        cfg.proxy.upstream_ca_file = Some(bad.clone());
        let err = adacompress::proxy::server::start(cfg, None)
            .await
            .err()
            .expect("serve refuses the CA file")
            .to_string();
        assert!(
            err.starts_with(&format!("proxy.upstream_ca_file = {}: ", bad.display()))
                && err.contains(says),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
