//! The backend's gRPC APIs, on the same port as its REST routes: Google Vision
//! `google.cloud.vision.v1.ImageAnnotator/BatchAnnotateImages` and the KServe v2 / Triton
//! `inference.GRPCInferenceService` (`ModelInfer`, `ServerLive`, `ServerReady`,
//! `ServerMetadata`, `ModelReady`, `ModelMetadata`).
//!
//! The listener ([`super::serve`]) is axum's, built with its `http2` feature: hyper-util's
//! `auto` connection builder reads the first bytes of each connection and speaks HTTP/2
//! when they are the HTTP/2 preface (h2c with prior knowledge, what gRPC insecure channels
//! send), HTTP/1.1 otherwise. A gRPC call is then an ordinary `POST /{service}/{method}`
//! routed by the same axum router as the REST APIs.
//!
//! Every call answers from the same classifier, admission queue and slots as REST
//! ([`super::Backend::classify_all`]), and with the same semantics as the REST route of its
//! API: Vision's per-image `error` (code 3 `INVALID_ARGUMENT` for a corrupt image, 13 for
//! ours), `max_results` 0 meaning 10, no `LABEL_DETECTION` feature meaning no labels, at
//! most 16 images; KServe's `BYTES` image input chosen as REST chooses it, `parameters.top_k`,
//! outputs `labels` (`BYTES`) and `scores` (`FP32`) of shape `[images, k]`.
//!
//! ## Wire
//!
//! Messages are the public protos' fields this backend reads or writes, as hand-written
//! `prost` structs (below), so a clean clone needs no `protoc`; unknown fields are skipped
//! by prost as protobuf requires. Field numbers were checked against the descriptors that
//! google-cloud-vision 3.16.0 and tritonclient 2.73.0 ship (Feature's `max_results` is 2,
//! `model` is 3).
//!
//! gRPC framing is done here rather than with `tonic`: a unary call is one length-prefixed
//! message each way (1 byte compressed flag, 4 bytes big-endian length), which is a dozen
//! lines, while tonic's server would bring its own router and service stack beside axum's
//! (and its codegen or hand-written `NamedService` glue per method) only to reach those
//! same bytes. What tonic would add and this module does instead:
//! - an answer is `200`, `content-type: application/grpc`, the message, then a trailers
//!   frame with `grpc-status: 0` (`http_body_util::BodyExt::with_trailers`, which hyper's
//!   HTTP/2 server sends as a HEADERS frame with END_STREAM);
//! - an error is "trailers-only": `grpc-status` and `grpc-message` (percent-encoded) in
//!   the response headers and an empty body, which hyper sends as one HEADERS frame with
//!   END_STREAM;
//! - compressed messages (`grpc-encoding`) are refused with `UNIMPLEMENTED`; a body or
//!   message over the backend's `max_body_bytes` with `RESOURCE_EXHAUSTED` naming the
//!   limit; a full admission queue (REST's 429) with `RESOURCE_EXHAUSTED`; any other
//!   path with `content-type: application/grpc` with `UNIMPLEMENTED`.
//!
//! `grpc-timeout` is not enforced (a call takes as long as its images); streaming calls
//! (`ModelStreamInfer`) and Triton's other extensions answer `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use prost::Message;

use super::{Backend, Refused};
use crate::protocol::{Answer, BackendImage, ImageProblem, ProtocolError, Task, google, kserve};

/// The Vision method's path.
pub const VISION_BATCH_ANNOTATE: &str =
    "/google.cloud.vision.v1.ImageAnnotator/BatchAnnotateImages";

/// The KServe v2 / Triton service's path prefix (`/inference.GRPCInferenceService/{method}`).
pub const KSERVE_SERVICE: &str = "/inference.GRPCInferenceService";

/// The gRPC content type.
pub const CONTENT_TYPE: &str = "application/grpc";

/// gRPC status codes the backend and the proxy ([`crate::proxy::grpc`]) answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// A gRPC error: a status code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    fn invalid(err: &ProtocolError) -> Status {
        Status::new(Code::InvalidArgument, err.to_string())
    }
}

impl IntoResponse for Status {
    /// A trailers-only answer: `grpc-status` and `grpc-message` in the headers, no body.
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert("grpc-status", HeaderValue::from(self.code as u16));
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&self.message)) {
            headers.insert("grpc-message", message);
        }
        response
    }
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub(crate) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A successful unary answer: the framed message, then trailers `grpc-status: 0`.
fn reply(message: &impl Message) -> Response {
    let encoded = message.encode_to_vec();
    let Ok(length) = u32::try_from(encoded.len()) else {
        return Status::new(Code::Internal, "answer too large to frame").into_response();
    };
    let mut framed = Vec::with_capacity(encoded.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&encoded);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(Code::Ok as u16));
    let body = Full::new(Bytes::from(framed)).with_trailers(async move { Some(Ok(trailers)) });
    let mut response = Response::new(Body::new(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|;…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == CONTENT_TYPE
                || v.starts_with("application/grpc+")
                || v.starts_with("application/grpc;")
        })
}

/// Reads a unary call's one message, at most `limit` bytes.
async fn read_message<M: Message + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<M, Status> {
    let too_large = || {
        Status::new(
            Code::ResourceExhausted,
            format!("request message larger than the backend's limit of {limit} bytes"),
        )
    };
    let bytes = axum::body::to_bytes(body, limit.saturating_add(5))
        .await
        .map_err(|_| too_large())?;
    let Some((&flag, rest)) = bytes.split_first() else {
        return Err(Status::new(
            Code::InvalidArgument,
            "empty request: a unary call sends one length-prefixed message",
        ));
    };
    let (Some(length), Some(payload)) = (rest.get(..4), rest.get(4..)) else {
        return Err(Status::new(
            Code::InvalidArgument,
            "request shorter than the 5-byte gRPC message prefix",
        ));
    };
    if flag != 0 {
        let encoding = headers
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)");
        return Err(Status::new(
            Code::Unimplemented,
            format!(
                "compressed messages are not supported (grpc-encoding {encoding}); send them uncompressed"
            ),
        ));
    }
    let declared = length
        .try_into()
        .map(u32::from_be_bytes)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX);
    if declared > limit {
        return Err(too_large());
    }
    if declared != payload.len() {
        return Err(Status::new(
            Code::InvalidArgument,
            format!(
                "a unary call sends exactly one message: the prefix declares {declared} bytes, \
                 the body holds {}",
                payload.len()
            ),
        ));
    }
    M::decode(payload).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("request message is not valid protobuf: {e}"),
        )
    })
}

/// The gRPC routes, merged into [`super::app`].
pub fn routes() -> axum::Router<Arc<Backend>> {
    axum::Router::new()
        .route(VISION_BATCH_ANNOTATE, post(batch_annotate_images))
        .route(&format!("{KSERVE_SERVICE}/{{method}}"), post(inference))
}

/// The router's fallback: `UNIMPLEMENTED` for a gRPC call to a method not served, a plain
/// 404 for anything else (as before there were gRPC routes).
pub async fn fallback(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    if is_grpc(&headers) {
        return Status::new(
            Code::Unimplemented,
            format!("method {} is not served by this backend", uri.path()),
        )
        .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Turns a refusal of the classification path into its gRPC status.
fn refused(refusal: Refused) -> Status {
    match refusal {
        Refused::Throttled => Status::new(
            Code::ResourceExhausted,
            "the backend is saturated (its queue is full); retry later",
        ),
        Refused::Failed(e) => {
            tracing::error!(error = %e, "classification task failed");
            Status::new(Code::Internal, "internal error")
        }
    }
}

/// A 415 for a gRPC path called without the gRPC content type.
fn not_grpc() -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "gRPC methods need content-type: application/grpc\n",
    )
        .into_response()
}

async fn batch_annotate_images(
    State(s): State<Arc<Backend>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_grpc(&headers) {
        return not_grpc();
    }
    s.requests.fetch_add(1, Ordering::Relaxed);
    match annotate(&s, &headers, body).await {
        Ok(answer) => reply(&answer),
        Err(status) => status.into_response(),
    }
}

async fn annotate(
    s: &Arc<Backend>,
    headers: &HeaderMap,
    body: Body,
) -> Result<vision::BatchAnnotateImagesResponse, Status> {
    let request: vision::BatchAnnotateImagesRequest =
        read_message(headers, body, s.max_body_bytes).await?;
    let images = vision_images(request)?;
    let results = s
        .classify_all(Task::Labels, images)
        .await
        .map_err(refused)?;
    Ok(vision_response(results))
}

/// The images of a Vision request, as the REST route reads them.
fn vision_images(
    request: vision::BatchAnnotateImagesRequest,
) -> Result<Vec<Result<BackendImage, ImageProblem>>, Status> {
    if request.requests.len() > google::MAX_IMAGES_PER_REQUEST {
        return Err(Status::invalid(&ProtocolError::TooManyImages {
            limit: google::MAX_IMAGES_PER_REQUEST,
            actual: request.requests.len(),
        }));
    }
    Ok(request
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let max_labels = entry
                .features
                .iter()
                .filter(|f| f.r#type == vision::LABEL_DETECTION)
                .map(|f| match usize::try_from(f.max_results) {
                    Ok(n) if n > 0 => n,
                    _ => google::DEFAULT_MAX_RESULTS,
                })
                .max()
                .unwrap_or(0);
            let image = entry.image.unwrap_or_default();
            if !image.content.is_empty() {
                return Ok(BackendImage {
                    bytes: image.content,
                    max_labels,
                    min_score: 0.0,
                });
            }
            let source = image.source.unwrap_or_default();
            for (field, reference) in [
                ("imageUri", source.image_uri),
                ("gcsImageUri", source.gcs_image_uri),
            ] {
                if !reference.is_empty() {
                    return Err(ProtocolError::RemoteImage {
                        path: format!("requests[{i}].image.source.{field}"),
                        reference,
                    }
                    .into());
                }
            }
            Err(ProtocolError::NoImage {
                path: format!("requests[{i}].image"),
                fields: "content nor source",
            }
            .into())
        })
        .collect())
}

/// One response per image, in order: labels, or the image's `error` (3 for the client's
/// image, 13 for ours), as the REST route renders them.
fn vision_response(
    results: Vec<Result<Answer, ImageProblem>>,
) -> vision::BatchAnnotateImagesResponse {
    let responses = results
        .into_iter()
        .enumerate()
        .map(|(i, result)| match result {
            Ok(answer) => vision::AnnotateImageResponse {
                label_annotations: answer
                    .labels
                    .into_iter()
                    .map(|label| vision::EntityAnnotation {
                        mid: String::new(),
                        description: label.name,
                        score: label.score,
                        topicality: label.score,
                    })
                    .collect(),
                error: None,
            },
            Err(problem) => {
                let code = match &problem {
                    ImageProblem::Request(_) | ImageProblem::Undecodable(_) => {
                        tracing::debug!(image = i, %problem, "image rejected");
                        Code::InvalidArgument
                    }
                    ImageProblem::Internal(_) => {
                        tracing::error!(image = i, %problem, "image failed");
                        Code::Internal
                    }
                };
                vision::AnnotateImageResponse {
                    label_annotations: Vec::new(),
                    error: Some(vision::Status {
                        code: code as i32,
                        message: problem.to_string(),
                    }),
                }
            }
        })
        .collect();
    vision::BatchAnnotateImagesResponse { responses }
}

async fn inference(
    State(s): State<Arc<Backend>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_grpc(&headers) {
        return not_grpc();
    }
    s.requests.fetch_add(1, Ordering::Relaxed);
    let limit = s.max_body_bytes;
    let answer = match method.as_str() {
        "ServerLive" => read_message::<v2::Empty>(&headers, body, limit)
            .await
            .map(|_| reply(&v2::ServerLiveResponse { live: true })),
        "ServerReady" => read_message::<v2::Empty>(&headers, body, limit)
            .await
            .map(|_| reply(&v2::ServerReadyResponse { ready: true })),
        "ServerMetadata" => read_message::<v2::Empty>(&headers, body, limit)
            .await
            .map(|_| {
                reply(&v2::ServerMetadataResponse {
                    name: kserve::SERVER_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    extensions: vec!["binary_tensor_data".to_owned()],
                })
            }),
        "ModelReady" => read_message::<v2::ModelRef>(&headers, body, limit)
            .await
            .map(|_| reply(&v2::ModelReadyResponse { ready: true })),
        "ModelMetadata" => read_message::<v2::ModelRef>(&headers, body, limit)
            .await
            .map(|model| reply(&model_metadata(model))),
        "ModelInfer" => match read_message::<v2::ModelInferRequest>(&headers, body, limit).await {
            Ok(request) => model_infer(&s, request).await.map(|answer| reply(&answer)),
            Err(status) => Err(status),
        },
        other => Err(Status::new(
            Code::Unimplemented,
            format!("method {KSERVE_SERVICE}/{other} is not served by this backend"),
        )),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The model metadata the REST route answers: one `BYTES` image input, `labels` and
/// `scores` outputs of shape `[-1, -1]`.
fn model_metadata(model: v2::ModelRef) -> v2::ModelMetadataResponse {
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| v2::TensorMetadata {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape,
    };
    let version = if model.version.is_empty() {
        kserve::DEFAULT_VERSION.to_owned()
    } else {
        model.version
    };
    v2::ModelMetadataResponse {
        name: model.name,
        versions: vec![version],
        platform: kserve::PLATFORM.to_owned(),
        inputs: vec![tensor(kserve::IMAGE_INPUT, v2::BYTES, vec![-1])],
        outputs: vec![
            tensor(kserve::LABELS_OUTPUT, v2::BYTES, vec![-1, -1]),
            tensor(kserve::SCORES_OUTPUT, v2::FP32, vec![-1, -1]),
        ],
    }
}

/// What `ModelInfer` computes, read from its request.
struct Infer {
    images: Vec<Result<BackendImage, ImageProblem>>,
    outputs: Vec<String>,
}

async fn model_infer(
    s: &Arc<Backend>,
    request: v2::ModelInferRequest,
) -> Result<v2::ModelInferResponse, Status> {
    let infer = infer_request(&request)?;
    let results = s
        .classify_all(Task::Labels, infer.images)
        .await
        .map_err(refused)?;
    let mut answers = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(answer) => answers.push(answer),
            Err(ImageProblem::Request(err)) => return Err(Status::invalid(&err)),
            Err(problem @ ImageProblem::Undecodable(_)) => {
                tracing::debug!(image = i, %problem, "image rejected");
                return Err(Status::new(
                    Code::InvalidArgument,
                    format!("image element {i}: {problem}"),
                ));
            }
            Err(problem @ ImageProblem::Internal(_)) => {
                tracing::error!(image = i, %problem, "image failed");
                return Err(Status::new(Code::Internal, "internal error"));
            }
        }
    }
    Ok(infer_response(request, &infer.outputs, &answers))
}

/// The image input and options of a `ModelInfer` request, read as the REST route reads its
/// JSON or binary form.
fn infer_request(request: &v2::ModelInferRequest) -> Result<Infer, Status> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(Status::new(
            Code::InvalidArgument,
            format!(
                "raw_input_contents has {} entries for {} inputs (one per input)",
                raw.len(),
                request.inputs.len()
            ),
        ));
    }
    // Every BYTES input's elements: from raw_input_contents (each element a u32 LE length
    // then its bytes, Triton's serialisation) or from contents.bytes_contents.
    let mut bytes_inputs: Vec<(usize, Vec<&[u8]>)> = Vec::new();
    for (i, input) in request.inputs.iter().enumerate() {
        if input.datatype != v2::BYTES {
            continue;
        }
        let elements = match raw.get(i) {
            Some(blob) => split_elements(blob).ok_or_else(|| {
                Status::new(
                    Code::InvalidArgument,
                    format!(
                        "raw_input_contents[{i}] is not a sequence of u32 little-endian \
                         lengths each followed by its bytes (at most {} elements)",
                        kserve::MAX_ELEMENTS
                    ),
                )
            })?,
            None => {
                let contents = input
                    .contents
                    .as_ref()
                    .map_or(&[][..], |c| &c.bytes_contents);
                if contents.len() > kserve::MAX_ELEMENTS {
                    return Err(Status::new(
                        Code::InvalidArgument,
                        format!(
                            "inputs[{i}] has {} elements, over the limit of {}",
                            contents.len(),
                            kserve::MAX_ELEMENTS
                        ),
                    ));
                }
                contents.iter().map(Vec::as_slice).collect()
            }
        };
        bytes_inputs.push((i, elements));
    }
    // The input holding the first recognisable image, else the first BYTES input.
    let chosen = bytes_inputs
        .iter()
        .position(|(_, elements)| {
            elements
                .first()
                .is_some_and(|e| crate::codec::Format::sniff(e).is_some())
        })
        .unwrap_or(0);
    let Some((i, elements)) = bytes_inputs.get(chosen) else {
        return Err(Status::invalid(&ProtocolError::MissingField {
            path: "inputs[] of datatype BYTES (encoded images)".to_owned(),
        }));
    };
    let shape = &request.inputs[*i].shape;
    let count = shape
        .iter()
        .map(|&d| u64::try_from(d).ok())
        .product::<Option<u64>>();
    if count != u64::try_from(elements.len()).ok() {
        return Err(Status::invalid(&ProtocolError::InvalidValue {
            path: format!("inputs[{i}].shape"),
            expected: "dimensions whose product is the number of elements sent",
            got: format!("{shape:?} for {} elements", elements.len()),
        }));
    }
    let top_k = match request
        .parameters
        .get("top_k")
        .and_then(|p| p.choice.as_ref())
    {
        None => kserve::DEFAULT_TOP_K,
        Some(choice) => {
            let n = match choice {
                v2::Choice::Int64(n) => usize::try_from(*n).ok(),
                v2::Choice::Uint64(n) => usize::try_from(*n).ok(),
                _ => None,
            };
            n.filter(|&n| n > 0).ok_or_else(|| {
                Status::invalid(&ProtocolError::InvalidValue {
                    path: "parameters.top_k".to_owned(),
                    expected: "a positive integer",
                    got: format!("{choice:?}"),
                })
            })?
        }
    };
    let mut outputs = Vec::with_capacity(request.outputs.len());
    for (j, output) in request.outputs.iter().enumerate() {
        if output.name != kserve::LABELS_OUTPUT && output.name != kserve::SCORES_OUTPUT {
            return Err(Status::invalid(&ProtocolError::InvalidValue {
                path: format!("outputs[{j}].name"),
                expected: "`labels` or `scores`",
                got: format!("{:?}", output.name),
            }));
        }
        outputs.push(output.name.clone());
    }
    if outputs.is_empty() {
        outputs = vec![
            kserve::LABELS_OUTPUT.to_owned(),
            kserve::SCORES_OUTPUT.to_owned(),
        ];
    }
    let images = elements
        .iter()
        .map(|bytes| {
            Ok(BackendImage {
                bytes: bytes.to_vec(),
                max_labels: top_k,
                min_score: 0.0,
            })
        })
        .collect();
    Ok(Infer { images, outputs })
}

/// Splits Triton's serialised `BYTES` tensor (u32 LE length, bytes, …); `None` when it
/// does not add up or holds more than [`kserve::MAX_ELEMENTS`] elements.
fn split_elements(blob: &[u8]) -> Option<Vec<&[u8]>> {
    let mut elements = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        if elements.len() == kserve::MAX_ELEMENTS {
            return None;
        }
        let (length, tail) = rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
        let (element, tail) = tail.split_at_checked(length)?;
        elements.push(element);
        rest = tail;
    }
    Some(elements)
}

/// `labels` and `scores` of shape `[images, k]` in `raw_output_contents` (as Triton answers),
/// rows shorter than the longest padded with empty labels scoring 0.
fn infer_response(
    request: v2::ModelInferRequest,
    outputs: &[String],
    answers: &[Answer],
) -> v2::ModelInferResponse {
    let rows = answers.len();
    let width = answers.iter().map(|a| a.labels.len()).max().unwrap_or(0);
    let mut names = Vec::new();
    let mut scores = Vec::new();
    for answer in answers {
        for k in 0..width {
            let (name, score) = answer
                .labels
                .get(k)
                .map_or(("", 0.0), |l| (l.name.as_str(), l.score));
            let length = u32::try_from(name.len()).unwrap_or(u32::MAX);
            names.extend_from_slice(&length.to_le_bytes());
            names.extend_from_slice(name.as_bytes());
            scores.extend_from_slice(&score.to_le_bytes());
        }
    }
    let shape = vec![
        i64::try_from(rows).unwrap_or(i64::MAX),
        i64::try_from(width).unwrap_or(i64::MAX),
    ];
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw = Vec::with_capacity(outputs.len());
    for name in outputs {
        let (datatype, blob) = if name == kserve::LABELS_OUTPUT {
            (v2::BYTES, names.clone())
        } else {
            (v2::FP32, scores.clone())
        };
        tensors.push(v2::OutputTensor {
            name: name.clone(),
            datatype: datatype.to_owned(),
            shape: shape.clone(),
        });
        raw.push(blob);
    }
    let version = if request.model_version.is_empty() {
        kserve::DEFAULT_VERSION.to_owned()
    } else {
        request.model_version
    };
    v2::ModelInferResponse {
        model_name: request.model_name,
        model_version: version,
        id: request.id,
        outputs: tensors,
        raw_output_contents: raw,
    }
}

/// `google.cloud.vision.v1` messages: the fields this backend reads and writes.
pub mod vision {
    /// `Feature.Type.LABEL_DETECTION`.
    pub const LABEL_DETECTION: i32 = 4;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchAnnotateImagesRequest {
        #[prost(message, repeated, tag = "1")]
        pub requests: Vec<AnnotateImageRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnnotateImageRequest {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
        #[prost(message, repeated, tag = "2")]
        pub features: Vec<Feature>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(bytes = "vec", tag = "1")]
        pub content: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub source: Option<ImageSource>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSource {
        #[prost(string, tag = "1")]
        pub gcs_image_uri: String,
        #[prost(string, tag = "2")]
        pub image_uri: String,
    }

    /// `type` is the `Feature.Type` enum's number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Feature {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(int32, tag = "2")]
        pub max_results: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchAnnotateImagesResponse {
        #[prost(message, repeated, tag = "1")]
        pub responses: Vec<AnnotateImageResponse>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnnotateImageResponse {
        #[prost(message, repeated, tag = "4")]
        pub label_annotations: Vec<EntityAnnotation>,
        #[prost(message, optional, tag = "9")]
        pub error: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntityAnnotation {
        #[prost(string, tag = "1")]
        pub mid: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(float, tag = "4")]
        pub score: f32,
        #[prost(float, tag = "6")]
        pub topicality: f32,
    }

    /// `google.rpc.Status` without `details`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

/// `inference` (KServe v2 / Triton `grpc_service.proto`) messages: the fields this backend
/// reads and writes.
pub mod v2 {
    use super::HashMap;

    /// The datatype of encoded images and label names.
    pub const BYTES: &str = "BYTES";
    /// The datatype of scores.
    pub const FP32: &str = "FP32";

    /// `ServerLiveRequest`, `ServerReadyRequest`, `ServerMetadataRequest` (no fields).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerLiveResponse {
        #[prost(bool, tag = "1")]
        pub live: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerMetadataResponse {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, repeated, tag = "3")]
        pub extensions: Vec<String>,
    }

    /// `ModelReadyRequest` and `ModelMetadataRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelRef {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelMetadataResponse {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, repeated, tag = "2")]
        pub versions: Vec<String>,
        #[prost(string, tag = "3")]
        pub platform: String,
        #[prost(message, repeated, tag = "4")]
        pub inputs: Vec<TensorMetadata>,
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<TensorMetadata>,
    }

    /// `InferParameter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(oneof = "Choice", tags = "1, 2, 3, 4, 5")]
        pub choice: Option<Choice>,
    }

    /// `InferParameter.parameter_choice`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Choice {
        #[prost(bool, tag = "1")]
        Bool(bool),
        #[prost(int64, tag = "2")]
        Int64(i64),
        #[prost(string, tag = "3")]
        String(String),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(uint64, tag = "5")]
        Uint64(u64),
    }

    /// `InferTensorContents`: only `bytes_contents`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorContents {
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub bytes_contents: Vec<Vec<u8>>,
    }

    /// `ModelInferRequest.InferInputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<TensorContents>,
    }

    /// `ModelInferRequest.InferRequestedOutputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestedOutput {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferRequest {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, Parameter>,
        #[prost(message, repeated, tag = "5")]
        pub inputs: Vec<InputTensor>,
        #[prost(message, repeated, tag = "6")]
        pub outputs: Vec<RequestedOutput>,
        #[prost(bytes = "vec", repeated, tag = "7")]
        pub raw_input_contents: Vec<Vec<u8>>,
    }

    /// `ModelInferResponse.InferOutputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferResponse {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<OutputTensor>,
        #[prost(bytes = "vec", repeated, tag = "6")]
        pub raw_output_contents: Vec<Vec<u8>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("100% café"), "100%25 caf%C3%A9");
        assert_eq!(percent_encode("a\nb"), "a%0Ab");
    }

    #[test]
    fn bytes_tensors_split_and_reject_bad_lengths() {
        let mut blob = Vec::new();
        for element in [&b"abc"[..], b"", b"xy"] {
            blob.extend_from_slice(&u32::try_from(element.len()).unwrap().to_le_bytes());
            blob.extend_from_slice(element);
        }
        assert_eq!(
            split_elements(&blob),
            Some(vec![&b"abc"[..], &b""[..], &b"xy"[..]])
        );
        assert_eq!(split_elements(&blob[..blob.len() - 1]), None);
        assert_eq!(split_elements(&[1, 0]), None);
        assert_eq!(split_elements(&[]), Some(vec![]));
    }

    #[test]
    fn vision_reads_features_as_rest_does() {
        let entry = |features: Vec<vision::Feature>, content: &[u8]| vision::AnnotateImageRequest {
            image: Some(vision::Image {
                content: content.to_vec(),
                source: None,
            }),
            features,
        };
        let label = |max_results| vision::Feature {
            r#type: vision::LABEL_DETECTION,
            max_results,
        };
        let request = vision::BatchAnnotateImagesRequest {
            requests: vec![
                entry(vec![label(3)], b"x"),
                entry(vec![label(0)], b"x"),
                entry(
                    vec![vision::Feature {
                        r#type: 1,
                        max_results: 5,
                    }],
                    b"x",
                ),
                entry(vec![label(2)], b""),
            ],
        };
        let images = vision_images(request).unwrap();
        let max: Vec<Option<usize>> = images
            .iter()
            .map(|i| i.as_ref().ok().map(|i| i.max_labels))
            .collect();
        assert_eq!(
            max,
            vec![Some(3), Some(google::DEFAULT_MAX_RESULTS), Some(0), None]
        );
        let too_many = vision::BatchAnnotateImagesRequest {
            requests: vec![entry(vec![label(1)], b"x"); google::MAX_IMAGES_PER_REQUEST + 1],
        };
        assert_eq!(
            vision_images(too_many).unwrap_err().code,
            Code::InvalidArgument
        );
    }
}
