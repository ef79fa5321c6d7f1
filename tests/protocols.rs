//! Every cloud wire format end to end on loopback: our client side builds the request
//! ([`Protocol::client_request`]), reqwest sends it to the real local backend (real model,
//! real routes), our parser reads the answer. One photo per protocol keeps this quick.

mod common;

use std::sync::Arc;
use std::time::Duration;

use adacompress::backend::faces::FaceDetector;
use adacompress::backend::{BackendConfig, DetectFaces};
use adacompress::codec::{self, EncoderMode, Limits};
use adacompress::protocol::{
    Answer, ClientRequest, Label, Protocol, ProtocolError, ProxyRequest, Region, facepp, kserve,
};
use adacompress::proxy::compress::ImageWire;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine as _;

/// Sends `request` to the backend at `url`, asserts a 200 and parses the answer.
async fn answer_of(
    http: &reqwest::Client,
    url: &str,
    protocol: Protocol,
    request: &ClientRequest,
) -> Answer {
    let (status, _, body) = send(http, url, request).await;
    assert_eq!(
        status,
        200,
        "{protocol}: {}",
        String::from_utf8_lossy(&body)
    );
    protocol
        .parse_answer(status, &body)
        .unwrap_or_else(|e| panic!("{protocol}: {e}"))
}

/// Sends a client request to the backend at `url`: (status, headers, body).
async fn send(
    http: &reqwest::Client,
    url: &str,
    request: &ClientRequest,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = common::post(http, url, request)
        .send()
        .await
        .expect("backend reachable");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("answer body").to_vec();
    (status, headers, body)
}

/// Labels each API answers when asked for 10: the APIs without a parameter for it answer
/// their own number.
fn expected_labels(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Baidu | Protocol::FacePlusPlus | Protocol::TorchServe => 5,
        Protocol::GoogleVision | Protocol::Rekognition | Protocol::Azure | Protocol::KServe => 10,
    }
}

/// Where each protocol sits in [`Protocol::ALL`]. No wildcard on purpose: a new variant does
/// not compile until it has a position here, and the round trip below fails until
/// `Protocol::ALL` holds it at that position.
fn position(protocol: Protocol) -> usize {
    match protocol {
        Protocol::GoogleVision => 0,
        Protocol::Rekognition => 1,
        Protocol::Baidu => 2,
        Protocol::FacePlusPlus => 3,
        Protocol::Azure => 4,
        Protocol::KServe => 5,
        Protocol::TorchServe => 6,
    }
}

/// `request`'s headers with `changes` applied (same name replaced), as a list and as a map.
fn with_headers(
    request: &[(String, String)],
    changes: &[(String, String)],
) -> (Vec<(String, String)>, HeaderMap) {
    let mut list: Vec<(String, String)> = request
        .iter()
        .filter(|(name, _)| !changes.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
        .cloned()
        .collect();
    list.extend(changes.iter().cloned());
    let mut map = HeaderMap::new();
    for (name, value) in &list {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    (list, map)
}

/// One round trip per protocol, every layer an API adapter has: the request its client sends
/// with a real JPEG is recognised by the proxy, its image extracted through the proxy's
/// [`ImageWire`] (the bytes sent), replaced by a smaller JPEG; the rewritten request parses on
/// the backend side with the new bytes, the backend's rendering of an answer parses back into
/// the same labels, and the real local backend on loopback answers the rewritten request
/// with labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_round_trips_through_proxy_and_backend() {
    let (url, state, _stop) = common::spawn_backend().await;
    let http = reqwest::Client::new();
    let original = common::photo("objects", "2.jpg");
    let decoded = codec::decode(&original, &Limits::default()).expect("the photo decodes");
    let smaller = codec::encode_jpeg(&decoded.image, 30, EncoderMode::FastOptimized)
        .expect("re-encodes at q30");
    assert!(smaller.len() < original.len());
    let rendered_answer = Answer::new(vec![
        Label {
            name: "African elephant".to_owned(),
            score: 0.875,
        },
        Label {
            name: "tusker".to_owned(),
            score: 0.125,
        },
    ]);
    for (i, protocol) in Protocol::ALL.into_iter().enumerate() {
        assert_eq!(
            position(protocol),
            i,
            "{protocol} is not at its place in ALL"
        );
        let wire: &dyn ImageWire = &protocol;

        // Proxy side: recognise, extract, replace.
        let request = protocol.client_request(&original, 10);
        let (_, headers) = with_headers(&request.headers, &[]);
        let path = request.path_and_query.as_str();
        assert_eq!(
            Protocol::recognize(&Method::POST, path, &headers),
            Some(protocol)
        );
        let sent = ProxyRequest {
            path_and_query: path,
            headers: &headers,
            body: &request.body,
        };
        let slots = wire
            .extract_images(&sent)
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(slots.len(), 1, "{protocol}");
        assert_eq!(slots[0].bytes(), Some(&original[..]), "{protocol}");
        let rewritten = wire
            .replace_images(&sent, &[(0, smaller.clone())])
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let (new_list, new_headers) = with_headers(&request.headers, &rewritten.headers);
        assert_eq!(
            Protocol::recognize(&Method::POST, path, &new_headers),
            Some(protocol)
        );

        // Backend side, in process: the new bytes parse; a rendered answer parses back.
        let parsed = protocol
            .parse_backend_request(path, &new_headers, &rewritten.body)
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(parsed.images.len(), 1, "{protocol}");
        let image = parsed.images[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(image.bytes, smaller, "{protocol}");
        let rendered =
            protocol.render_backend_response(&parsed.reply, vec![Ok(rendered_answer.clone())]);
        let back = protocol
            .parse_answer(rendered.status.as_u16(), &rendered.body)
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(
            back.labels.len(),
            rendered_answer.labels.len(),
            "{protocol}"
        );
        for (got, want) in back.labels.iter().zip(&rendered_answer.labels) {
            assert_eq!(got.name, want.name, "{protocol}");
            assert!((got.score - want.score).abs() < 1e-3, "{protocol}: {got:?}");
        }

        // On the wire: the real backend answers the rewritten request with labels.
        let upload = ClientRequest {
            path_and_query: request.path_and_query.clone(),
            headers: new_list,
            body: rewritten.body,
        };
        let answer = answer_of(&http, &url, protocol, &upload).await;
        assert!(!answer.labels.is_empty(), "{protocol}: {answer:?}");
    }
    assert_eq!(state.images_classified(), Protocol::ALL.len() as u64);
}

/// The elephant photo through every API gives Google's top-1, with scores in `0..=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_agrees_with_google_on_the_top1() {
    let (url, state, _stop) = common::spawn_backend().await;
    let http = reqwest::Client::new();
    let elephant = common::photo("objects", "2.jpg");
    let mut google_top1 = None;
    for protocol in Protocol::ALL {
        let request = protocol.client_request(&elephant, 10);
        let answer = answer_of(&http, &url, protocol, &request).await;
        let top1 = answer.top1().map(str::to_owned);
        let google = google_top1.get_or_insert_with(|| top1.clone());
        assert_eq!(&top1, google, "{protocol}: {answer:?}");
        assert_eq!(answer.labels.len(), expected_labels(protocol), "{protocol}");
        assert!(answer.labels.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(
            answer.labels[0].score > 0.3 && answer.labels[0].score <= 1.0,
            "{protocol}: {answer:?}"
        );
    }
    assert_eq!(google_top1.flatten().as_deref(), Some("African elephant"));
    assert_eq!(state.images_classified(), Protocol::ALL.len() as u64);
}

/// A KServe batch of two photos in binary data, outputs asked back in binary: one answer
/// per photo, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_batch_with_binary_outputs() {
    let (url, state, _stop) = common::spawn_backend().await;
    let photos = [
        common::photo("objects", "3.jpg"),
        common::photo("objects", "4.jpg"),
    ];
    let blob: Vec<u8> = photos
        .iter()
        .flat_map(|p| [&(p.len() as u32).to_le_bytes()[..], p].concat())
        .collect();
    let header = serde_json::json!({
        "id": "batch-7",
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": blob.len()}}],
        "parameters": {"binary_data_output": true, "top_k": 3},
    })
    .to_string();
    let request = ClientRequest {
        path_and_query: "/v2/models/lite0/versions/1/infer".to_owned(),
        headers: vec![
            (
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned(),
            ),
            (
                "Inference-Header-Content-Length".to_owned(),
                header.len().to_string(),
            ),
        ],
        body: [header.as_bytes(), &blob].concat(),
    };
    let (status, headers, body) = send(&reqwest::Client::new(), &url, &request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/octet-stream");
    let length: usize = headers[kserve::HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body[..length]).unwrap();
    assert_eq!(json["model_name"], "lite0");
    assert_eq!(json["id"], "batch-7");
    assert_eq!(json["outputs"][0]["shape"], serde_json::json!([2, 3]));
    let answers = Protocol::KServe.parse_answers(status, &body).unwrap();
    let top1: Vec<Option<String>> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().top1().map(str::to_owned))
        .collect();
    assert_eq!(
        top1,
        [
            Some("lesser panda".to_owned()),
            Some("giant panda".to_owned())
        ]
    );
    assert_eq!(state.images_classified(), 2);
}

/// An image the backend cannot decode, sent through every API: a refusal in each API's own
/// shape and status (Baidu's inside an HTTP 200), read back as a service error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_images_are_refused_in_each_api_shape() {
    let (url, state, _stop) = common::spawn_backend().await;
    let http = reqwest::Client::new();
    let garbage = b"\xff\xd8\xff this is not really a JPEG";
    for protocol in Protocol::ALL {
        let request = protocol.client_request(garbage, 5);
        let (status, _, body) = send(&http, &url, &request).await;
        let err = protocol.parse_answer(status, &body).unwrap_err();
        let (expected_status, expected_kind) = match protocol {
            // Google reports a bad image inside the batch answer: code 3, INVALID_ARGUMENT.
            Protocol::GoogleVision => {
                assert_eq!(status, 200);
                assert!(
                    matches!(&err, ProtocolError::ImageError { code: 3, message, .. }
                        if message.contains("decoded")),
                    "{err:?}"
                );
                continue;
            }
            Protocol::Rekognition => (400, "InvalidImageFormatException"),
            Protocol::Baidu => (200, "error_code 216201"),
            Protocol::FacePlusPlus => (400, "IMAGE_ERROR_UNSUPPORTED_FORMAT"),
            Protocol::Azure => (400, "InvalidImageFormat"),
            Protocol::KServe => (400, "Bad Request"),
            Protocol::TorchServe => (400, "BadRequestException"),
        };
        assert_eq!(status, expected_status, "{protocol}");
        let ProtocolError::Service { kind, message, .. } = &err else {
            panic!("{protocol}: {err:?}");
        };
        assert_eq!(kind, expected_kind, "{protocol}: {message}");
        assert!(message.contains("decoded"), "{protocol}: {message}");
    }
    assert_eq!(state.images_classified(), 0);
}

/// Face++ detect without a face detector: 503 in Face++'s shape, saying what is missing,
/// before any work is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_detect_without_a_detector_says_so() {
    let (url, state, _stop) = common::spawn_backend().await;
    assert!(!state.has_face_detector());
    let request = facepp::detect_request(&common::photo("indoor", "0.jpg"), Some(("k", "s")));
    let (status, _, body) = send(&reqwest::Client::new(), &url, &request).await;
    assert_eq!(status, 503);
    match Protocol::FacePlusPlus.parse_answer(status, &body) {
        Err(ProtocolError::Service { kind, message, .. }) => {
            assert_eq!(kind, "SERVICE_UNAVAILABLE");
            assert!(message.contains("no face detector is loaded"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.images_classified(), 0);
}

/// A stand-in detector: one face in the middle quarter of the image.
#[derive(Debug)]
struct CentreFace;

impl DetectFaces for CentreFace {
    fn detect(&self, image: &image::RgbImage) -> Result<Vec<Region>, String> {
        let (w, h) = (image.width() as f32, image.height() as f32);
        Ok(vec![Region {
            left: w / 4.0,
            top: h / 4.0,
            width: w / 2.0,
            height: h / 2.0,
            score: 0.9,
        }])
    }
}

/// Face++ detect runs the detector it is given on the decoded image and answers its faces
/// in pixels; the scene operation on the same backend still classifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_detect_runs_the_given_detector() {
    let cfg = BackendConfig::new(common::lite0()).with_faces(Arc::new(CentreFace));
    let (url, state, _stop) = common::spawn_backend_with(cfg).await;
    let http = reqwest::Client::new();
    let photo = common::photo("objects", "2.jpg");
    let (status, _, body) = send(&http, &url, &facepp::detect_request(&photo, None)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = Protocol::FacePlusPlus.parse_answer(status, &body).unwrap();
    let expected = Answer::detections(vec![Region {
        left: 128.0,
        top: 128.0,
        width: 256.0,
        height: 256.0,
        score: 1.0,
    }]);
    assert_eq!(answer, expected);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["face_num"], 1);

    // The same image as `image_base64` in a urlencoded form.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    let form = format!(
        "api_key=k&api_secret=s&image_base64={}",
        form_urlencoded::byte_serialize(b64.as_bytes()).collect::<String>()
    );
    let request = ClientRequest {
        path_and_query: facepp::DETECT_PATH.to_owned(),
        headers: vec![(
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: form.into_bytes(),
    };
    let (status, _, body) = send(&http, &url, &request).await;
    assert_eq!(
        Protocol::FacePlusPlus.parse_answer(status, &body).unwrap(),
        expected
    );

    let scene = Protocol::FacePlusPlus.client_request(&photo, 10);
    let (status, _, body) = send(&http, &url, &scene).await;
    let answer = Protocol::FacePlusPlus.parse_answer(status, &body).unwrap();
    assert_eq!(answer.top1(), Some("African elephant"));
    assert_eq!(state.images_classified(), 3);
}

/// Face++ detect with the real BlazeFace detector: the astronaut portrait's one face where
/// it is (centre about (225, 125)), in whole pixels; a photo without people has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_detect_with_blazeface_finds_the_astronaut() {
    let detector = FaceDetector::load(&common::root().join("models/blazeface-front-128.onnx"))
        .expect("load models/blazeface-front-128.onnx");
    let cfg = BackendConfig::new(common::lite0()).with_faces(Arc::new(detector));
    let (url, _state, _stop) = common::spawn_backend_with(cfg).await;
    let http = reqwest::Client::new();
    let astronaut = std::fs::read(common::root().join("tests/fixtures/faces/astronaut.jpg"))
        .expect("tests/fixtures/faces/astronaut.jpg");
    let request = facepp::detect_request(&astronaut, Some(("key", "secret")));
    let (status, _, body) = send(&http, &url, &request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = Protocol::FacePlusPlus.parse_answer(status, &body).unwrap();
    assert_eq!(answer.regions.len(), 1, "{answer:?}");
    let face = answer.regions[0];
    let (cx, cy) = (face.left + face.width / 2.0, face.top + face.height / 2.0);
    assert!(
        (cx - 225.0).abs() <= 8.0 && (cy - 125.0).abs() <= 8.0,
        "face centre ({cx}, {cy}): {face:?}"
    );
    assert_eq!(face.left, face.left.round(), "whole pixels");

    let elephant = facepp::detect_request(&common::photo("objects", "2.jpg"), None);
    let (status, _, body) = send(&http, &url, &elephant).await;
    let answer = Protocol::FacePlusPlus.parse_answer(status, &body).unwrap();
    assert!(answer.regions.is_empty(), "{answer:?}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["face_num"], 0);
}

/// With one slot and no queue, while a long Google batch holds the slot every API is refused
/// at once with 429, `retry-after` and its own throttling shape, which our parsers recognise
/// as throttling (so clients retry instead of counting a refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_backend_throttles_in_each_api_shape() {
    let mut cfg = BackendConfig::new(common::lite0());
    cfg.concurrency = 1;
    cfg.queue = 0;
    let (url, state, _stop) = common::spawn_backend_with(cfg).await;
    let street = common::photo("street", "0.jpg");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&street);
    let image = serde_json::json!({"image": {"content": b64}});
    let batch = serde_json::json!({"requests": vec![image; 16]});
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
    while state.images_classified() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let small = common::photo("objects", "2.jpg");
    for protocol in Protocol::ALL {
        let (status, headers, body) = send(&http, &url, &protocol.client_request(&small, 5)).await;
        assert_eq!(status, 429, "{protocol}");
        assert_eq!(headers["retry-after"], "1", "{protocol}");
        let err = protocol.parse_answer(status, &body).unwrap_err();
        assert!(err.is_throttling(), "{protocol}: {err}");
    }
    assert_eq!(long.await.unwrap(), 200);
    assert_eq!(state.images_classified(), 16);
}

/// The proxy's replacement in every JSON wire format changes the image and nothing else:
/// fields it does not know (vendor options it has no struct field for, made-up keys, nested
/// values of every JSON type) go up as the client sent them. Google, Rekognition and KServe
/// (JSON and binary-data forms) carry the image in JSON; Azure's JSON form names a URL only,
/// and the form, multipart and raw-body APIs keep every byte (their own unit tests).
#[test]
fn unknown_fields_survive_the_proxys_replacement_in_every_json_protocol() {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let image = common::photo("objects", "2.jpg");
    let smaller = b"\xff\xd8\xff\xdb smaller".to_vec();
    let extra = serde_json::json!({"a": [1, 2.5, "s", null, true, {"b": -3}], "c": ""});
    // (protocol, headers, body with the original image, the same body with the smaller one)
    let json_bodies = |content: &[u8]| {
        let content = b64(content);
        vec![
            (
                Protocol::GoogleVision,
                vec![("content-type", "application/json")],
                serde_json::json!({
                    "requests": [{
                        "image": {"content": content, "x-extra": extra},
                        "features": [
                            {"type": "LABEL_DETECTION", "maxResults": 3, "model": "builtin/latest"},
                            {"type": "SAFE_SEARCH_DETECTION"},
                        ],
                        "imageContext": {"languageHints": ["en"], "cropHintsParams": {"aspectRatios": [1.5]}},
                    }],
                    "parent": "projects/p/locations/eu",
                    "unknownTopLevel": extra,
                }),
            ),
            (
                Protocol::Rekognition,
                vec![
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "RekognitionService.DetectLabels"),
                ],
                serde_json::json!({
                    "Image": {"Bytes": content, "Extra": extra},
                    "MaxLabels": 5,
                    "MinConfidence": 70.5,
                    "Settings": {"GeneralLabels": {"LabelInclusionFilters": ["Dog"]}},
                    "Features": ["GENERAL_LABELS", "IMAGE_PROPERTIES"],
                    "Unknown": extra,
                }),
            ),
            (
                Protocol::KServe,
                vec![("content-type", "application/json")],
                serde_json::json!({
                    "id": "r-1",
                    "inputs": [
                        {"name": "meta", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                        {
                            "name": "image", "shape": [1], "datatype": "BYTES",
                            "data": [{"b64": content, "note": extra}],
                            "parameters": {"custom": "x"},
                        },
                    ],
                    "outputs": [{"name": "labels", "parameters": {"binary_data": false, "extra": 1}}],
                    "parameters": {"top_k": 3, "trace": extra},
                    "x-unknown": extra,
                }),
            ),
        ]
    };
    for ((protocol, headers, sent), (_, _, expected)) in
        json_bodies(&image).into_iter().zip(json_bodies(&smaller))
    {
        let (_, headers) = with_headers(
            &headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
            &[],
        );
        let body = sent.to_string().into_bytes();
        let path = protocol.client_request(&image, 5).path_and_query;
        let req = ProxyRequest {
            path_and_query: &path,
            headers: &headers,
            body: &body,
        };
        let slots = protocol
            .extract_images(&req)
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let slot = slots
            .iter()
            .find(|slot| slot.bytes() == Some(&image[..]))
            .unwrap_or_else(|| panic!("{protocol}: no slot holds the image: {slots:?}"));
        let rewritten = protocol
            .replace_images(&req, &[(slot.index, smaller.clone())])
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let got: serde_json::Value =
            serde_json::from_slice(&rewritten.body).expect("the rewrite is JSON");
        assert_eq!(got, expected, "{protocol}");
    }

    // KServe with the binary-data extension: the JSON header keeps every field but the
    // image input's `binary_data_size`.
    let request = Protocol::KServe.client_request(&image, 5);
    let length: usize = request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("inference-header-content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("a header length");
    let mut header: serde_json::Value =
        serde_json::from_slice(&request.body[..length]).expect("a JSON header");
    header["id"] = "r-2".into();
    header["inputs"][0]["parameters"]["custom"] = extra.clone();
    header["outputs"][0]["parameters"] = serde_json::json!({"binary_data": true, "x": extra});
    header["parameters"]["trace"] = extra.clone();
    header["x-unknown"] = extra.clone();
    let header_text = header.to_string();
    let body = [header_text.as_bytes(), &request.body[length..]].concat();
    let (_, headers) = with_headers(
        &request.headers,
        &[(
            "inference-header-content-length".to_owned(),
            header_text.len().to_string(),
        )],
    );
    let req = ProxyRequest {
        path_and_query: &request.path_and_query,
        headers: &headers,
        body: &body,
    };
    let rewritten = Protocol::KServe
        .replace_images(&req, &[(0, smaller.clone())])
        .expect("kserve rewrite");
    let new_length: usize = rewritten
        .headers
        .iter()
        .find(|(n, _)| n == "inference-header-content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a new header length");
    let got: serde_json::Value =
        serde_json::from_slice(&rewritten.body[..new_length]).expect("a JSON header");
    let mut expected = header;
    expected["inputs"][0]["parameters"]["binary_data_size"] = (smaller.len() + 4).into();
    assert_eq!(got, expected);
    assert_eq!(&rewritten.body[new_length + 4..], &smaller[..]);
}
