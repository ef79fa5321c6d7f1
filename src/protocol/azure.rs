//! Azure AI Vision Image Analysis 4.0 `imageanalysis:analyze`, `tags` feature.
//!
//! Request: `POST /computervision/imageanalysis:analyze?features=tags&api-version=2024-02-01`
//! with `Ocp-Apim-Subscription-Key`, and either the image as the raw body
//! (`Content-Type: application/octet-stream`) or `{"url": "https://…"}`
//! (`Content-Type: application/json`).
//!
//! Answer:
//!
//! ```json
//! {"modelVersion": "2023-10-01", "metadata": {"width": 1024, "height": 768},
//!  "tagsResult": {"values": [{"name": "dog", "confidence": 0.99}]}}
//! ```
//!
//! Quirks this file handles:
//! - The operation and its options are in the query: `features` (comma-separated; the
//!   backend serves only `tags`), `api-version` (required: the SDKs send [`SDK_API_VERSION`],
//!   our client [`API_VERSION`]), `language`, `model-version`, `gender-neutral-caption`,
//!   `smartcrops-aspect-ratios` (the last four ignored).
//! - At most [`MAX_IMAGE_BYTES`] (20 MiB) of raw image.
//! - Errors are `{"error": {"code": "InvalidRequest", "message", "innererror": {"code":
//!   "InvalidImageFormat", "message"}}}` with HTTP 400 (415 for another content type, 429 for
//!   rate limits with `code` "429"); [`parse_answer`] reports the inner code when there is one.
//!   Too-large images get no inner error, as at Azure.
//! - A JSON body's `url` is remote: the backend does not fetch it, the proxy leaves it
//!   untouched. A raw body is replaced whole: the request has no other bytes to keep.
//! - There is no parameter for the number of tags: the backend answers [`MAX_TAGS`], and
//!   `metadata` with the image's size read from its header.

use std::borrow::Cow;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Api, Emulated};
use super::one_image::{Found, only_result, single_replacement, slot_not_replaceable};
use super::shape::{ApiError, ErrorKind, Kind};
use super::wire::{Field, wire_object};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    ProtocolError, SlotImage, WireLabel, content_type_text, describe, excerpt, is_success,
    labels_from, media_type, parse_json, read_answer, read_request, wire_number,
};
use super::{BadRequest, ErrorClass};
use super::{ProxyRequest, Rewritten};

/// An analyze request with a JSON body: `{"url": …}` (the image is fetched by the service).
#[derive(Debug, Deserialize)]
struct UrlRequest<'a> {
    #[serde(default, borrow)]
    url: Field<Cow<'a, str>>,
}

/// An analyze answer; only `tagsResult` is read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnalyzeAnswer<'a> {
    #[serde(default, borrow)]
    tags_result: Field<TagsResult<'a>>,
}

/// `tagsResult`: `{"values": [{"name", "confidence"}]}`.
#[derive(Debug, Deserialize)]
struct TagsResult<'a> {
    #[serde(default, borrow)]
    values: Field<Vec<Field<Tag<'a>>>>,
}

/// One of `tagsResult.values`; `confidence` is in `0..=1`.
#[derive(Debug, Deserialize)]
struct Tag<'a> {
    #[serde(default, borrow)]
    name: Field<Cow<'a, str>>,
    #[serde(default)]
    confidence: Field<serde_json::Number>,
}

impl WireLabel for Tag<'_> {
    fn name(&self) -> Option<&str> {
        self.name.text()
    }

    fn score(&self) -> Option<f64> {
        self.confidence.ok().and_then(serde_json::Number::as_f64)
    }
}

/// An error answer: `{"error": {"code", "message", "innererror": {"code", "message"}}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(default, borrow)]
    error: Field<ErrorBody<'a>>,
}

/// `error` and `error.innererror`.
#[derive(Debug, Deserialize)]
struct ErrorBody<'a> {
    #[serde(default, borrow)]
    code: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    innererror: Field<InnerError<'a>>,
}

/// `error.innererror`: the more specific `code`.
#[derive(Debug, Deserialize)]
struct InnerError<'a> {
    #[serde(default, borrow)]
    code: Field<Cow<'a, str>>,
}

wire_object!('a, UrlRequest, AnalyzeAnswer, TagsResult, Tag, ErrorAnswer, ErrorBody, InnerError);

/// The path of the analyze operation.
pub const PATH: &str = "/computervision/imageanalysis:analyze";

/// The API version our client sends.
pub const API_VERSION: &str = "2024-02-01";

/// The API version the vendor's SDKs send (azure-ai-vision-imageanalysis 1.x for Python,
/// Java and .NET, @azure-rest/ai-vision-image-analysis for JavaScript): the first GA version
/// of Image Analysis 4.0. The backend serves it as it serves [`API_VERSION`] (the two differ
/// in nothing this backend answers), and any other non-empty version too.
pub const SDK_API_VERSION: &str = "2023-10-01";

/// The largest image accepted (20 MiB).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Tags the backend answers with.
pub const MAX_TAGS: usize = 10;

/// The `modelVersion` the backend reports.
pub const MODEL_VERSION: &str = "2023-10-01";

/// The content type of raw image bodies.
const OCTET_STREAM: &str = "application/octet-stream";

/// The content type of answers.
pub(crate) const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// What the renderer needs from the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The image's width and height, read from its header (0 × 0 when unreadable).
    pub size: (u32, u32),
}

/// The tags of an analyze answer.
///
/// A non-2xx answer becomes [`ProtocolError::Service`] (kind: `innererror.code`, else
/// `code`) or, in no known shape, [`ProtocolError::Upstream`].
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
    if !is_success(status) {
        return Err(error_from_answer(status, body));
    }
    let doc = parse_json(body, "answer body")?;
    let answer = read_answer::<AnalyzeAnswer>(&doc);
    let values = answer
        .as_ref()
        .and_then(|answer| answer.tags_result.ok())
        .and_then(|tags| tags.values.ok())
        .ok_or_else(|| ProtocolError::UnexpectedAnswer {
            detail: "no `tagsResult.values` array (was `features=tags` asked for?)".to_owned(),
        })?;
    let labels = labels_from(values, "tagsResult.values", ("name", "confidence"), 1.0)?;
    Ok(Answer::new(labels))
}

/// The error of a non-2xx answer.
fn error_from_answer(status: u16, body: &[u8]) -> ProtocolError {
    let doc = super::parse_json(body, "answer body").ok();
    let answer = doc.as_ref().and_then(read_answer::<ErrorAnswer>);
    let error = answer.as_ref().and_then(|answer| answer.error.ok());
    let inner = error.and_then(|e| e.innererror.ok());
    let kind = inner
        .and_then(|inner| inner.code.text())
        .or_else(|| error.and_then(|e| e.code.text()))
        .map(str::to_owned);
    let message = error.and_then(|e| e.message.text()).map(str::to_owned);
    match (kind, message) {
        (None, None) => ProtocolError::Upstream {
            status,
            excerpt: excerpt(body),
        },
        (kind, message) => ProtocolError::Service {
            status,
            kind: kind.unwrap_or_else(|| "error".to_owned()),
            message: message.unwrap_or_default(),
        },
    }
}

/// Renders the answer for the request's single image: `modelVersion`, `metadata` and
/// `tagsResult` with exactly the given labels. An undecodable image is `InvalidImageFormat`;
/// anything but one result is our bug (500).
pub fn render_backend_response(
    reply: &Reply,
    results: Vec<Result<Answer, ImageProblem>>,
) -> BackendResponse {
    let Some(result) = only_result("Azure", results) else {
        return internal_error();
    };
    match result {
        Ok(answer) => {
            let values: Vec<Value> = answer
                .labels
                .iter()
                .map(|label| json!({"name": label.name, "confidence": wire_number(label.score)}))
                .collect();
            let body = json!({
                "modelVersion": MODEL_VERSION,
                "metadata": {"width": reply.size.0, "height": reply.size.1},
                "tagsResult": {"values": values},
            });
            BackendResponse::json(StatusCode::OK, CONTENT_TYPE, Vec::new(), &body)
        }
        Err(ImageProblem::Request(err)) => super::Protocol::Azure.render_backend_error(&err),
        Err(problem @ ImageProblem::Undecodable(_)) => {
            tracing::debug!(%problem, "image rejected");
            error_response(
                StatusCode::BAD_REQUEST,
                Some("InvalidImageFormat"),
                &problem.to_string(),
            )
        }
        Err(problem @ ImageProblem::Internal(_)) => {
            tracing::error!(%problem, "image failed");
            internal_error()
        }
    }
}

/// The name [`ProtocolError::InvalidValue`] gives the `features` query parameter: Azure
/// answers a feature it does not offer with its own inner code
/// ([`super::BadRequest::UnsupportedFeature`]).
pub const FEATURES_FIELD: &str = "features query parameter";

/// The code of Azure's errors about the request.
const INVALID: &str = "InvalidRequest";

/// The message of the generic 500 answer.
const INTERNAL_MESSAGE: &str = "An internal error has occurred.";

/// An `InvalidRequest` error with an optional inner code carrying the same message.
fn error_response(status: StatusCode, inner: Option<&str>, message: &str) -> BackendResponse {
    render_error(status, INVALID, inner, message)
}

/// `{"error": {"code", "message", "innererror"?}}`.
fn render_error(
    status: StatusCode,
    code: &str,
    inner: Option<&str>,
    message: &str,
) -> BackendResponse {
    let kind = match inner {
        Some(inner) => Kind::Nested(code, inner),
        None => Kind::Name(code),
    };
    super::shape::render(
        super::Protocol::Azure,
        &ApiError::new(status, kind, message),
    )
}

/// The generic 500 answer; the cause goes to the log, not to the client.
fn internal_error() -> BackendResponse {
    render_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        None,
        INTERNAL_MESSAGE,
    )
}

/// The request's single slot (index 0): the raw body, or a JSON body's `url`.
///
/// Errors on a content type that is neither raw bytes nor JSON, or a JSON body that is not
/// an object.
pub fn extract_images(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let slot = read_body(headers, body)?.slot("url", "body", |bytes| {
        ("body", SlotImage::Inline(bytes.to_vec()))
    });
    Ok(vec![slot])
}

/// The new image as the whole body (slot 0 is the only slot): see
/// [`super::Protocol::replace_images`]. The content type stays `application/octet-stream`.
pub fn replace_images(
    headers: &HeaderMap,
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let Some(bytes) = single_replacement(replacements)? else {
        return Ok(body.to_vec());
    };
    let slot = extract_images(headers, body)?.remove(0);
    match slot_not_replaceable(&slot) {
        Some(err) => Err(err),
        None => Ok(bytes.to_vec()),
    }
}

/// Reads the body by its content type: `application/octet-stream` and `image/*` are raw
/// bytes, `application/json` is `{"url": …}`; anything else (or none) is an error.
fn read_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Found<&'a [u8]>, ProtocolError> {
    match media_type(headers).as_deref() {
        Some(OCTET_STREAM) => {}
        Some(kind) if kind.starts_with("image/") => {}
        Some("application/json") => {
            let doc = parse_json(body, "request body")?;
            let request: UrlRequest = read_request(&doc)?;
            return Ok(match &request.url {
                Field::Is(url) if !url.is_empty() => Found::Remote {
                    path: "url".to_owned(),
                    reference: url.clone().into_owned(),
                },
                Field::Absent | Field::Wrong(Value::Null) | Field::Is(_) => {
                    Found::Missing(ProtocolError::MissingField {
                        path: "url".to_owned(),
                    })
                }
                Field::Wrong(other) => {
                    return Err(ProtocolError::InvalidValue {
                        path: "url".to_owned(),
                        expected: "a string",
                        got: describe(other),
                    });
                }
            });
        }
        _ => {
            return Err(ProtocolError::InvalidValue {
                path: super::CONTENT_TYPE_FIELD.to_owned(),
                expected: "application/octet-stream or application/json",
                got: content_type_text(headers),
            });
        }
    }
    if body.is_empty() {
        return Ok(Found::Missing(ProtocolError::NoImage {
            path: "request body".to_owned(),
            fields: "image bytes nor url",
        }));
    }
    Ok(Found::Inline(body))
}

/// The Azure AI Vision adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::Azure`].
#[derive(Debug, Clone, Copy)]
pub struct Azure;

impl Api for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let mut error = json!({"code": err.kind.name(), "message": err.message});
        if let Kind::Nested(_, inner) = err.kind {
            error["innererror"] = json!({"code": inner, "message": err.message});
        }
        (json!({ "error": error }), Vec::new())
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        match status.as_u16() {
            400 => Kind::Name("InvalidRequest"),
            408 => Kind::Nested("InvalidRequest", "Timeout"),
            413 => Kind::Nested("InvalidRequest", "InvalidImageSize"),
            403 => Kind::Name("403"),
            404 => Kind::Name("404"),
            405 => Kind::Name("405"),
            429 => Kind::Name("429"),
            504 => Kind::Nested("ServiceUnavailable", "Timeout"),
            502 | 503 => Kind::Name("ServiceUnavailable"),
            _ => Kind::Name("InternalServerError"),
        }
    }

    fn max_image_bytes(&self) -> Option<usize> {
        Some(MAX_IMAGE_BYTES)
    }

    fn recognizes(&self, route: &str, _headers: &HeaderMap) -> bool {
        route == PATH
    }

    /// Whether a path (query ignored) is one of Azure AI Vision's endpoints: anything under
    /// `/computervision/` (4.0) or `/vision/vN…/` (3.x: `/vision/v3.2/analyze`).
    fn owns(&self, _method: &Method, route: &str, _headers: &HeaderMap) -> bool {
        let route = route.split('?').next().unwrap_or_default();
        route.starts_with("/computervision/")
            || route
                .strip_prefix("/vision/v")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(version, rest)| {
                    version.starts_with(|c: char| c.is_ascii_digit()) && !rest.is_empty()
                })
    }

    /// The request for tags of one image: see [`super::Protocol::client_request`]. The caller adds
    /// `Ocp-Apim-Subscription-Key` for the real service.
    fn client_request(&self, image: &[u8], _max_labels: usize) -> ClientRequest {
        ClientRequest {
            path_and_query: format!("{PATH}?features=tags&api-version={API_VERSION}"),
            headers: vec![("Content-Type".to_owned(), OCTET_STREAM.to_owned())],
            body: image.to_vec(),
        }
    }

    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        parse_answer(status, body)
    }

    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        extract_images(req.headers, req.body)
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        replace_images(req.headers, req.body, replacements).map(Rewritten::body)
    }
}

impl Emulated for Azure {
    /// Reads an analyze request: see [`super::Protocol::parse_backend_request`].
    ///
    /// One image, so every problem is a request-level `Err`: another path, no `api-version`, no
    /// `features` or features other than `tags`, a content type other than raw bytes or JSON, an
    /// empty body, a `url`, an image over [`MAX_IMAGE_BYTES`].
    fn parse_backend_request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        if route != PATH {
            return Err(ProtocolError::UnsupportedOperation {
                found: format!("path `{route}`"),
                expected: "`POST /computervision/imageanalysis:analyze`",
            });
        }
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if param("api-version").is_none_or(str::is_empty) {
            return Err(ProtocolError::MissingField {
                path: "api-version query parameter".to_owned(),
            });
        }
        let features = param("features").unwrap_or_default();
        let wanted: Vec<&str> = features
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        if wanted.is_empty() {
            return Err(ProtocolError::MissingField {
                path: FEATURES_FIELD.to_owned(),
            });
        }
        if let Some(other) = wanted.iter().find(|f| !f.eq_ignore_ascii_case("tags")) {
            return Err(ProtocolError::InvalidValue {
                path: FEATURES_FIELD.to_owned(),
                expected: "`tags` (the only feature this backend serves)",
                got: describe(&Value::String((*other).to_owned())),
            });
        }
        let bytes = read_body(headers, body)?.inline()?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(ProtocolError::ImageTooLarge {
                limit: MAX_IMAGE_BYTES,
                actual: bytes.len(),
            });
        }
        let limits = crate::codec::Limits {
            max_bytes: MAX_IMAGE_BYTES,
            max_pixels: u64::MAX,
            max_aspect: u32::MAX,
            max_scans: u32::MAX,
            max_decode_ms: u32::MAX,
        };
        let size = crate::codec::probe(bytes, &limits).map_or((0, 0), |(_, w, h)| (w, h));
        Ok(BackendRequest {
            images: vec![Ok(BackendImage {
                bytes: bytes.to_vec(),
                max_labels: MAX_TAGS,
                min_score: 0.0,
            })],
            reply: super::Reply::Azure(Reply { size }),
        })
    }

    fn render_backend_response(
        &self,
        reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        match reply {
            super::Reply::Azure(reply) => render_backend_response(reply, results),
            _ => render_backend_response(&Reply::default(), results),
        }
    }

    /// `InvalidRequest` with inner codes `NotSupportedFeature` (features), `BadArgument` (other
    /// parameters, bad JSON), `InvalidImageUrl` (a URL the backend does not fetch),
    /// `InvalidImageFormat` (no image, bad base64); 415 `UnsupportedMediaType` for another
    /// content type; too large has no inner code. 404 `Resource not found` for another path,
    /// 503 `ServiceUnavailable` when unavailable; ours a generic 500 `InternalServerError`.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let (status, kind) = match class {
            ErrorClass::BadRequest(bad) => match bad {
                BadRequest::UnsupportedMediaType => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Kind::Nested(INVALID, "UnsupportedMediaType"),
                ),
                BadRequest::UnsupportedFeature => (
                    StatusCode::BAD_REQUEST,
                    Kind::Nested(INVALID, "NotSupportedFeature"),
                ),
                BadRequest::Unreadable | BadRequest::MissingField | BadRequest::InvalidArgument => {
                    (
                        StatusCode::BAD_REQUEST,
                        Kind::Nested(INVALID, "BadArgument"),
                    )
                }
                BadRequest::NoImage | BadRequest::BadEncoding => (
                    StatusCode::BAD_REQUEST,
                    Kind::Nested(INVALID, "InvalidImageFormat"),
                ),
                BadRequest::RemoteImage => (
                    StatusCode::BAD_REQUEST,
                    Kind::Nested(INVALID, "InvalidImageUrl"),
                ),
                BadRequest::ImageTooLarge => (StatusCode::BAD_REQUEST, Kind::Name(INVALID)),
            },
            ErrorClass::UnsupportedOperation => {
                return ErrorKind::new(StatusCode::NOT_FOUND, Kind::Name("404"))
                    .saying("Resource not found");
            }
            ErrorClass::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                Kind::Name("ServiceUnavailable"),
            ),
            ErrorClass::Internal => {
                return ErrorKind::server_error(
                    Kind::Name("InternalServerError"),
                    INTERNAL_MESSAGE,
                );
            }
        };
        ErrorKind::new(status, kind)
    }

    /// Azure's rate-limit error (429, `code` "429"): see [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        render_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            None,
            "Rate limit is exceeded. Try again in 1 seconds.",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::protocol::Label;
    use crate::protocol::{
        AnswerCase, Protocol, ProxyRequest, check_answer_cases, fixture, json_of,
    };

    fn typed(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        headers.insert("ocp-apim-subscription-key", HeaderValue::from_static("k"));
        headers
    }

    const QUERY: &str = "?features=tags&api-version=2024-02-01";

    #[test]
    fn parse_answer_on_fixtures() {
        // (name, body, status, Ok((top1, label count)) or Err(message fragment))
        let cases: Vec<AnswerCase> = vec![
            (
                "tags",
                fixture("azure_tags.json"),
                200,
                Ok((Some("dog"), 6)),
            ),
            (
                "invalid image",
                fixture("azure_error_invalid_image.json"),
                400,
                Err("upstream answered HTTP 400 InvalidImageFormat: Image format is not valid."),
            ),
            (
                "too large, no inner error",
                fixture("azure_error_too_large.json"),
                400,
                Err("upstream answered HTTP 400 InvalidRequest: The image size is not allowed"),
            ),
            (
                "rate limit",
                br#"{"error":{"code":"429","message":"Rate limit is exceeded."}}"#.to_vec(),
                429,
                Err("upstream answered HTTP 429 429: Rate limit is exceeded."),
            ),
            (
                "gateway",
                b"<html>503</html>".to_vec(),
                503,
                Err("upstream answered HTTP 503: <html>503</html>"),
            ),
            (
                "caption only",
                br#"{"modelVersion":"2023-10-01","captionResult":{"text":"a dog"}}"#.to_vec(),
                200,
                Err("no `tagsResult.values` array"),
            ),
            (
                "tag without confidence",
                br#"{"tagsResult":{"values":[{"name":"dog"}]}}"#.to_vec(),
                200,
                Err("tagsResult.values[0].confidence is missing or not a number"),
            ),
        ];
        check_answer_cases(cases, |status, body| Azure.parse_answer(status, body));
        let answer = parse_answer(200, &fixture("azure_tags.json")).unwrap();
        assert!((answer.labels[0].score - 0.998_423_3).abs() < 1e-6);
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image = crate::protocol::fixture("facepp_detect_request.multipart");
        let request = Protocol::Azure.client_request(&image, 10);
        assert_eq!(
            request.path_and_query,
            "/computervision/imageanalysis:analyze?features=tags&api-version=2024-02-01"
        );
        assert_eq!(request.body, image);
        let headers = typed("application/octet-stream");
        let parsed = Azure
            .parse_backend_request(&request.path_and_query, &headers, &request.body)
            .unwrap();
        let got = parsed.images[0].as_ref().unwrap();
        assert_eq!(got.bytes, image);
        assert_eq!(got.max_labels, MAX_TAGS);
        // Not an image: the size is unknown, the classifier will refuse it.
        assert_eq!(
            parsed.reply,
            crate::protocol::Reply::Azure(Reply { size: (0, 0) })
        );
    }

    #[test]
    fn rendered_answers_parse_back() {
        let sent = Answer::new(vec![
            Label {
                name: "golden retriever".to_owned(),
                score: 0.8713,
            },
            Label {
                name: "tennis ball".to_owned(),
                score: 0.05,
            },
        ]);
        let rendered = render_backend_response(&Reply { size: (640, 480) }, vec![Ok(sent)]);
        assert_eq!(rendered.status, StatusCode::OK);
        let doc = json_of(&rendered.body);
        assert_eq!(doc["modelVersion"], MODEL_VERSION);
        assert_eq!(doc["metadata"], json!({"width": 640, "height": 480}));
        assert_eq!(
            doc["tagsResult"]["values"][0],
            json!({"name": "golden retriever", "confidence": 0.8713})
        );
        let back = parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.top1(), Some("golden retriever"));
        assert_eq!(back.labels.len(), 2);
    }

    /// (name, path, headers, body, status, inner code, message fragment)
    type ErrorCase<'a> = (
        &'a str,
        String,
        HeaderMap,
        &'a [u8],
        u16,
        Option<&'a str>,
        &'a str,
    );

    /// The query strings the vendor's SDKs build for `analyze(image_data, [TAGS], …)`, next
    /// to ours: each is recognised by the proxy and served by the backend.
    #[test]
    fn sdk_api_versions_and_options_are_served() {
        let raw = typed("application/octet-stream");
        let queries = [
            format!("?features=tags&api-version={API_VERSION}"),
            format!("?api-version={SDK_API_VERSION}&features=tags"),
            format!(
                "?api-version={SDK_API_VERSION}&features=tags&language=en\
                 &gender-neutral-caption=true&model-version=latest"
            ),
            format!("?api-version={SDK_API_VERSION}&features=Tags&smartcrops-aspect-ratios=0.9"),
        ];
        for query in queries {
            let path = format!("{PATH}{query}");
            assert_eq!(
                Protocol::recognize(&axum::http::Method::POST, &path, &raw),
                Some(Protocol::Azure),
                "{path}"
            );
            let parsed = Azure
                .parse_backend_request(&path, &raw, b"img")
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.images.len(), 1, "{path}");
            assert_eq!(parsed.images[0].as_ref().unwrap().bytes, b"img", "{path}");
        }
    }

    #[test]
    fn request_errors_render_in_azure_shape() {
        let big = vec![0u8; MAX_IMAGE_BYTES + 1];
        let raw = typed("application/octet-stream");
        let cases: Vec<ErrorCase<'_>> = vec![
            (
                "caption",
                format!("{PATH}?features=tags,caption&api-version=2024-02-01"),
                raw.clone(),
                b"img",
                400,
                Some("NotSupportedFeature"),
                "features query parameter must be `tags` (the only feature this backend \
                 serves), got \"caption\"",
            ),
            (
                "no features",
                format!("{PATH}?api-version=2024-02-01"),
                raw.clone(),
                b"img",
                400,
                Some("BadArgument"),
                "missing field features query parameter",
            ),
            (
                "no api-version",
                format!("{PATH}?features=tags"),
                raw.clone(),
                b"img",
                400,
                Some("BadArgument"),
                "missing field api-version query parameter",
            ),
            (
                "text body",
                format!("{PATH}{QUERY}"),
                typed("text/plain"),
                b"img",
                415,
                Some("UnsupportedMediaType"),
                "Content-Type header must be application/octet-stream or application/json, \
                 got text/plain",
            ),
            (
                "url",
                format!("{PATH}{QUERY}"),
                typed("application/json"),
                br#"{"url": "https://example.com/dog.jpg"}"#,
                400,
                Some("InvalidImageUrl"),
                "url refers to https://example.com/dog.jpg",
            ),
            (
                "empty",
                format!("{PATH}{QUERY}"),
                raw.clone(),
                b"",
                400,
                Some("InvalidImageFormat"),
                "request body has neither image bytes nor url",
            ),
            (
                "too large",
                format!("{PATH}{QUERY}"),
                raw.clone(),
                &big,
                400,
                None,
                "image is 20971521 bytes, over the limit of 20971520 bytes",
            ),
        ];
        for (name, path, headers, body, status, inner, fragment) in cases {
            let err = Azure
                .parse_backend_request(&path, &headers, body)
                .unwrap_err();
            assert!(err.to_string().contains(fragment), "{name}: {err}");
            let rendered = crate::protocol::Protocol::Azure.render_backend_error(&err);
            assert_eq!(rendered.status.as_u16(), status, "{name}");
            let doc = json_of(&rendered.body);
            assert_eq!(doc["error"]["code"], "InvalidRequest", "{name}");
            assert_eq!(doc["error"]["innererror"]["code"].as_str(), inner, "{name}");
            let back = parse_answer(status, &rendered.body).unwrap_err();
            assert!(back.to_string().contains(fragment), "{name}: {back}");
        }
        let other = Azure
            .parse_backend_request("/vision/v3.2/analyze", &raw, b"img")
            .unwrap_err();
        assert_eq!(
            crate::protocol::Protocol::Azure
                .render_backend_error(&other)
                .status,
            StatusCode::NOT_FOUND
        );
        let undecodable = render_backend_response(
            &Reply::default(),
            vec![Err(ImageProblem::Undecodable("bad".to_owned()))],
        );
        assert_eq!(
            json_of(&undecodable.body)["error"]["innererror"]["code"],
            "InvalidImageFormat"
        );
        let throttled = Azure.render_throttled();
        assert!(
            parse_answer(429, &throttled.body)
                .unwrap_err()
                .is_throttling()
        );
    }

    #[test]
    fn raw_body_is_the_slot_and_url_is_remote() {
        let raw = typed("application/octet-stream");
        let image = b"\xff\xd8\xff original".to_vec();
        let req = ProxyRequest {
            path_and_query: PATH,
            headers: &raw,
            body: &image,
        };
        let slots = Protocol::Azure.extract_images(&req).unwrap();
        assert_eq!(slots[0].path, "body");
        assert_eq!(slots[0].bytes(), Some(&image[..]));
        let rewritten = Protocol::Azure
            .replace_images(&req, &[(0, b"smaller".to_vec())])
            .unwrap();
        assert_eq!(rewritten.body, b"smaller");
        assert!(rewritten.headers.is_empty());
        assert_eq!(replace_images(&raw, &image, &[]).unwrap(), image);

        let json = typed("application/json; charset=utf-8");
        let body = br#"{"url": "https://example.com/dog.jpg", "extra": 1}"#;
        let slots = extract_images(&json, body).unwrap();
        assert_eq!(
            slots[0].image,
            SlotImage::Remote("https://example.com/dog.jpg".to_owned())
        );
        let err = replace_images(&json, body, &[(0, b"x".to_vec())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image slot 0 (url) cannot be replaced: it refers to https://example.com/dog.jpg"
        );
        assert!(extract_images(&typed("text/plain"), b"x").is_err());
        assert!(matches!(
            &extract_images(&raw, b"").unwrap()[0].image,
            SlotImage::Unusable(_)
        ));
        assert_eq!(
            replace_images(&raw, &image, &[(1, b"x".to_vec())]).unwrap_err(),
            ProtocolError::NoSuchSlot { index: 1, count: 1 }
        );
    }
}
