//! Amazon Rekognition `DetectLabels` (AWS JSON 1.1 protocol).
//!
//! Request: `POST /` with `X-Amz-Target: RekognitionService.DetectLabels` and
//! `Content-Type: application/x-amz-json-1.1`, JSON:
//!
//! ```json
//! {"Image": {"Bytes": "<base64>"}, "MaxLabels": 10, "MinConfidence": 55}
//! ```
//!
//! Answer: `{"Labels": [{"Name", "Confidence", "Instances", "Parents", ...}],
//! "LabelModelVersion": "3.0"}`.
//!
//! Quirks this file handles:
//! - The operation is named by the `X-Amz-Target` header, not by the path.
//! - `Confidence` and `MinConfidence` are percentages (0–100); [`super::Label::score`] is in
//!   `0..=1`, so they are divided (or multiplied) by 100 at the edge.
//! - One image per request, at most [`MAX_IMAGE_BYTES`] once base64-decoded. There are no
//!   per-image errors: every failure is an HTTP 4xx/5xx with the kind in the
//!   `x-amzn-ErrorType` header and `{"__type": kind, "Message": text}` in the body. Some AWS
//!   front ends spell it `message` and qualify the kind (`com.amazon.coral.service#Kind`);
//!   [`Rekognition::parse_answer`] accepts both.
//! - `Image.S3Object` names an image in S3: the backend does not fetch it
//!   (`InvalidS3ObjectException`), the proxy leaves it untouched. `Image.Bytes` wins if both
//!   are present.
//! - The body is signed (SigV4): after [`replace_images`] the proxy must re-sign the request.
//! - The real service defaults `MinConfidence` to 55; this crate's local backend defaults it to
//!   0 so that evaluation sees every label, and honours it when given.

use std::borrow::Cow;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Api, Emulated};
use super::one_image::{Found, only_result};
use super::shape::{ApiError, ErrorKind, Kind};
use super::wire::{Field, wire_object};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    LocatedSlot, ProtocolError, SlotImage, WireLabel, apply_replacements, decode_base64, describe,
    encode_base64, excerpt, is_success, labels_from, normalise_score, parse_json, read_answer,
    read_request, wire_number,
};
use super::{BadRequest, ErrorClass};
use super::{ProxyRequest, Rewritten};

/// The fields of a `DetectLabels` request this crate reads. The proxy rewrites the `Value`
/// the request was read from, so every other field goes up as sent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DetectLabelsRequest<'a> {
    #[serde(default, borrow)]
    image: Field<WireImage<'a>>,
    #[serde(default)]
    max_labels: Field<Value>,
    #[serde(default)]
    min_confidence: Field<Value>,
}

/// `Image`: inline `Bytes` (base64) or an `S3Object`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireImage<'a> {
    #[serde(default, borrow)]
    bytes: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    s3_object: Field<S3Object<'a>>,
}

/// `Image.S3Object`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Object<'a> {
    #[serde(default, borrow)]
    bucket: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    version: Field<Cow<'a, str>>,
}

/// A `DetectLabels` answer: `{"Labels": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DetectLabelsAnswer<'a> {
    #[serde(default, borrow)]
    labels: Field<Vec<Field<WireLabelItem<'a>>>>,
}

/// One of `Labels`: `{"Name", "Confidence"}` (percent).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireLabelItem<'a> {
    #[serde(default, borrow)]
    name: Field<Cow<'a, str>>,
    #[serde(default)]
    confidence: Field<serde_json::Number>,
}

impl WireLabel for WireLabelItem<'_> {
    fn name(&self) -> Option<&str> {
        self.name.text()
    }

    fn score(&self) -> Option<f64> {
        self.confidence.ok().and_then(serde_json::Number::as_f64)
    }
}

/// An error answer: `{"__type", "Message"}`, or `message` from some front ends.
#[derive(Debug, Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(default, rename = "__type", borrow)]
    kind: Field<Cow<'a, str>>,
    #[serde(default, rename = "Message", borrow)]
    message: Field<Cow<'a, str>>,
    #[serde(default, rename = "message", borrow)]
    message_lower: Field<Cow<'a, str>>,
}

wire_object!('a, DetectLabelsRequest, WireImage, S3Object, DetectLabelsAnswer, WireLabelItem, ErrorAnswer);

/// The `X-Amz-Target` value of `DetectLabels`.
pub const TARGET: &str = "RekognitionService.DetectLabels";

/// The content type of AWS JSON 1.1 requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The largest image accepted as `Image.Bytes`, decoded (5 MiB).
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// Labels per image when `MaxLabels` is absent.
pub const DEFAULT_MAX_LABELS: usize = 10;

/// The `LabelModelVersion` the backend reports.
pub const LABEL_MODEL_VERSION: &str = "3.0";

/// `Confidence` is a percentage.
const CONFIDENCE_SCALE: f64 = 100.0;

/// The header naming the operation.
const TARGET_HEADER: &str = "x-amz-target";

/// The error of a non-2xx answer.
fn error_from_answer(status: u16, body: &[u8]) -> ProtocolError {
    let doc = super::parse_json(body, "answer body").ok();
    let answer = doc.as_ref().and_then(read_answer::<ErrorAnswer>);
    let answer = answer.as_ref();
    let kind = answer.and_then(|a| a.kind.text()).map(short_error_kind);
    let message = answer.and_then(|a| a.message.text().or_else(|| a.message_lower.text()));
    match (kind, message) {
        (None, None) => ProtocolError::Upstream {
            status,
            excerpt: excerpt(body),
        },
        (kind, message) => ProtocolError::Service {
            status,
            kind: kind.unwrap_or("UnknownError").to_owned(),
            message: message.unwrap_or_default().to_owned(),
        },
    }
}

/// `com.amazon.coral.service#Kind:http://…` → `Kind`.
fn short_error_kind(kind: &str) -> &str {
    let kind = kind.rsplit('#').next().unwrap_or(kind);
    kind.split(':').next().unwrap_or(kind)
}

/// Fails unless `X-Amz-Target` names `DetectLabels`.
fn check_target(headers: &HeaderMap) -> Result<(), ProtocolError> {
    let expected = "`X-Amz-Target: RekognitionService.DetectLabels`";
    match headers.get(TARGET_HEADER) {
        Some(value) if value.as_bytes() == TARGET.as_bytes() => Ok(()),
        Some(value) => Err(ProtocolError::UnsupportedOperation {
            found: format!(
                "X-Amz-Target `{}`",
                String::from_utf8_lossy(value.as_bytes())
            ),
            expected,
        }),
        None => Err(ProtocolError::UnsupportedOperation {
            found: "no X-Amz-Target header".to_owned(),
            expected,
        }),
    }
}

/// Renders the answer for the request's single image.
///
/// `Ok` is rendered with exactly its labels (`Confidence` = score × 100, empty `Instances` and
/// `Parents`); `Err` becomes the matching error response (an undecodable image is
/// `InvalidImageFormatException`). Anything but one result is our bug: a logged 500.
pub fn render_backend_response(results: Vec<Result<Answer, ImageProblem>>) -> BackendResponse {
    let Some(result) = only_result("Rekognition", results) else {
        return internal_error();
    };
    match result {
        Ok(answer) => {
            let labels: Vec<Value> = answer
                .labels
                .iter()
                .map(|label| {
                    json!({
                        "Name": label.name,
                        "Confidence": wire_number(label.score * CONFIDENCE_SCALE as f32),
                        "Instances": [],
                        "Parents": [],
                    })
                })
                .collect();
            let body = json!({"Labels": labels, "LabelModelVersion": LABEL_MODEL_VERSION});
            BackendResponse::json(StatusCode::OK, CONTENT_TYPE, Vec::new(), &body)
        }
        Err(ImageProblem::Request(err)) => super::Protocol::Rekognition.render_backend_error(&err),
        Err(problem @ ImageProblem::Undecodable(_)) => {
            tracing::debug!(%problem, "image rejected");
            error_response("InvalidImageFormatException", &problem.to_string())
        }
        Err(problem @ ImageProblem::Internal(_)) => {
            tracing::error!(%problem, "image failed");
            internal_error()
        }
    }
}

/// A 400 error answer of the given kind.
fn error_response(kind: &str, message: &str) -> BackendResponse {
    render_error(StatusCode::BAD_REQUEST, kind, message)
}

/// `{"__type", "Message"}` with `x-amzn-ErrorType` ([`super::shape`]).
fn render_error(status: StatusCode, kind: &str, message: &str) -> BackendResponse {
    super::shape::render(
        super::Protocol::Rekognition,
        &ApiError::new(status, Kind::Name(kind), message),
    )
}

/// The generic 500 answer; the cause goes to the log, not to the client.
fn internal_error() -> BackendResponse {
    render_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "Internal server error",
    )
}

/// The single image slot of a client's request (index 0, `Image`).
///
/// Errors only when the body is not a JSON object or `Image` is not an object; a missing
/// image or bad base64 is an unusable slot, left for the service to reject.
pub fn extract_images(body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let doc = parse_json(body, "request body")?;
    Ok(vec![locate_slot(&doc)?.slot])
}

/// The request with `Image.Bytes` replaced (slot 0 is the only slot): see
/// [`super::Protocol::replace_images`]. The proxy must re-sign the result.
pub fn replace_images(
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let doc = parse_json(body, "request body")?;
    let slot = locate_slot(&doc)?;
    apply_replacements(doc, &[slot], replacements)
}

/// The request's image as a slot, with the pointer of its inline bytes.
fn locate_slot(doc: &Value) -> Result<LocatedSlot, ProtocolError> {
    let request: DetectLabelsRequest = read_request(doc)?;
    let (image, content_pointer) = match find_image(&request)? {
        Found::Inline(text) => match decode_base64(text, || "Image.Bytes".to_owned()) {
            Ok(bytes) => (SlotImage::Inline(bytes), Some("/Image/Bytes".to_owned())),
            Err(err) => (SlotImage::Unusable(err.to_string()), None),
        },
        Found::Remote { reference, .. } => (SlotImage::Remote(reference), None),
        Found::Missing(err) => (SlotImage::Unusable(err.to_string()), None),
    };
    Ok(LocatedSlot {
        slot: ImageSlot {
            index: 0,
            path: "Image".to_owned(),
            image,
        },
        content_pointer,
    })
}

/// Finds the request's image: the base64 text of `Image.Bytes`, or an S3 object as
/// `s3://bucket/name` (with `?versionId=` when given); wrong types are request-level errors.
fn find_image<'r>(request: &'r DetectLabelsRequest<'_>) -> Result<Found<&'r str>, ProtocolError> {
    let image = match &request.image {
        Field::Absent => {
            return Ok(Found::Missing(ProtocolError::MissingField {
                path: "Image".to_owned(),
            }));
        }
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: "Image".to_owned(),
                expected: "an object",
                got: describe(other),
            });
        }
        Field::Is(image) => image,
    };
    match &image.bytes {
        Field::Is(text) => return Ok(Found::Inline(text)),
        Field::Absent | Field::Wrong(Value::Null) => {}
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: "Image.Bytes".to_owned(),
                expected: "a base64 string",
                got: describe(other),
            });
        }
    }
    if !image.s3_object.is_unset() {
        // Any non-null `S3Object` names a remote image; missing parts are left empty.
        let object = image.s3_object.ok();
        let part = |field: Option<&'r Field<Cow<'_, str>>>| {
            field.and_then(Field::text).unwrap_or_default()
        };
        let bucket = part(object.map(|o| &o.bucket));
        let name = part(object.map(|o| &o.name));
        let version = part(object.map(|o| &o.version));
        let mut reference = format!("s3://{bucket}/{name}");
        if !version.is_empty() {
            reference = format!("{reference}?versionId={version}");
        }
        return Ok(Found::Remote {
            path: "Image.S3Object".to_owned(),
            reference,
        });
    }
    Ok(Found::Missing(ProtocolError::NoImage {
        path: "Image".to_owned(),
        fields: "Bytes nor S3Object",
    }))
}

/// The `X-Amz-Target` header as text, `None` when absent or not text.
fn target_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(TARGET_HEADER).and_then(|v| v.to_str().ok())
}

/// The Rekognition DetectLabels adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::Rekognition`].
#[derive(Debug, Clone, Copy)]
pub struct Rekognition;

impl Api for Rekognition {
    fn name(&self) -> &'static str {
        "rekognition"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let kind = err.kind.name();
        let extra = vec![("x-amzn-ErrorType".to_owned(), kind.to_owned())];
        (json!({"__type": kind, "Message": err.message}), extra)
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        Kind::Name(match status.as_u16() {
            400 | 408 => "InvalidParameterException",
            403 => "AccessDeniedException",
            404 | 405 => "UnknownOperationException",
            413 => "ImageTooLargeException",
            429 => "ThrottlingException",
            502..=504 => "ServiceUnavailableException",
            _ => "InternalServerError",
        })
    }

    fn max_image_bytes(&self) -> Option<usize> {
        Some(MAX_IMAGE_BYTES)
    }

    fn recognizes(&self, route: &str, headers: &HeaderMap) -> bool {
        route == "/" && target_of(headers) == Some(TARGET)
    }

    fn owns(&self, method: &Method, route: &str, headers: &HeaderMap) -> bool {
        method == Method::POST
            && route == "/"
            && target_of(headers).is_some_and(|t| t.starts_with("RekognitionService."))
    }

    /// The request for labels of one image: see [`super::Protocol::client_request`]. Unsigned:
    /// the caller adds SigV4 headers when talking to the real service.
    fn client_request(&self, image: &[u8], max_labels: usize) -> ClientRequest {
        let body = json!({
            "Image": {"Bytes": encode_base64(image)},
            "MaxLabels": max_labels,
        });
        ClientRequest {
            path_and_query: "/".to_owned(),
            headers: vec![
                ("X-Amz-Target".to_owned(), TARGET.to_owned()),
                ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// The labels of a `DetectLabels` answer, `Confidence` divided by 100.
    ///
    /// A non-2xx answer becomes [`ProtocolError::Service`] (kind from `__type`, message from
    /// `Message` or `message`) or, if it is not in that shape, [`ProtocolError::Upstream`].
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        if !is_success(status) {
            return Err(error_from_answer(status, body));
        }
        let doc = parse_json(body, "answer body")?;
        let answer = read_answer::<DetectLabelsAnswer>(&doc);
        let labels = answer.as_ref().and_then(|a| a.labels.ok()).ok_or_else(|| {
            ProtocolError::UnexpectedAnswer {
                detail: "no `Labels` array".to_owned(),
            }
        })?;
        let labels = labels_from(labels, "Labels", ("Name", "Confidence"), CONFIDENCE_SCALE)?;
        Ok(Answer::new(labels))
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
}

impl Emulated for Rekognition {
    /// Reads a `DetectLabels` request: see [`super::Protocol::parse_backend_request`].
    ///
    /// The result always holds exactly one `Ok` image: Rekognition has no per-image errors, so
    /// every problem (wrong `X-Amz-Target`, bad JSON or parameters, no image, bad base64,
    /// `S3Object`, over [`MAX_IMAGE_BYTES`]) is a request-level `Err`. The path is not checked
    /// (AWS JSON routes by header). `max_labels` is `MaxLabels` (default
    /// [`DEFAULT_MAX_LABELS`]); `min_score` is `MinConfidence / 100` (default 0).
    fn parse_backend_request(
        &self,
        _path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        check_target(headers)?;
        let doc = parse_json(body, "request body")?;
        let request: DetectLabelsRequest = read_request(&doc)?;
        let max_labels = match request.max_labels.ok() {
            None => DEFAULT_MAX_LABELS,
            Some(value) => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ProtocolError::InvalidValue {
                    path: "MaxLabels".to_owned(),
                    expected: "a non-negative integer",
                    got: describe(value),
                })?,
        };
        let min_score = match request.min_confidence.ok() {
            None => 0.0,
            Some(value) => value
                .as_f64()
                .filter(|c| (0.0..=CONFIDENCE_SCALE).contains(c))
                .map(|c| normalise_score(c, CONFIDENCE_SCALE))
                .ok_or_else(|| ProtocolError::InvalidValue {
                    path: "MinConfidence".to_owned(),
                    expected: "a number between 0 and 100",
                    got: describe(value),
                })?,
        };
        let text = find_image(&request)?.inline()?;
        let bytes = decode_base64(text, || "Image.Bytes".to_owned())?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(ProtocolError::ImageTooLarge {
                limit: MAX_IMAGE_BYTES,
                actual: bytes.len(),
            });
        }
        Ok(BackendRequest::plain(vec![Ok(BackendImage {
            bytes,
            max_labels,
            min_score,
        })]))
    }

    fn render_backend_response(
        &self,
        _reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        render_backend_response(results)
    }

    /// HTTP 400 with kinds `UnknownOperationException` (wrong target),
    /// `SerializationException` (not JSON), `InvalidParameterException` (missing or bad fields,
    /// no image), `InvalidImageFormatException` (bad base64), `InvalidS3ObjectException` (S3
    /// image), `ImageTooLargeException`; 503 `ServiceUnavailableException`; ours a generic 500
    /// `InternalServerError`.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let kind = match class {
            ErrorClass::BadRequest(bad) => match bad {
                BadRequest::Unreadable => "SerializationException",
                BadRequest::MissingField
                | BadRequest::InvalidArgument
                | BadRequest::UnsupportedMediaType
                | BadRequest::UnsupportedFeature
                | BadRequest::NoImage => "InvalidParameterException",
                BadRequest::BadEncoding => "InvalidImageFormatException",
                BadRequest::RemoteImage => "InvalidS3ObjectException",
                BadRequest::ImageTooLarge => "ImageTooLargeException",
            },
            ErrorClass::UnsupportedOperation => "UnknownOperationException",
            ErrorClass::Unavailable => {
                return ErrorKind::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Kind::Name("ServiceUnavailableException"),
                );
            }
            ErrorClass::Internal => {
                return ErrorKind::server_error(
                    Kind::Name("InternalServerError"),
                    "Internal server error",
                );
            }
        };
        ErrorKind::new(StatusCode::BAD_REQUEST, Kind::Name(kind))
    }

    /// Rekognition's `ThrottlingException`, with status 429 (Rekognition itself uses 400): see
    /// [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        let mut response =
            error_response("ThrottlingException", "backend is saturated; retry later");
        response.status = StatusCode::TOO_MANY_REQUESTS;
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::protocol::Label;
    use crate::protocol::{AnswerCase, Protocol, check_answer_cases, fixture, json_of};

    fn target(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("X-Amz-Target", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn backend(body: &[u8]) -> Result<BackendRequest, ProtocolError> {
        Rekognition.parse_backend_request("/", &target(TARGET), body)
    }

    fn header<'a>(response: &'a BackendResponse, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn parse_answer_on_fixtures() {
        // (name, body, status, Ok((top1, label count)) or Err(message fragment))
        let cases: Vec<AnswerCase> = vec![
            (
                "labels",
                fixture("rekognition_labels.json"),
                200,
                Ok((Some("Animal"), 5)),
            ),
            (
                "no labels",
                fixture("rekognition_no_labels.json"),
                200,
                Ok((None, 0)),
            ),
            (
                "invalid image",
                fixture("rekognition_error_invalid_image.json"),
                400,
                Err("upstream answered HTTP 400 InvalidImageFormatException: \
                     Request has invalid image format"),
            ),
            (
                "qualified kind, lowercase message",
                fixture("rekognition_error_signature.json"),
                403,
                Err("upstream answered HTTP 403 InvalidSignatureException: The request signature"),
            ),
            (
                "throttled, kind only",
                br#"{"__type":"ThrottlingException"}"#.to_vec(),
                400,
                Err("upstream answered HTTP 400 ThrottlingException: "),
            ),
            (
                "load balancer page",
                b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>"
                    .to_vec(),
                503,
                Err("upstream answered HTTP 503: <html><head><title>503 Service"),
            ),
            (
                "no Labels",
                br#"{"LabelModelVersion":"3.0"}"#.to_vec(),
                200,
                Err("no `Labels` array"),
            ),
            (
                "label without confidence",
                br#"{"Labels":[{"Name":"Dog"}]}"#.to_vec(),
                200,
                Err("Labels[0].Confidence is missing or not a number"),
            ),
            (
                "truncated",
                b"{\"Labels\": [".to_vec(),
                200,
                Err("answer body is not valid JSON"),
            ),
        ];
        check_answer_cases(cases, |status, body| Rekognition.parse_answer(status, body));
    }

    #[test]
    fn confidence_is_normalised_to_unit_scores() {
        let answer = Rekognition
            .parse_answer(200, &fixture("rekognition_labels.json"))
            .unwrap();
        let expected = [
            ("Animal", 0.999_678_9),
            ("Dog", 0.999_678_9),
            ("Golden Retriever", 0.924_060_3),
            ("Puppy", 0.715_102_3),
            ("Grass", 0.582_947_5),
        ];
        assert_eq!(answer.labels.len(), expected.len());
        for (label, (name, score)) in answer.labels.iter().zip(expected) {
            assert_eq!(label.name, name);
            assert!((label.score - score).abs() < 1e-6, "{label:?}");
        }
        let clamped =
            Rekognition.parse_answer(200, br#"{"Labels":[{"Name":"x","Confidence":100.0001}]}"#);
        assert_eq!(clamped.unwrap().labels[0].score, 1.0);
    }

    #[test]
    fn client_request_has_the_documented_shape() {
        let request = Rekognition.client_request(b"\xff\xd8\xff\xd9", 12);
        assert_eq!(request.path_and_query, "/");
        assert_eq!(
            request.headers,
            [
                (
                    "X-Amz-Target".to_owned(),
                    "RekognitionService.DetectLabels".to_owned()
                ),
                (
                    "Content-Type".to_owned(),
                    "application/x-amz-json-1.1".to_owned()
                ),
            ]
        );
        assert_eq!(
            json_of(&request.body),
            json!({"Image": {"Bytes": "/9j/2Q=="}, "MaxLabels": 12})
        );
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).rev().cycle().take(4097).collect();
        let request = Protocol::Rekognition.client_request(&image, 3);
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let parsed = Protocol::Rekognition
            .parse_backend_request(&request.path_and_query, &headers, &request.body)
            .unwrap();
        assert_eq!(parsed.images.len(), 1);
        let got = parsed.images[0].as_ref().unwrap();
        assert_eq!(got.bytes, image);
        assert_eq!(got.max_labels, 3);
        assert_eq!(got.min_score, 0.0);
    }

    #[test]
    fn backend_honours_max_labels_and_min_confidence() {
        let request = backend(&fixture("rekognition_request.json")).unwrap();
        let image = request.images[0].as_ref().unwrap();
        assert!(image.bytes.starts_with(b"\xff\xd8\xff"));
        assert_eq!(image.max_labels, 25);
        assert!((image.min_score - 0.705).abs() < 1e-6);

        let classified = Answer::new(vec![
            Label {
                name: "tabby".to_owned(),
                score: 0.91,
            },
            Label {
                name: "tiger cat".to_owned(),
                score: 0.06,
            },
        ]);
        let rendered = render_backend_response(vec![Ok(image.limit(classified))]);
        let back = Rekognition.parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.labels.len(), 1);
        assert_eq!(back.top1(), Some("tabby"));

        let defaults = backend(br#"{"Image":{"Bytes":"AAAA"},"MaxLabels":null}"#).unwrap();
        let image = defaults.images[0].as_ref().unwrap();
        assert_eq!(
            (image.max_labels, image.min_score),
            (DEFAULT_MAX_LABELS, 0.0)
        );
    }

    #[test]
    fn rendered_answers_parse_back_to_the_same_labels() {
        let sent = Answer::new(vec![
            Label {
                name: "golden retriever".to_owned(),
                score: 0.8713,
            },
            Label {
                name: "Labrador retriever".to_owned(),
                score: 0.0612,
            },
            Label {
                name: "tennis ball".to_owned(),
                score: 0.000_4,
            },
        ]);
        let rendered = render_backend_response(vec![Ok(sent.clone())]);
        assert_eq!(rendered.status, StatusCode::OK);
        assert_eq!(header(&rendered, "content-type"), Some(CONTENT_TYPE));
        let doc = json_of(&rendered.body);
        assert_eq!(doc["LabelModelVersion"], "3.0");
        assert_eq!(
            doc["Labels"][0],
            json!({"Name": "golden retriever", "Confidence": 87.13, "Instances": [],
                   "Parents": []})
        );
        let back = Rekognition.parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.labels.len(), sent.labels.len());
        for (a, b) in back.labels.iter().zip(&sent.labels) {
            assert_eq!(a.name, b.name);
            assert!((a.score - b.score).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn request_errors_render_in_rekognition_shape_and_parse_back() {
        let too_large = json!({"Image": {"Bytes": encode_base64(&vec![0u8; MAX_IMAGE_BYTES + 1])}})
            .to_string()
            .into_bytes();
        // (name, headers, body, __type, message fragment)
        let cases: Vec<(&str, HeaderMap, Vec<u8>, &str, &str)> = vec![
            (
                "no target",
                HeaderMap::new(),
                br#"{"Image":{"Bytes":"AAAA"}}"#.to_vec(),
                "UnknownOperationException",
                "no X-Amz-Target header",
            ),
            (
                "other operation",
                target("RekognitionService.DetectFaces"),
                br#"{"Image":{"Bytes":"AAAA"}}"#.to_vec(),
                "UnknownOperationException",
                "X-Amz-Target `RekognitionService.DetectFaces`; \
                 expected `X-Amz-Target: RekognitionService.DetectLabels`",
            ),
            (
                "S3 object",
                target(TARGET),
                fixture("rekognition_request_s3.json"),
                "InvalidS3ObjectException",
                "Image.S3Object refers to s3://photo-archive/2019/08/dog.jpg?versionId=",
            ),
            (
                "too large",
                target(TARGET),
                too_large,
                "ImageTooLargeException",
                "image is 5242881 bytes, over the limit of 5242880 bytes",
            ),
            (
                "bad base64",
                target(TARGET),
                br#"{"Image":{"Bytes":"data:image/jpeg;base64,/9j/"}}"#.to_vec(),
                "InvalidImageFormatException",
                "image is not valid base64 at Image.Bytes: ",
            ),
            (
                "not JSON",
                target(TARGET),
                b"Image=abc".to_vec(),
                "SerializationException",
                "request body is not valid JSON: ",
            ),
            (
                "MinConfidence out of range",
                target(TARGET),
                br#"{"Image":{"Bytes":"AAAA"},"MinConfidence":150}"#.to_vec(),
                "InvalidParameterException",
                "MinConfidence must be a number between 0 and 100, got 150",
            ),
            (
                "negative MaxLabels",
                target(TARGET),
                br#"{"Image":{"Bytes":"AAAA"},"MaxLabels":-1}"#.to_vec(),
                "InvalidParameterException",
                "MaxLabels must be a non-negative integer, got -1",
            ),
            (
                "no Image",
                target(TARGET),
                br#"{"MaxLabels":5}"#.to_vec(),
                "InvalidParameterException",
                "missing field Image",
            ),
            (
                "empty Image",
                target(TARGET),
                br#"{"Image":{}}"#.to_vec(),
                "InvalidParameterException",
                "Image has neither Bytes nor S3Object",
            ),
            (
                "body is an array",
                target(TARGET),
                b"[]".to_vec(),
                "InvalidParameterException",
                "request body must be a JSON object, got []",
            ),
        ];
        for (name, headers, body, kind, fragment) in cases {
            let err = Rekognition
                .parse_backend_request("/", &headers, &body)
                .unwrap_err();
            assert!(err.to_string().contains(fragment), "{name}: {err}");
            let rendered = crate::protocol::Protocol::Rekognition.render_backend_error(&err);
            assert_eq!(rendered.status, StatusCode::BAD_REQUEST, "{name}");
            assert_eq!(header(&rendered, "x-amzn-ErrorType"), Some(kind), "{name}");
            let doc = json_of(&rendered.body);
            assert_eq!(doc["__type"], kind, "{name}");
            assert_eq!(doc["Message"], err.to_string(), "{name}");
            match Rekognition.parse_answer(400, &rendered.body) {
                Err(ProtocolError::Service {
                    status: 400,
                    kind: got,
                    message,
                }) => {
                    assert_eq!(got, kind, "{name}");
                    assert!(message.contains(fragment), "{name}: {message}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn image_problems_and_misuse_render_as_errors() {
        let undecodable = render_backend_response(vec![Err(ImageProblem::Undecodable(
            "unknown image format".to_owned(),
        ))]);
        assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(&undecodable.body),
            json!({"__type": "InvalidImageFormatException",
                   "Message": "image could not be decoded: unknown image format"})
        );
        let too_large = render_backend_response(vec![Err(ImageProblem::Request(
            ProtocolError::ImageTooLarge {
                limit: MAX_IMAGE_BYTES,
                actual: MAX_IMAGE_BYTES * 2,
            },
        ))]);
        assert_eq!(
            header(&too_large, "x-amzn-ErrorType"),
            Some("ImageTooLargeException")
        );
        for results in [
            vec![Err(ImageProblem::Internal(
                "tract: shape mismatch".to_owned(),
            ))],
            vec![],
            vec![Ok(Answer::default()), Ok(Answer::default())],
        ] {
            let rendered = render_backend_response(results);
            assert_eq!(rendered.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                header(&rendered, "x-amzn-ErrorType"),
                Some("InternalServerError")
            );
            assert!(!String::from_utf8_lossy(&rendered.body).contains("tract"));
        }
    }

    #[test]
    fn extract_images_finds_the_single_slot() {
        let slots = extract_images(&fixture("rekognition_request.json")).unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!((slots[0].index, slots[0].path.as_str()), (0, "Image"));
        assert!(slots[0].bytes().unwrap().starts_with(b"\xff\xd8\xff"));

        let slots = extract_images(&fixture("rekognition_request_s3.json")).unwrap();
        assert_eq!(
            slots[0].image,
            SlotImage::Remote(
                "s3://photo-archive/2019/08/dog.jpg?versionId=3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"
                    .to_owned()
            )
        );
        let slots = extract_images(br#"{"MaxLabels": 3}"#).unwrap();
        assert_eq!(
            slots[0].image,
            SlotImage::Unusable("missing field Image".to_owned())
        );
        assert!(extract_images(br#"{"Image": "abc"}"#).is_err());
    }

    #[test]
    fn replace_images_swaps_only_the_bytes() {
        let body = fixture("rekognition_request.json");
        let original = json_of(&body);
        let headers = axum::http::HeaderMap::new();
        let req = crate::protocol::ProxyRequest {
            path_and_query: "/",
            headers: &headers,
            body: &body,
        };
        let rewritten = Protocol::Rekognition
            .replace_images(&req, &[(0, b"re-encoded".to_vec())])
            .unwrap();
        assert!(rewritten.headers.is_empty());
        let replaced = rewritten.body;
        let mut expected = original.clone();
        expected["Image"]["Bytes"] = json!(encode_base64(b"re-encoded"));
        assert_eq!(json_of(&replaced), expected);
        assert_eq!(json_of(&replaced)["Settings"], original["Settings"]);

        let s3 = fixture("rekognition_request_s3.json");
        let err = replace_images(&s3, &[(0, b"x".to_vec())]).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::NotReplaceable { index: 0, reason, .. }
                if reason.starts_with("it refers to s3://photo-archive/")),
            "{err}"
        );
        let err = replace_images(&body, &[(1, b"x".to_vec())]).unwrap_err();
        assert_eq!(err.to_string(), "no image slot 1: the request has 1 slots");
    }
}
