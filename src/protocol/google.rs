//! Google Cloud Vision `images:annotate`, `LABEL_DETECTION` feature.
//!
//! Request: `POST /v1/images:annotate` (key in `?key=` or a Bearer token; the body is not
//! signed), JSON:
//!
//! ```json
//! {"requests": [{"image": {"content": "<base64>"},
//!                "features": [{"type": "LABEL_DETECTION", "maxResults": 10}]}]}
//! ```
//!
//! Answer: `{"responses": [{"labelAnnotations": [{"mid", "description", "score",
//! "topicality"}]}]}`, one response per request, in order.
//!
//! Quirks this file handles:
//! - Batches: up to [`MAX_IMAGES_PER_REQUEST`] images per request. A failure of one image is a
//!   `responses[i].error` (`google.rpc.Status`: numeric `code`, `message`) inside an HTTP 200;
//!   only request-level failures use a non-2xx status, with
//!   `{"error": {"code": 400, "message", "status": "INVALID_ARGUMENT"}}`.
//! - Protobuf's JSON mapping: fields whose value is the default are omitted, so a response
//!   without `labelAnnotations` means "no labels" and a label without `score` scores 0; a
//!   `maxResults` of 0 means "the server default" (10); integers may arrive as strings; field
//!   names may be spelled lowerCamel (`maxResults`) or as in the proto (`max_results`); bytes are
//!   base64 in either alphabet, padding optional.
//! - Enums by name or by number: the official clients' REST transports send
//!   `?$alt=json;enum-encoding=int` and `"features": [{"type": 4}]` (`LABEL_DETECTION` in
//!   `google.cloud.vision.v1.Feature.Type`); the query changes nothing else here, and the
//!   answer has no enum fields to encode.
//! - `image.content` takes precedence over `image.source`; `source.imageUri` and
//!   `source.gcsImageUri` name remote images, which the backend does not fetch and the proxy
//!   leaves untouched.
//! - The backend renders labels without knowledge-graph ids: `mid` is empty and `topicality`
//!   repeats `score`.
//! - gRPC: `ImageAnnotator/BatchAnnotateImages` is compressed like `images:annotate`
//!   ([`grpc`]).

pub mod grpc;

use std::borrow::Cow;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ErrorClass;
use super::api::{Api, Emulated, GrpcApi};
use super::one_image::Found;
use super::shape::{ApiError, ErrorKind, Kind};
use super::wire::{self, Field, wire_object};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    Label, LocatedSlot, ProtocolError, SlotImage, apply_replacements, decode_base64, describe,
    encode_base64, excerpt, is_success, normalise_score, parse_json, read_answer, wire_number,
};
use super::{ProxyRequest, Rewritten};

// Wire structs. Protobuf's JSON mapping accepts a field under its lowerCamel name or its
// proto name; both are declared (`…_proto`) and the lowerCamel one wins, as in the parser.
// The proxy rewrites the `Value` these are read from, so unknown fields go up as sent.

/// An `images:annotate` request: `{"requests": [...]}`.
#[derive(Debug, Deserialize)]
struct AnnotateRequest<'a> {
    #[serde(default, borrow)]
    requests: Field<Vec<Field<ImageRequest<'a>>>>,
}

/// One of `requests`: `{"image", "features"}`.
#[derive(Debug, Deserialize)]
struct ImageRequest<'a> {
    #[serde(default, borrow)]
    image: Field<WireImage<'a>>,
    #[serde(default)]
    features: Field<Vec<Field<Feature>>>,
}

/// `requests[i].image`: inline `content` (base64) or a `source`.
#[derive(Debug, Deserialize)]
struct WireImage<'a> {
    #[serde(default, borrow)]
    content: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Field<ImageSource<'a>>,
}

/// `requests[i].image.source`: a URL or a Cloud Storage object.
#[derive(Debug, Deserialize)]
struct ImageSource<'a> {
    #[serde(default, rename = "imageUri", borrow)]
    image_uri: Field<Cow<'a, str>>,
    #[serde(default, rename = "image_uri", borrow)]
    image_uri_proto: Field<Cow<'a, str>>,
    #[serde(default, rename = "gcsImageUri", borrow)]
    gcs_image_uri: Field<Cow<'a, str>>,
    #[serde(default, rename = "gcs_image_uri", borrow)]
    gcs_image_uri_proto: Field<Cow<'a, str>>,
}

/// One of `requests[i].features`: `type` by name or number, `maxResults` a number or a string.
#[derive(Debug, Deserialize)]
struct Feature {
    #[serde(default, rename = "type")]
    kind: Field<Value>,
    #[serde(default, rename = "maxResults")]
    max_results: Field<Value>,
    #[serde(default, rename = "max_results")]
    max_results_proto: Field<Value>,
}

/// An `images:annotate` answer: `{"responses": [...]}`, one per request.
#[derive(Debug, Deserialize)]
struct AnnotateAnswer<'a> {
    #[serde(default, borrow)]
    responses: Field<Vec<Field<ImageResponse<'a>>>>,
}

/// One of `responses`: labels, or a per-image `error`.
#[derive(Debug, Deserialize)]
struct ImageResponse<'a> {
    #[serde(default, borrow)]
    error: Field<Status<'a>>,
    #[serde(default, rename = "labelAnnotations", borrow)]
    label_annotations: Field<Vec<Field<LabelAnnotation<'a>>>>,
    #[serde(default, rename = "label_annotations", borrow)]
    label_annotations_proto: Field<Vec<Field<LabelAnnotation<'a>>>>,
}

/// One of `labelAnnotations`; `score` a number or a numeric string, both optional.
#[derive(Debug, Deserialize)]
struct LabelAnnotation<'a> {
    #[serde(default, borrow)]
    description: Field<Cow<'a, str>>,
    #[serde(default)]
    score: Field<Value>,
}

/// A `google.rpc.Status`: per image in `responses[i].error`, for the whole request in a non-2xx
/// answer's `error` (with the `status` name).
#[derive(Debug, Deserialize)]
struct Status<'a> {
    #[serde(default)]
    code: Field<Value>,
    #[serde(default, borrow)]
    message: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    status: Field<Cow<'a, str>>,
}

/// A non-2xx answer: `{"error": {...}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(default, borrow)]
    error: Field<Status<'a>>,
}

wire_object!(Feature);
wire_object!(
    'a,
    AnnotateRequest,
    ImageRequest,
    WireImage,
    ImageSource,
    AnnotateAnswer,
    ImageResponse,
    LabelAnnotation,
    Status,
    ErrorAnswer
);

/// The path of the annotate method.
pub const PATH: &str = "/v1/images:annotate";

/// The most images one `images:annotate` request may hold.
pub const MAX_IMAGES_PER_REQUEST: usize = 16;

/// Labels per image when `maxResults` is absent or 0.
pub const DEFAULT_MAX_RESULTS: usize = 10;

/// The content type of the backend's answers (what Google sends).
pub(crate) const CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// The feature type asking for labels.
const LABEL_DETECTION: &str = "LABEL_DETECTION";

/// `LABEL_DETECTION`'s number in `google.cloud.vision.v1.Feature.Type`, as clients send it
/// with `$alt=json;enum-encoding=int`.
const LABEL_DETECTION_NUMBER: i64 = 4;

/// `google.rpc.Code` for a request the client got wrong.
const CODE_INVALID_ARGUMENT: i64 = 3;

/// `google.rpc.Code` for a failure on the server's side.
const CODE_INTERNAL: i64 = 13;

/// The answers for every image of a batch, in request order.
pub fn parse_answers(
    status: u16,
    body: &[u8],
) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
    if !is_success(status) {
        return Err(error_from_answer(status, body));
    }
    let doc = parse_json(body, "answer body")?;
    let answer = read_answer::<AnnotateAnswer>(&doc);
    let responses = answer
        .as_ref()
        .and_then(|answer| answer.responses.ok())
        .ok_or_else(|| ProtocolError::UnexpectedAnswer {
            detail: "no `responses` array".to_owned(),
        })?;
    Ok(responses
        .iter()
        .enumerate()
        .map(|(i, response)| parse_one_response(i, response))
        .collect())
}

/// One element of `responses`.
fn parse_one_response(
    i: usize,
    response: &Field<ImageResponse<'_>>,
) -> Result<Answer, ProtocolError> {
    // Not an object: no error and no labels.
    let Some(response) = response.ok() else {
        return Ok(Answer::default());
    };
    if !matches!(response.error, Field::Absent) {
        let error = response.error.ok();
        return Err(ProtocolError::ImageError {
            path: format!("responses[{i}]"),
            code: error
                .and_then(|e| e.code.ok())
                .and_then(as_integer)
                .unwrap_or(0),
            message: error
                .and_then(|e| e.message.text())
                .unwrap_or_default()
                .to_owned(),
        });
    }
    let annotations = match &response.label_annotations {
        Field::Absent => &response.label_annotations_proto,
        camel => camel,
    };
    let annotations = match annotations {
        Field::Absent => return Ok(Answer::default()),
        Field::Is(annotations) => annotations,
        Field::Wrong(_) => {
            return Err(ProtocolError::UnexpectedAnswer {
                detail: format!("responses[{i}].labelAnnotations is not an array"),
            });
        }
    };
    let labels = annotations
        .iter()
        .enumerate()
        .map(|(j, annotation)| {
            let path = || format!("responses[{i}].labelAnnotations[{j}]");
            // An element that is not an object has neither field.
            let Some(annotation) = annotation.ok() else {
                return Ok(Label {
                    name: String::new(),
                    score: 0.0,
                });
            };
            let name = match &annotation.description {
                Field::Absent => "",
                Field::Is(text) => text,
                Field::Wrong(_) => {
                    return Err(ProtocolError::UnexpectedAnswer {
                        detail: format!("{}.description is not a string", path()),
                    });
                }
            };
            let score = match &annotation.score {
                Field::Absent => 0.0,
                Field::Is(value) | Field::Wrong(value) => {
                    as_float(value).ok_or_else(|| ProtocolError::UnexpectedAnswer {
                        detail: format!("{}.score is not a number", path()),
                    })?
                }
            };
            Ok(Label {
                name: name.to_owned(),
                score: normalise_score(score, 1.0),
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    Ok(Answer::new(labels))
}

/// The error of a non-2xx answer: `{"error": {...}}` (sometimes wrapped in a one-element array)
/// becomes [`ProtocolError::Service`], anything else [`ProtocolError::Upstream`].
fn error_from_answer(status: u16, body: &[u8]) -> ProtocolError {
    let doc = super::parse_json(body, "answer body").ok();
    let first = doc.as_ref().and_then(|doc| match doc {
        Value::Array(items) => items.first(),
        other => Some(other),
    });
    let answer = first.and_then(read_answer::<ErrorAnswer>);
    let error = answer.as_ref().and_then(|answer| answer.error.ok());
    match (error, error.and_then(|e| e.message.text())) {
        (Some(error), Some(message)) => {
            let kind = match (error.status.text(), error.code.value()) {
                (Some(name), _) => name.to_owned(),
                (_, Some(code)) => code.to_string(),
                _ => "error".to_owned(),
            };
            ProtocolError::Service {
                status,
                kind,
                message: message.to_owned(),
            }
        }
        _ => ProtocolError::Upstream {
            status,
            excerpt: excerpt(body),
        },
    }
}

/// Renders the 200 answer to a batch: one response per result, in order.
///
/// An `Ok` answer is rendered with exactly its labels (`{}` when there are none); an
/// `Err` becomes a per-image `{"error": {"code", "message"}}` with code 3 (`INVALID_ARGUMENT`)
/// for the client's mistakes and 13 (`INTERNAL`) for [`ImageProblem::Internal`].
pub fn render_backend_response(results: Vec<Result<Answer, ImageProblem>>) -> BackendResponse {
    let responses: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(i, result)| match result {
            Ok(answer) if answer.labels.is_empty() => json!({}),
            Ok(answer) => {
                let annotations: Vec<Value> = answer
                    .labels
                    .iter()
                    .map(|label| {
                        json!({
                            "mid": "",
                            "description": label.name,
                            "score": wire_number(label.score),
                            "topicality": wire_number(label.score),
                        })
                    })
                    .collect();
                json!({"labelAnnotations": annotations})
            }
            Err(problem) => {
                let code = match &problem {
                    ImageProblem::Request(_) | ImageProblem::Undecodable(_) => {
                        tracing::debug!(image = i, %problem, "image rejected");
                        CODE_INVALID_ARGUMENT
                    }
                    ImageProblem::Internal(_) => {
                        tracing::error!(image = i, %problem, "image failed");
                        CODE_INTERNAL
                    }
                };
                json!({"error": {"code": code, "message": problem.to_string()}})
            }
        })
        .collect();
    BackendResponse::json(
        StatusCode::OK,
        CONTENT_TYPE,
        Vec::new(),
        &json!({"responses": responses}),
    )
}

/// The image slots of a client's request: one per `requests[i]`, slot index `i`.
///
/// Errors only when the body is not an `images:annotate` request (not JSON, no `requests`
/// array, a field of the wrong type); the 16-image limit is left to the service.
pub fn extract_images(body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let doc = parse_json(body, "request body")?;
    Ok(locate_slots(&doc)?
        .into_iter()
        .map(|located| located.slot)
        .collect())
}

/// The request with the inline content of the given slots replaced: see
/// [`super::Protocol::replace_images`].
///
/// Only `requests[i].image.content` strings change; unknown fields survive because the body
/// goes through `serde_json::Value`. Object keys come out in serde_json's map order and numbers
/// in its canonical form, which changes no meaning (the body is not signed).
pub fn replace_images(
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let doc = parse_json(body, "request body")?;
    let slots = locate_slots(&doc)?;
    apply_replacements(doc, &slots, replacements)
}

/// Every `requests[i]` as a slot, with the pointer of its inline content.
fn locate_slots(doc: &Value) -> Result<Vec<LocatedSlot>, ProtocolError> {
    let request = wire::read::<AnnotateRequest>(doc);
    requests_of(&request)?
        .iter()
        .enumerate()
        .map(|(i, request)| {
            let path = format!("requests[{i}].image");
            let (image, content_pointer) = match find_image(i, object_at(i, request)?)? {
                Found::Inline((path, text)) => match decode_base64(text, || path) {
                    Ok(bytes) => (
                        SlotImage::Inline(bytes),
                        Some(format!("/requests/{i}/image/content")),
                    ),
                    Err(err) => (SlotImage::Unusable(err.to_string()), None),
                },
                Found::Remote { reference, .. } => (SlotImage::Remote(reference), None),
                Found::Missing(err) => (SlotImage::Unusable(err.to_string()), None),
            };
            Ok(LocatedSlot {
                slot: ImageSlot {
                    index: i,
                    path,
                    image,
                },
                content_pointer,
            })
        })
        .collect()
}

/// The `requests` array of a request body (a body that is not an object has none).
fn requests_of<'r, 'a>(
    request: &'r Field<AnnotateRequest<'a>>,
) -> Result<&'r [Field<ImageRequest<'a>>], ProtocolError> {
    let requests = match request {
        Field::Is(request) => &request.requests,
        Field::Absent | Field::Wrong(_) => &Field::Absent,
    };
    match requests {
        Field::Is(requests) => Ok(requests),
        Field::Absent => Err(ProtocolError::MissingField {
            path: "requests".to_owned(),
        }),
        Field::Wrong(other) => Err(ProtocolError::InvalidValue {
            path: "requests".to_owned(),
            expected: "an array",
            got: describe(other),
        }),
    }
}

/// `requests[i]`, which must be an object.
fn object_at<'r, 'a>(
    i: usize,
    request: &'r Field<ImageRequest<'a>>,
) -> Result<&'r ImageRequest<'a>, ProtocolError> {
    match request {
        Field::Is(request) => Ok(request),
        Field::Absent => Err(ProtocolError::MissingField {
            path: format!("requests[{i}]"),
        }),
        Field::Wrong(other) => Err(ProtocolError::InvalidValue {
            path: format!("requests[{i}]"),
            expected: "an object",
            got: describe(other),
        }),
    }
}

/// Finds the image of `requests[i]`: inline base64 as (JSON path, text), or a URL or Cloud
/// Storage object; wrong types are request-level errors.
fn find_image<'r>(
    i: usize,
    request: &'r ImageRequest<'_>,
) -> Result<Found<(String, &'r str)>, ProtocolError> {
    let base = format!("requests[{i}]");
    let missing = || {
        Found::Missing(ProtocolError::NoImage {
            path: format!("{base}.image"),
            fields: "content nor source",
        })
    };
    let image = match &request.image {
        Field::Absent => return Ok(missing()),
        Field::Is(image) => image,
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: format!("{base}.image"),
                expected: "an object",
                got: describe(other),
            });
        }
    };
    match &image.content {
        Field::Is(text) if !text.is_empty() => {
            return Ok(Found::Inline((format!("{base}.image.content"), text)));
        }
        Field::Is(_) | Field::Wrong(Value::Null) | Field::Absent => {}
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: format!("{base}.image.content"),
                expected: "a base64 string",
                got: describe(other),
            });
        }
    }
    // A `source` that is not an object names nothing.
    let Some(source) = image.source.ok() else {
        return Ok(missing());
    };
    for (camel, value, proto) in [
        ("imageUri", &source.image_uri, &source.image_uri_proto),
        (
            "gcsImageUri",
            &source.gcs_image_uri,
            &source.gcs_image_uri_proto,
        ),
    ] {
        let value = match value {
            Field::Absent => proto,
            camel => camel,
        };
        match value {
            Field::Is(reference) if !reference.is_empty() => {
                return Ok(Found::Remote {
                    path: format!("{base}.image.source.{camel}"),
                    reference: reference.clone().into_owned(),
                });
            }
            Field::Is(_) | Field::Wrong(Value::Null) | Field::Absent => {}
            Field::Wrong(other) => {
                return Err(ProtocolError::InvalidValue {
                    path: format!("{base}.image.source.{camel}"),
                    expected: "a string",
                    got: describe(other),
                });
            }
        }
    }
    Ok(missing())
}

/// The labels asked for by `requests[i].features`: the largest `LABEL_DETECTION`
/// `maxResults` (0 or absent counts as [`DEFAULT_MAX_RESULTS`]), or 0 without such a feature.
fn max_labels_of(i: usize, request: &ImageRequest<'_>) -> Result<usize, ProtocolError> {
    let features = match &request.features {
        Field::Absent => return Ok(0),
        Field::Is(features) => features,
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: format!("requests[{i}].features"),
                expected: "an array",
                got: describe(other),
            });
        }
    };
    let mut max_labels = 0;
    for (j, feature) in features.iter().enumerate() {
        // A feature that is not an object asks for nothing.
        let Some(feature) = feature.ok().filter(|f| asks_for_labels(f.kind.ok())) else {
            continue;
        };
        let max_results = match &feature.max_results {
            Field::Absent => &feature.max_results_proto,
            camel => camel,
        };
        let wanted = match max_results.value() {
            None | Some(Value::Null) => DEFAULT_MAX_RESULTS,
            Some(value) => match as_integer(value).map(usize::try_from) {
                Some(Ok(0)) => DEFAULT_MAX_RESULTS,
                Some(Ok(n)) => n,
                _ => {
                    return Err(ProtocolError::InvalidValue {
                        path: format!("requests[{i}].features[{j}].maxResults"),
                        expected: "a non-negative integer",
                        got: describe(value),
                    });
                }
            },
        };
        max_labels = max_labels.max(wanted);
    }
    Ok(max_labels)
}

/// Whether a feature's `type` is `LABEL_DETECTION`: by name, or by number as the official
/// clients' REST transports send enums (`$alt=json;enum-encoding=int`). Absent, `null`,
/// another name or number (`TYPE_UNSPECIFIED` = 0, `FACE_DETECTION` = 1, …) is not.
fn asks_for_labels(kind: Option<&Value>) -> bool {
    match kind {
        Some(Value::String(name)) => name == LABEL_DETECTION,
        Some(Value::Number(n)) => n.as_i64() == Some(LABEL_DETECTION_NUMBER),
        _ => false,
    }
}

/// An integer sent as a JSON number or, as protobuf's JSON mapping allows, a string.
fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A float sent as a JSON number or a numeric string.
fn as_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The Google Vision adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::GoogleVision`].
#[derive(Debug, Clone, Copy)]
pub struct Google;

impl Api for Google {
    fn name(&self) -> &'static str {
        "google"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let body = json!({"error": {
            "code": err.status.as_u16(),
            "message": err.message,
            "status": err.kind.name(),
        }});
        (body, Vec::new())
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        // google.rpc.Code, by its documented HTTP mapping.
        Kind::Name(match status.as_u16() {
            400 | 413 => "INVALID_ARGUMENT",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 => "UNIMPLEMENTED",
            429 => "RESOURCE_EXHAUSTED",
            502 | 503 => "UNAVAILABLE",
            408 | 504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        })
    }

    fn max_image_bytes(&self) -> Option<usize> {
        // 10 MB per JSON request, base64 adding a third: 7.5 MB raw for one image.
        Some(15 * 1024 * 1024 / 2)
    }

    fn max_images(&self) -> Option<usize> {
        Some(MAX_IMAGES_PER_REQUEST)
    }

    fn recognizes(&self, route: &str, _headers: &HeaderMap) -> bool {
        route == PATH
    }

    /// Whether a path (query ignored) is one of Cloud Vision's endpoints: `/v1/images:*`,
    /// `/v1/files:*`, or anything under a beta version `/v1p…/` (`/v1p4beta1/images:annotate`).
    fn owns(&self, _method: &Method, route: &str, _headers: &HeaderMap) -> bool {
        let route = route.split('?').next().unwrap_or_default();
        route.starts_with("/v1/images:")
            || route.starts_with("/v1/files:")
            || route
                .strip_prefix("/v1p")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(version, rest)| !version.is_empty() && !rest.is_empty())
    }

    /// The request for labels of one image: see [`super::Protocol::client_request`].
    fn client_request(&self, image: &[u8], max_labels: usize) -> ClientRequest {
        let body = json!({
            "requests": [{
                "image": {"content": encode_base64(image)},
                "features": [{"type": LABEL_DETECTION, "maxResults": max_labels}],
            }],
        });
        ClientRequest {
            path_and_query: PATH.to_owned(),
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// The answer for the first (for a client request: the only) image.
    ///
    /// A per-image `error` becomes [`ProtocolError::ImageError`]; no `labelAnnotations` is an
    /// empty answer.
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        parse_answers(status, body)?
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(ProtocolError::UnexpectedAnswer {
                    detail: "`responses` is empty".to_owned(),
                })
            })
    }

    fn parse_answers(
        &self,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        parse_answers(status, body)
    }

    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        extract_images(req.body)
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        replace_images(req.body, replacements).map(Rewritten::body)
    }

    fn grpc(&self) -> Option<&'static dyn GrpcApi> {
        Some(&Google)
    }
}

impl Emulated for Google {
    /// Reads an `images:annotate` request into its images: see
    /// [`super::Protocol::parse_backend_request`].
    ///
    /// Request-level errors: a path that is not `…/images:annotate`, a body that is not JSON, no
    /// `requests` array, more than [`MAX_IMAGES_PER_REQUEST`] entries, fields of the wrong type.
    /// Per-image errors (answered inside the 200): no image, bad base64, a remote image.
    /// `max_labels` is the largest `maxResults` of the `LABEL_DETECTION` features (0 when no such
    /// feature is asked for: the image's response is then `{}`); `min_score` is always 0.
    fn parse_backend_request(
        &self,
        path: &str,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        let route = path.split('?').next().unwrap_or_default();
        if !route.ends_with("/images:annotate") {
            return Err(ProtocolError::UnsupportedOperation {
                found: format!("path `{route}`"),
                expected: "`POST /v1/images:annotate`",
            });
        }
        let doc = parse_json(body, "request body")?;
        let request = wire::read::<AnnotateRequest>(&doc);
        let requests = requests_of(&request)?;
        if requests.len() > MAX_IMAGES_PER_REQUEST {
            return Err(ProtocolError::TooManyImages {
                limit: MAX_IMAGES_PER_REQUEST,
                actual: requests.len(),
            });
        }
        let images = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let request = object_at(i, request)?;
                let max_labels = max_labels_of(i, request)?;
                let image = find_image(i, request)?
                    .inline()
                    .and_then(|(path, text)| decode_base64(text, || path))
                    .map(|bytes| BackendImage {
                        bytes,
                        max_labels,
                        min_score: 0.0,
                    })
                    .map_err(ImageProblem::from);
                Ok(image)
            })
            .collect::<Result<Vec<_>, ProtocolError>>()?;
        Ok(BackendRequest::plain(images))
    }

    fn render_backend_response(
        &self,
        _reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        render_backend_response(results)
    }

    /// Client mistakes are 400 `INVALID_ARGUMENT` with the error's message, another path 404
    /// `NOT_FOUND`, unavailable 503 `UNAVAILABLE`; ours a generic 500 `INTERNAL`.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let (status, name) = match class {
            ErrorClass::BadRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            ErrorClass::UnsupportedOperation => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            ErrorClass::Internal => {
                return ErrorKind::server_error(
                    Kind::Name("INTERNAL"),
                    "Internal error encountered.",
                );
            }
        };
        ErrorKind::new(status, Kind::Name(name))
    }

    /// Google's quota error (429 `RESOURCE_EXHAUSTED`): see [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        super::shape::render(
            super::Protocol::GoogleVision,
            &ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Kind::Name("RESOURCE_EXHAUSTED"),
                "backend is saturated; retry later",
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AnswerCase, Protocol, check_answer_cases, fixture, json_of};

    /// Labels with scores, best first.
    fn answer(labels: &[(&str, f32)]) -> Answer {
        Answer::new(
            labels
                .iter()
                .map(|&(name, score)| Label {
                    name: name.to_owned(),
                    score,
                })
                .collect(),
        )
    }

    fn backend(body: &[u8]) -> Result<BackendRequest, ProtocolError> {
        Google.parse_backend_request(PATH, &HeaderMap::new(), body)
    }

    /// A request body with one `requests[]` entry per given `image` object.
    fn batch(images: &[Value]) -> Vec<u8> {
        let requests: Vec<Value> = images
            .iter()
            .map(|image| json!({"image": image, "features": [{"type": LABEL_DETECTION}]}))
            .collect();
        json!({ "requests": requests }).to_string().into_bytes()
    }

    #[test]
    fn parse_answer_on_fixtures() {
        // (fixture or inline body, status, Ok((top1, label count)) or Err(message fragment))
        let html = b"<html>\n<body>502 Bad Gateway</body></html>".to_vec();
        let cases: Vec<AnswerCase> = vec![
            (
                "labels",
                fixture("google_labels.json"),
                200,
                Ok((Some("Dog"), 8)),
            ),
            (
                "no labels",
                fixture("google_no_labels.json"),
                200,
                Ok((None, 0)),
            ),
            (
                "per-image error",
                fixture("google_image_error.json"),
                200,
                Err("upstream could not process responses[0] (code 3): Bad image data."),
            ),
            (
                "bad request",
                fixture("google_error_invalid_argument.json"),
                400,
                Err("upstream answered HTTP 400 INVALID_ARGUMENT: Invalid value at"),
            ),
            (
                "api disabled",
                fixture("google_error_api_key.json"),
                403,
                Err("upstream answered HTTP 403 PERMISSION_DENIED: Cloud Vision API"),
            ),
            (
                "html gateway error",
                html,
                502,
                Err("upstream answered HTTP 502: <html> <body>502 Bad Gateway</body></html>"),
            ),
            (
                "not json",
                b"{\"responses\": [".to_vec(),
                200,
                Err("answer body is not valid JSON: "),
            ),
            (
                "no responses",
                b"{}".to_vec(),
                200,
                Err("no `responses` array"),
            ),
            (
                "empty responses",
                b"{\"responses\": []}".to_vec(),
                200,
                Err("`responses` is empty"),
            ),
        ];
        check_answer_cases(cases, |status, body| Google.parse_answer(status, body));
    }

    #[test]
    fn labels_are_sorted_and_scores_kept() {
        let answer = Google
            .parse_answer(200, &fixture("google_labels.json"))
            .unwrap();
        let scores: Vec<f32> = answer.labels.iter().map(|l| l.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert_eq!(answer.labels[1].name, "Dog breed");
        assert!((answer.labels[1].score - 0.961_381_26).abs() < 1e-6);
        assert!(answer.top_k_contains("Golden Retriever", 4));
        assert!(!answer.top_k_contains("Golden Retriever", 3));
    }

    #[test]
    fn parse_answers_keeps_per_image_results() {
        let results = parse_answers(200, &fixture("google_batch_mixed.json")).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap().top1(), Some("Car"));
        match &results[1] {
            Err(ProtocolError::ImageError {
                path,
                code,
                message,
            }) => {
                assert_eq!(path, "responses[1]");
                assert_eq!(*code, 7);
                assert!(message.starts_with("We can not access the URL"));
            }
            other => panic!("expected an image error, got {other:?}"),
        }
        assert_eq!(results[2], Ok(Answer::default()));
    }

    #[test]
    fn client_request_has_the_documented_shape() {
        let request = Google.client_request(b"\xff\xd8\xff\xd9", 7);
        assert_eq!(request.path_and_query, "/v1/images:annotate");
        assert_eq!(
            request.headers,
            [("Content-Type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(
            json_of(&request.body),
            json!({"requests": [{
                "image": {"content": "/9j/2Q=="},
                "features": [{"type": "LABEL_DETECTION", "maxResults": 7}],
            }]})
        );
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for max_labels in [1, 5, 10, 50] {
            let request = Protocol::GoogleVision.client_request(&image, max_labels);
            let parsed = Protocol::GoogleVision
                .parse_backend_request(&request.path_and_query, &HeaderMap::new(), &request.body)
                .unwrap();
            assert_eq!(parsed.images.len(), 1);
            let got = parsed.images[0].as_ref().unwrap();
            assert_eq!(got.bytes, image);
            assert_eq!(got.max_labels, max_labels);
            assert_eq!(got.min_score, 0.0);
        }
    }

    #[test]
    fn rendered_answers_parse_back_to_the_same_labels() {
        let sent = answer(&[
            ("golden retriever", 0.8713),
            ("Labrador retriever", 0.0612),
            ("tennis ball", 0.004),
        ]);
        let rendered = render_backend_response(vec![Ok(sent.clone()), Ok(Answer::default())]);
        assert_eq!(rendered.status, StatusCode::OK);
        assert_eq!(rendered.headers[0].1, "application/json; charset=UTF-8");
        let doc = json_of(&rendered.body);
        assert_eq!(
            doc["responses"][0]["labelAnnotations"][0],
            json!({"mid": "", "description": "golden retriever", "score": 0.8713,
                   "topicality": 0.8713})
        );
        assert_eq!(doc["responses"][1], json!({}));
        let back = parse_answers(rendered.status.as_u16(), &rendered.body).unwrap();
        let first = back[0].as_ref().unwrap();
        assert_eq!(first.labels.len(), sent.labels.len());
        for (a, b) in first.labels.iter().zip(&sent.labels) {
            assert_eq!(a.name, b.name);
            assert!((a.score - b.score).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        assert_eq!(back[1], Ok(Answer::default()));
    }

    #[test]
    fn batch_of_three_with_one_bad_image() {
        let body = batch(&[
            json!({"content": encode_base64(b"first image")}),
            json!({"content": "%%% not base64 %%%"}),
            json!({"content": encode_base64(b"third image")}),
        ]);
        let request = backend(&body).unwrap();
        assert_eq!(request.images.len(), 3);
        assert_eq!(request.images[0].as_ref().unwrap().bytes, b"first image");
        assert_eq!(request.images[2].as_ref().unwrap().bytes, b"third image");
        let problem = request.images[1].as_ref().unwrap_err().to_string();
        assert!(
            problem.starts_with("image is not valid base64 at requests[1].image.content: "),
            "{problem}"
        );

        // The backend classifies the good ones and passes the problem through.
        let results: Vec<_> = request
            .images
            .into_iter()
            .map(|image| image.map(|_| answer(&[("daisy", 0.9)])))
            .collect();
        let rendered = render_backend_response(results);
        assert_eq!(rendered.status, StatusCode::OK);
        let doc = json_of(&rendered.body);
        assert_eq!(doc["responses"][1]["error"]["code"], 3);
        let back = parse_answers(200, &rendered.body).unwrap();
        assert_eq!(back[0].as_ref().unwrap().top1(), Some("daisy"));
        assert!(matches!(
            back[1],
            Err(ProtocolError::ImageError { code: 3, .. })
        ));
        assert_eq!(back[2].as_ref().unwrap().top1(), Some("daisy"));
    }

    #[test]
    fn image_problems_render_as_per_image_errors() {
        let rendered = render_backend_response(vec![
            Err(ImageProblem::Undecodable(
                "not a JPEG, PNG or WebP".to_owned(),
            )),
            Err(ImageProblem::Internal(
                "model output has no scores".to_owned(),
            )),
        ]);
        assert_eq!(rendered.status, StatusCode::OK);
        let doc = json_of(&rendered.body);
        assert_eq!(
            doc["responses"][0]["error"],
            json!({"code": 3, "message": "image could not be decoded: not a JPEG, PNG or WebP"})
        );
        assert_eq!(doc["responses"][1]["error"]["code"], 13);
    }

    #[test]
    fn more_than_sixteen_images_is_a_request_error() {
        let image = json!({"content": encode_base64(b"img")});
        assert_eq!(
            backend(&batch(&vec![image.clone(); 16]))
                .unwrap()
                .images
                .len(),
            16
        );

        let err = backend(&batch(&vec![image; 17])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "request has 17 images, over the limit of 16 images per request"
        );
        let rendered = crate::protocol::Protocol::GoogleVision.render_backend_error(&err);
        assert_eq!(rendered.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(&rendered.body),
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                   "message": "request has 17 images, over the limit of 16 images per request"}})
        );
        // Our own client reads it back as a service error.
        let back = Google.parse_answer(400, &rendered.body).unwrap_err();
        assert!(
            matches!(back, ProtocolError::Service { status: 400, ref kind, .. }
            if kind == "INVALID_ARGUMENT")
        );
    }

    #[test]
    fn per_image_entries_of_backend_requests() {
        let jpeg = encode_base64(b"jpeg");
        // (request entry, Ok(max_labels) or Err(per-image message))
        let cases: Vec<(Value, Result<usize, &str>)> = vec![
            (json!({"image": {"content": jpeg}}), Ok(0)),
            (
                json!({"image": {"content": jpeg}, "features": [{"type": "LABEL_DETECTION"}]}),
                Ok(10),
            ),
            (
                json!({"image": {"content": jpeg},
                       "features": [{"type": "LABEL_DETECTION", "maxResults": 0}]}),
                Ok(10),
            ),
            (
                json!({"image": {"content": jpeg},
                       "features": [{"type": "LABEL_DETECTION", "max_results": "3"},
                                    {"type": "TEXT_DETECTION", "maxResults": 50}]}),
                Ok(3),
            ),
            (
                json!({"image": {"content": jpeg, "source": {"imageUri": "https://x/y.jpg"}},
                       "features": [{"type": "LABEL_DETECTION", "maxResults": 4},
                                    {"type": "LABEL_DETECTION", "maxResults": 12}]}),
                Ok(12),
            ),
            (
                json!({"features": [{"type": "LABEL_DETECTION"}]}),
                Err("requests[0].image has neither content nor source"),
            ),
            (
                json!({"image": {"content": ""}}),
                Err("requests[0].image has neither content nor source"),
            ),
            (
                json!({"image": {"source": {"imageUri": "https://example.com/a.jpg"}}}),
                Err(
                    "requests[0].image.source.imageUri refers to https://example.com/a.jpg; \
                     this backend does not fetch remote images",
                ),
            ),
            (
                json!({"image": {"source": {"gcs_image_uri": "gs://bucket/a.jpg"}}}),
                Err("requests[0].image.source.gcsImageUri refers to gs://bucket/a.jpg"),
            ),
        ];
        for (entry, expected) in cases {
            let body = json!({ "requests": [entry] }).to_string();
            let request = backend(body.as_bytes()).unwrap();
            match (&request.images[0], expected) {
                (Ok(image), Ok(max_labels)) => {
                    assert_eq!(image.bytes, b"jpeg", "{body}");
                    assert_eq!(image.max_labels, max_labels, "{body}");
                }
                (Err(problem), Err(fragment)) => {
                    assert!(problem.to_string().contains(fragment), "{body}: {problem}");
                }
                (got, expected) => panic!("{body}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    /// What the official clients' REST transports send (google-cloud-vision for Python,
    /// @google-cloud/vision for Node): `?$alt=json;enum-encoding=int`, spelled raw or
    /// percent-encoded, and features as numbers.
    #[test]
    fn official_rest_clients_numeric_enums_and_alt_json() {
        let jpeg = encode_base64(b"jpeg");
        // (path, features, labels wanted)
        let cases: Vec<(&str, Value, usize)> = vec![
            (PATH, json!([{"type": 4}]), DEFAULT_MAX_RESULTS),
            (PATH, json!([{"type": 4, "maxResults": 3}]), 3),
            (PATH, json!([{"type": 4, "max_results": "7"}]), 7),
            (
                "/v1/images:annotate?$alt=json;enum-encoding=int",
                json!([{"type": 4}]),
                10,
            ),
            (
                "/v1/images:annotate?%24alt=json%3Benum-encoding%3Dint",
                json!([{"type": 4, "maxResults": 5}]),
                5,
            ),
            (
                "/v1/images:annotate?alt=json",
                json!([{"type": "LABEL_DETECTION"}]),
                10,
            ),
            // Numbers and names mixed in one request: the largest wins.
            (
                PATH,
                json!([{"type": "LABEL_DETECTION", "maxResults": 2}, {"type": 4, "maxResults": 6}]),
                6,
            ),
            // Other features by number: FACE_DETECTION (1), TEXT_DETECTION (5),
            // TYPE_UNSPECIFIED (0), OBJECT_LOCALIZATION (19), a float, a numeric string.
            (
                PATH,
                json!([{"type": 1}, {"type": 5}, {"type": 0}, {"type": 19}]),
                0,
            ),
            (
                PATH,
                json!([{"type": 4.5}, {"type": "4"}, {"type": null}, {}]),
                0,
            ),
        ];
        for (path, features, wanted) in cases {
            let body = json!({"requests": [{"image": {"content": jpeg}, "features": features}]});
            let request = Google
                .parse_backend_request(path, &HeaderMap::new(), body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{path} {features}: {e}"));
            let image = request.images[0].as_ref().unwrap();
            assert_eq!(image.max_labels, wanted, "{path} {features}");
            // The proxy's side recognises and reads the same request.
            assert_eq!(
                Protocol::recognize(&axum::http::Method::POST, path, &HeaderMap::new()),
                Some(Protocol::GoogleVision),
                "{path}"
            );
            let slots = extract_images(body.to_string().as_bytes()).unwrap();
            assert_eq!(slots[0].bytes(), Some(&b"jpeg"[..]), "{path}");
        }
    }

    #[test]
    fn request_level_errors_and_their_rendering() {
        let good = batch(&[json!({"content": "AAAA"})]);
        // (path, body, HTTP status, message fragment)
        let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
            (
                "/v1/files:annotate",
                good.clone(),
                StatusCode::NOT_FOUND,
                "unsupported operation: path `/v1/files:annotate`",
            ),
            (
                PATH,
                b"requests=1".to_vec(),
                StatusCode::BAD_REQUEST,
                "request body is not valid JSON: ",
            ),
            (
                PATH,
                b"{\"request\": []}".to_vec(),
                StatusCode::BAD_REQUEST,
                "missing field requests",
            ),
            (
                PATH,
                b"{\"requests\": {}}".to_vec(),
                StatusCode::BAD_REQUEST,
                "requests must be an array, got {}",
            ),
            (
                PATH,
                b"{\"requests\": [{\"image\": {\"content\": 42}}]}".to_vec(),
                StatusCode::BAD_REQUEST,
                "requests[0].image.content must be a base64 string, got 42",
            ),
            (
                PATH,
                br#"{"requests": [{"image": {"content": "AAAA"},
                    "features": [{"type": "LABEL_DETECTION", "maxResults": -2}]}]}"#
                    .to_vec(),
                StatusCode::BAD_REQUEST,
                "requests[0].features[0].maxResults must be a non-negative integer, got -2",
            ),
        ];
        for (path, body, status, fragment) in cases {
            let err = Google
                .parse_backend_request(path, &HeaderMap::new(), &body)
                .unwrap_err();
            assert!(err.to_string().contains(fragment), "{path}: {err}");
            let rendered = crate::protocol::Protocol::GoogleVision.render_backend_error(&err);
            assert_eq!(rendered.status, status, "{err}");
            let doc = json_of(&rendered.body);
            assert_eq!(doc["error"]["code"], status.as_u16(), "{err}");
            assert!(doc["error"]["message"].as_str().unwrap().contains(fragment));
        }
        // An API key in the query string does not matter.
        assert!(
            Google
                .parse_backend_request("/v1/images:annotate?key=abc", &HeaderMap::new(), &good)
                .is_ok()
        );
    }

    #[test]
    fn internal_errors_are_generic_500s() {
        let err = ProtocolError::Upstream {
            status: 502,
            excerpt: "secret internals".to_owned(),
        };
        let rendered = crate::protocol::Protocol::GoogleVision.render_backend_error(&err);
        assert_eq!(rendered.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8(rendered.body).unwrap();
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("\"INTERNAL\""), "{body}");
    }

    #[test]
    fn extract_images_lists_every_slot() {
        let slots = extract_images(&fixture("google_batch_request.json")).unwrap();
        assert_eq!(slots.len(), 3);
        let jpeg = slots[0].bytes().unwrap();
        assert!(jpeg.starts_with(b"\xff\xd8\xff") && jpeg.ends_with(b"\xff\xd9"));
        assert_eq!(slots[0].path, "requests[0].image");
        assert_eq!(
            slots[1].image,
            SlotImage::Remote("https://example.com/photos/street.jpg".to_owned())
        );
        assert!(!slots[1].is_replaceable());
        assert!(slots[2].bytes().unwrap().starts_with(b"\x89PNG"));
        assert_eq!(slots.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2]);

        let broken = batch(&[json!({"content": "***"}), json!({})]);
        let slots = extract_images(&broken).unwrap();
        assert!(matches!(&slots[0].image, SlotImage::Unusable(why) if why.contains("base64")));
        assert!(matches!(&slots[1].image, SlotImage::Unusable(why)
            if why == "requests[1].image has neither content nor source"));
        assert!(extract_images(b"{\"requests\": 3}").is_err());
    }

    #[test]
    fn replace_images_swaps_only_the_content() {
        let body = fixture("google_batch_request.json");
        let original = json_of(&body);
        let replaced = replace_images(
            &body,
            &[(0, b"small jpeg".to_vec()), (2, b"small png".to_vec())],
        )
        .unwrap();
        let mut expected = original.clone();
        expected["requests"][0]["image"]["content"] = json!(encode_base64(b"small jpeg"));
        expected["requests"][2]["image"]["content"] = json!(encode_base64(b"small png"));
        assert_eq!(json_of(&replaced), expected);

        let slots = extract_images(&replaced).unwrap();
        assert_eq!(slots[0].bytes(), Some(&b"small jpeg"[..]));
        assert_eq!(slots[2].bytes(), Some(&b"small png"[..]));

        assert_eq!(json_of(&replace_images(&body, &[]).unwrap()), original);
        let err = replace_images(&body, &[(1, b"x".to_vec())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image slot 1 (requests[1].image) cannot be replaced: it refers to \
             https://example.com/photos/street.jpg"
        );
        let err = replace_images(&body, &[(3, b"x".to_vec())]).unwrap_err();
        assert_eq!(err, ProtocolError::NoSuchSlot { index: 3, count: 3 });
    }
}
