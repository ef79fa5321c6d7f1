//! TorchServe inference API `predictions`, with the stock `image_classifier` handler's answer.
//!
//! Request: `POST /predictions/{model}[/{version}]` with the image as the raw body (any
//! content type but JSON), or as the `data` (or `file`) part of a `multipart/form-data` body.
//!
//! Answer: the top 5 classes as one JSON object, best first:
//!
//! ```json
//! {"tabby": 0.4664, "tiger_cat": 0.4645, "Egyptian_cat": 0.0660, "lynx": 0.0012, "plastic_bag": 0.0002}
//! ```
//!
//! Quirks this file handles:
//! - The answer's order is its ranking, but JSON objects have no order: [`TorchServe::parse_answer`] sorts
//!   by probability, and the backend writes the object by hand, best first (serde_json's map
//!   would sort the keys). Handlers that wrap the object in a one-element list are accepted.
//! - Errors are `{"code": 404, "type": "ModelNotFoundException", "message": "…"}`;
//!   [`TorchServe::parse_answer`] reports `type` as the kind.
//! - TorchServe refuses requests over `max_request_size`, 6 553 500 bytes by default
//!   ([`MAX_REQUEST_BYTES`]), with 413.
//! - A multipart body is rewritten by [`super::multipart`], every byte but the image's kept;
//!   a raw body is replaced whole.
//! - The local backend serves its one classifier under every model name, answers
//!   [`TOP_K`] labels, and refuses an undecodable image with 400 `BadRequestException`.
//! - Health is `GET /ping` ([`render_ping`]); the proxy sends it, and any other TorchServe
//!   inference path it does not compress ([`owns_path`]), to the TorchServe upstream as it
//!   came.

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use super::api::{Api, Emulated};
use super::multipart::{self, Multipart};
use super::one_image::{Found, only_result, single_replacement, slot};
use super::shape::{ApiError, ErrorKind, Kind};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    Label, ProtocolError, SlotImage, content_type_text, excerpt, is_success, media_type,
    normalise_score, parse_json, wire_number,
};
use super::{BadRequest, ErrorClass};
use super::{ProxyRequest, Rewritten};

/// The model name the client asks for; the local backend answers to any name.
pub const DEFAULT_MODEL: &str = "classifier";

/// Labels per answer, as the stock image classifier handler returns.
pub const TOP_K: usize = 5;

/// TorchServe's default `max_request_size`, in bytes.
pub const MAX_REQUEST_BYTES: usize = 6_553_500;

/// The multipart parts that may hold the image, in order of preference.
const IMAGE_PARTS: [&str; 2] = ["data", "file"];

/// The content type of answers.
pub(crate) const CONTENT_TYPE: &str = "application/json";

/// The model name and version of a `predictions` path (query ignored), or `None`.
pub fn model_of(path: &str) -> Option<(&str, Option<&str>)> {
    let route = path.split('?').next().unwrap_or_default();
    let rest = route.strip_prefix("/predictions/")?;
    let mut pieces = rest.split('/');
    let model = pieces.next().filter(|m| !m.is_empty())?;
    let version = pieces.next();
    if pieces.next().is_some() || version.is_some_and(str::is_empty) {
        return None;
    }
    Some((model, version))
}

/// The error of a non-2xx answer.
fn error_from_answer(status: u16, body: &[u8]) -> ProtocolError {
    let doc = super::parse_json(body, "answer body").ok();
    let field = |name: &str| {
        doc.as_ref()
            .and_then(|doc| doc.get(name))
            .and_then(Value::as_str)
    };
    match (field("type"), field("message")) {
        (None, None) => ProtocolError::Upstream {
            status,
            excerpt: excerpt(body),
        },
        (kind, message) => ProtocolError::Service {
            status,
            kind: kind.unwrap_or("error").to_owned(),
            message: message.unwrap_or_default().to_owned(),
        },
    }
}

/// Renders the answer for the request's single image: the labels as one object, best first.
/// An undecodable image is 400 `BadRequestException`; anything but one result is our bug.
pub fn render_backend_response(results: Vec<Result<Answer, ImageProblem>>) -> BackendResponse {
    let Some(result) = only_result("TorchServe", results) else {
        return internal_error();
    };
    match result {
        Ok(answer) => {
            let entries: Vec<String> = answer
                .labels
                .iter()
                .map(|label| {
                    format!(
                        "  {}: {}",
                        Value::String(label.name.clone()),
                        wire_number(label.score)
                    )
                })
                .collect();
            let body = if entries.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{\n{}\n}}", entries.join(",\n"))
            };
            BackendResponse {
                status: StatusCode::OK,
                headers: vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())],
                body: body.into_bytes(),
            }
        }
        Err(ImageProblem::Request(err)) => super::Protocol::TorchServe.render_backend_error(&err),
        Err(problem @ ImageProblem::Undecodable(_)) => {
            tracing::debug!(%problem, "image rejected");
            error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                &problem.to_string(),
            )
        }
        Err(problem @ ImageProblem::Internal(_)) => {
            tracing::error!(%problem, "image failed");
            internal_error()
        }
    }
}

/// Whether a path (query ignored) belongs to TorchServe's inference API: `/ping`,
/// `/predictions/…`, `/explanations/…`. The proxy sends those it does not compress to the
/// TorchServe upstream untouched.
pub fn owns_path(path: &str) -> bool {
    let route = path.split('?').next().unwrap_or_default();
    route == "/ping" || route.starts_with("/predictions/") || route.starts_with("/explanations/")
}

/// `GET /ping`: 200 `{"status": "Healthy"}`, as TorchServe answers once its models loaded.
pub fn render_ping() -> BackendResponse {
    BackendResponse::json(
        StatusCode::OK,
        CONTENT_TYPE,
        Vec::new(),
        &json!({"status": "Healthy"}),
    )
}

/// `{"code", "type", "message"}`.
fn error_response(status: StatusCode, kind: &str, message: &str) -> BackendResponse {
    super::shape::render(
        super::Protocol::TorchServe,
        &ApiError::new(status, Kind::Name(kind), message),
    )
}

/// The generic 500 answer; the cause goes to the log, not to the client.
fn internal_error() -> BackendResponse {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerException",
        INTERNAL_MESSAGE,
    )
}

/// The message of the generic 500 answer.
const INTERNAL_MESSAGE: &str = "Prediction failed";

/// The request's single slot (index 0): the `data`/`file` part or the raw body.
///
/// Errors on a broken multipart body; a JSON body or an empty one is an unusable slot.
pub fn extract_images(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let slot = match read_body(headers, body) {
        Ok(found) => found.slot("body", "body", |image| match image {
            Body::Raw(bytes) => ("body", SlotImage::Inline(bytes.to_vec())),
            Body::Part { name, bytes, .. } => (*name, SlotImage::Inline(bytes.to_vec())),
        }),
        Err(err @ ProtocolError::InvalidValue { .. }) => {
            slot("body", SlotImage::Unusable(err.to_string()))
        }
        Err(err) => return Err(err),
    };
    Ok(vec![slot])
}

/// The body with the image replaced (slot 0 is the only slot): see
/// [`super::Protocol::replace_images`]. A multipart body keeps every byte but the part's body.
pub fn replace_images(
    headers: &HeaderMap,
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let Some(bytes) = single_replacement(replacements)? else {
        return Ok(body.to_vec());
    };
    let not_replaceable = |path: &str, reason: String| ProtocolError::NotReplaceable {
        index: 0,
        path: path.to_owned(),
        reason,
    };
    match read_body(headers, body) {
        Ok(Found::Inline(Body::Raw(_))) => Ok(bytes.to_vec()),
        Ok(Found::Inline(Body::Part {
            name, part, form, ..
        })) => form
            .replace(&[(part, bytes)])
            .map_err(|err| not_replaceable(name, err.to_string())),
        Ok(Found::Missing(err)) => Err(not_replaceable("body", err.to_string())),
        Ok(Found::Remote { reference, .. }) => {
            Err(not_replaceable("body", format!("it refers to {reference}")))
        }
        Err(err @ ProtocolError::InvalidValue { .. }) => {
            Err(not_replaceable("body", err.to_string()))
        }
        Err(err) => Err(err),
    }
}

/// The request's image.
enum Body<'a> {
    /// The whole body.
    Raw(&'a [u8]),
    /// A multipart part.
    Part {
        /// The part's field name (`data` or `file`).
        name: &'static str,
        /// Its index.
        part: usize,
        /// Its body.
        bytes: &'a [u8],
        /// The parsed form, for rewriting.
        form: Multipart<'a>,
    },
}

/// Reads the body by its content type: multipart (the `data` or `file` part), JSON (an
/// error: no image), anything else raw.
fn read_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Found<Body<'a>>, ProtocolError> {
    match media_type(headers).as_deref() {
        Some(multipart::FORM_DATA) => {
            let boundary = multipart::boundary(&content_type_text(headers))?;
            let form = multipart::parse(body, &boundary)?;
            let found = IMAGE_PARTS.iter().find_map(|name| {
                form.field(name)
                    .filter(|(_, part)| !part.body.is_empty())
                    .map(|(part, found)| (*name, part, found.body))
            });
            Ok(match found {
                Some((name, part, bytes)) => Found::Inline(Body::Part {
                    name,
                    part,
                    bytes,
                    form,
                }),
                None => Found::Missing(ProtocolError::NoImage {
                    path: "multipart body".to_owned(),
                    fields: "a data nor a file part",
                }),
            })
        }
        Some("application/json") => Err(ProtocolError::InvalidValue {
            path: super::CONTENT_TYPE_FIELD.to_owned(),
            expected: "an image type, application/octet-stream or multipart/form-data",
            got: content_type_text(headers),
        }),
        _ if body.is_empty() => Ok(Found::Missing(ProtocolError::NoImage {
            path: "request body".to_owned(),
            fields: "image bytes nor a multipart data part",
        })),
        _ => Ok(Found::Inline(Body::Raw(body))),
    }
}

/// The TorchServe adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::TorchServe`].
#[derive(Debug, Clone, Copy)]
pub struct TorchServe;

impl Api for TorchServe {
    fn name(&self) -> &'static str {
        "torchserve"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let body = json!({
            "code": err.status.as_u16(),
            "type": err.kind.name(),
            "message": err.message,
        });
        (body, Vec::new())
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        Kind::Name(match status.as_u16() {
            400 | 408 => "BadRequestException",
            403 => "InvalidKeyException",
            404 => "ResourceNotFoundException",
            405 => "MethodNotAllowedException",
            413 => "RequestEntityTooLargeException",
            429 | 502..=504 => "ServiceUnavailableException",
            _ => "InternalServerException",
        })
    }

    fn max_image_bytes(&self) -> Option<usize> {
        None
    }

    fn max_images(&self) -> Option<usize> {
        None
    }

    fn recognizes(&self, route: &str, _headers: &HeaderMap) -> bool {
        model_of(route).is_some()
    }

    fn owns(&self, _method: &Method, route: &str, _headers: &HeaderMap) -> bool {
        owns_path(route)
    }

    /// The request for the top 5 labels of one image, raw body: see
    /// [`super::Protocol::client_request`].
    fn client_request(&self, image: &[u8], _max_labels: usize) -> ClientRequest {
        ClientRequest {
            path_and_query: format!("/predictions/{DEFAULT_MODEL}"),
            headers: vec![(
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned(),
            )],
            body: image.to_vec(),
        }
    }

    /// The labels of a predictions answer: an object of class → probability.
    ///
    /// A non-2xx answer becomes [`ProtocolError::Service`] (kind from `type`, message from
    /// `message`) or, in no known shape, [`ProtocolError::Upstream`].
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        if !is_success(status) {
            return Err(error_from_answer(status, body));
        }
        let doc = parse_json(body, "answer body")?;
        let object = match &doc {
            Value::Object(object) => object,
            Value::Array(items) if items.len() == 1 && items[0].is_object() => items[0]
                .as_object()
                .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                    detail: "the answer's only element is not an object".to_owned(),
                })?,
            other => {
                return Err(ProtocolError::UnexpectedAnswer {
                    detail: format!(
                        "expected an object of class → probability, got {}",
                        super::describe(other)
                    ),
                });
            }
        };
        let labels = object
            .iter()
            .map(|(name, value)| {
                let score = value
                    .as_f64()
                    .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                        detail: format!(
                            "probability of `{name}` is not a number: {}",
                            super::describe(value)
                        ),
                    })?;
                Ok(Label {
                    name: name.clone(),
                    score: normalise_score(score, 1.0),
                })
            })
            .collect::<Result<Vec<_>, ProtocolError>>()?;
        Ok(Answer::new(labels))
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

impl Emulated for TorchServe {
    /// Reads a predictions request: see [`super::Protocol::parse_backend_request`].
    ///
    /// One image, so every problem is a request-level `Err`: another path, a JSON body, a
    /// multipart body without a `data` or `file` part, an empty body, an image over
    /// [`MAX_REQUEST_BYTES`].
    fn parse_backend_request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        if model_of(path).is_none() {
            return Err(ProtocolError::UnsupportedOperation {
                found: format!("path `{}`", path.split('?').next().unwrap_or_default()),
                expected: "`POST /predictions/{model}[/{version}]`",
            });
        }
        let bytes = match read_body(headers, body)?.inline()? {
            Body::Raw(bytes) | Body::Part { bytes, .. } => bytes,
        };
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(ProtocolError::ImageTooLarge {
                limit: MAX_REQUEST_BYTES,
                actual: bytes.len(),
            });
        }
        Ok(BackendRequest::plain(vec![Ok(BackendImage {
            bytes: bytes.to_vec(),
            max_labels: TOP_K,
            min_score: 0.0,
        })]))
    }

    fn render_backend_response(
        &self,
        _reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        render_backend_response(results)
    }

    /// 404 `ResourceNotFoundException` (another path), 400 `BadRequestException` (bad body), 413
    /// `RequestEntityTooLargeException` (an image over the limit), 503
    /// `ServiceUnavailableException`; ours a generic 500 `InternalServerException`.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let (status, kind) = match class {
            ErrorClass::BadRequest(BadRequest::ImageTooLarge) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
            ),
            ErrorClass::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequestException"),
            ErrorClass::UnsupportedOperation => {
                (StatusCode::NOT_FOUND, "ResourceNotFoundException")
            }
            ErrorClass::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            ErrorClass::Internal => {
                return ErrorKind::server_error(
                    Kind::Name("InternalServerException"),
                    INTERNAL_MESSAGE,
                );
            }
        };
        ErrorKind::new(status, Kind::Name(kind))
    }

    /// A full-queue error with status 429: see [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "ServiceUnavailableException",
            "the model's job queue is full; retry later",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::multipart::NewPart;
    use crate::protocol::{
        AnswerCase, Protocol, ProxyRequest, check_answer_cases, fixture, json_of, typed,
    };

    #[test]
    fn ping_and_owned_paths() {
        let ping = render_ping();
        assert_eq!(ping.status, StatusCode::OK);
        assert_eq!(json_of(&ping.body), json!({"status": "Healthy"}));
        // (path, TorchServe's own)
        for (path, owned) in [
            ("/ping", true),
            ("/ping?x", true),
            ("/predictions/densenet", true),
            ("/explanations/densenet/1.0", true),
            ("/pingpong", false),
            ("/predictions", false),
            ("/v2/health/live", false),
        ] {
            assert_eq!(owns_path(path), owned, "{path}");
        }
    }

    #[test]
    fn model_of_reads_prediction_paths() {
        let cases = [
            ("/predictions/densenet161", Some(("densenet161", None))),
            (
                "/predictions/densenet161/2.0?x=1",
                Some(("densenet161", Some("2.0"))),
            ),
            ("/predictions/", None),
            ("/predictions/a/1/extra", None),
            ("/predictions/a/", None),
            ("/explanations/a", None),
        ];
        for (path, expected) in cases {
            assert_eq!(model_of(path), expected, "{path}");
        }
    }

    #[test]
    fn parse_answer_on_fixtures() {
        // (name, body, status, Ok((top1, label count)) or Err(message fragment))
        let cases: Vec<AnswerCase> = vec![
            (
                "top 5",
                fixture("torchserve_answer.json"),
                200,
                Ok((Some("tabby"), 5)),
            ),
            (
                "wrapped in a list",
                br#"[{"cat": 0.2, "dog": 0.7}]"#.to_vec(),
                200,
                Ok((Some("dog"), 2)),
            ),
            (
                "model not found",
                fixture("torchserve_error_not_found.json"),
                404,
                Err("upstream answered HTTP 404 ModelNotFoundException: Model not found"),
            ),
            (
                "html",
                b"<html>413 Request Entity Too Large</html>".to_vec(),
                413,
                Err("upstream answered HTTP 413: <html>413"),
            ),
            (
                "not a probability",
                br#"{"cat": "high"}"#.to_vec(),
                200,
                Err("probability of `cat` is not a number: \"high\""),
            ),
            (
                "a list of labels",
                br#"["cat", "dog"]"#.to_vec(),
                200,
                Err("expected an object of class → probability, got [\"cat\",\"dog\"]"),
            ),
        ];
        check_answer_cases(cases, |status, body| TorchServe.parse_answer(status, body));
        let answer = TorchServe
            .parse_answer(200, &fixture("torchserve_answer.json"))
            .unwrap();
        let names: Vec<&str> = answer.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["tabby", "tiger_cat", "Egyptian_cat", "lynx", "plastic_bag"]
        );
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).cycle().take(2048).collect();
        let request = Protocol::TorchServe.client_request(&image, 10);
        assert_eq!(request.path_and_query, "/predictions/classifier");
        assert_eq!(request.body, image);
        let parsed = TorchServe
            .parse_backend_request(
                &request.path_and_query,
                &typed("application/octet-stream"),
                &request.body,
            )
            .unwrap();
        let got = parsed.images[0].as_ref().unwrap();
        assert_eq!(got.bytes, image);
        assert_eq!(got.max_labels, TOP_K);
    }

    /// (headers, body, the image or an error fragment)
    type BodyCase = (HeaderMap, Vec<u8>, Result<&'static [u8], &'static str>);

    #[test]
    fn backend_reads_raw_and_multipart_bodies() {
        let boundary = "------------------------d74496d66958873e";
        let form = |name: &str| {
            multipart::encode(
                boundary,
                &[NewPart {
                    name,
                    filename: Some("kitten.jpg"),
                    content_type: Some("image/jpeg"),
                    body: b"\xff\xd8\xff kitten",
                }],
            )
        };
        let multipart_headers = typed(&format!("multipart/form-data; boundary={boundary}"));
        let cases: Vec<BodyCase> = vec![
            (
                typed("image/jpeg"),
                b"\xff\xd8\xff raw".to_vec(),
                Ok(b"\xff\xd8\xff raw"),
            ),
            (
                HeaderMap::new(),
                b"\xff\xd8\xff raw".to_vec(),
                Ok(b"\xff\xd8\xff raw"),
            ),
            (
                multipart_headers.clone(),
                form("data"),
                Ok(b"\xff\xd8\xff kitten"),
            ),
            (
                multipart_headers.clone(),
                form("file"),
                Ok(b"\xff\xd8\xff kitten"),
            ),
            (
                multipart_headers.clone(),
                form("image"),
                Err("multipart body has neither a data nor a file part"),
            ),
            (
                typed("application/json"),
                br#"{"data": "abc"}"#.to_vec(),
                Err(
                    "Content-Type header must be an image type, application/octet-stream or \
                     multipart/form-data, got application/json",
                ),
            ),
            (
                typed("application/octet-stream"),
                Vec::new(),
                Err("request body has neither image bytes nor a multipart data part"),
            ),
            (
                typed("application/octet-stream"),
                vec![0; MAX_REQUEST_BYTES + 1],
                Err("image is 6553501 bytes, over the limit of 6553500 bytes"),
            ),
        ];
        for (headers, body, expected) in cases {
            match (
                TorchServe.parse_backend_request("/predictions/m", &headers, &body),
                expected,
            ) {
                (Ok(parsed), Ok(bytes)) => {
                    assert_eq!(parsed.images[0].as_ref().unwrap().bytes, bytes);
                }
                (Err(err), Err(fragment)) => {
                    assert!(err.to_string().contains(fragment), "{err}");
                }
                (got, expected) => panic!("expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rendered_answers_keep_their_order_and_parse_back() {
        let sent = Answer::new(vec![
            Label {
                name: "zebra".to_owned(),
                score: 0.7,
            },
            Label {
                name: "\"quoted\" ox".to_owned(),
                score: 0.2,
            },
            Label {
                name: "antelope".to_owned(),
                score: 0.1,
            },
        ]);
        let rendered = render_backend_response(vec![Ok(sent)]);
        assert_eq!(rendered.status, StatusCode::OK);
        let text = String::from_utf8(rendered.body.clone()).unwrap();
        assert_eq!(
            text,
            "{\n  \"zebra\": 0.7,\n  \"\\\"quoted\\\" ox\": 0.2,\n  \"antelope\": 0.1\n}"
        );
        let back = TorchServe.parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.top1(), Some("zebra"));
        assert_eq!(back.labels[1].name, "\"quoted\" ox");
        let empty = render_backend_response(vec![Ok(Answer::default())]);
        assert_eq!(
            TorchServe.parse_answer(200, &empty.body).unwrap(),
            Answer::default()
        );
    }

    #[test]
    fn errors_render_in_torchserve_shape() {
        let too_large = ProtocolError::ImageTooLarge {
            limit: MAX_REQUEST_BYTES,
            actual: MAX_REQUEST_BYTES + 1,
        };
        let other_path = TorchServe
            .parse_backend_request("/models", &HeaderMap::new(), b"x")
            .unwrap_err();
        // (error, status, type)
        let cases = [
            (other_path, 404, "ResourceNotFoundException"),
            (too_large, 413, "RequestEntityTooLargeException"),
            (
                ProtocolError::Unavailable {
                    reason: "draining".to_owned(),
                },
                503,
                "ServiceUnavailableException",
            ),
            (
                ProtocolError::NoSuchSlot { index: 1, count: 1 },
                500,
                "InternalServerException",
            ),
        ];
        for (err, status, kind) in cases {
            let rendered = crate::protocol::Protocol::TorchServe.render_backend_error(&err);
            assert_eq!(rendered.status.as_u16(), status, "{err}");
            let doc = json_of(&rendered.body);
            assert_eq!(doc["code"], status, "{err}");
            assert_eq!(doc["type"], kind, "{err}");
            let back = TorchServe.parse_answer(status, &rendered.body).unwrap_err();
            assert!(
                matches!(&back, ProtocolError::Service { kind: k, .. } if k == kind),
                "{back:?}"
            );
        }
        let undecodable =
            render_backend_response(vec![Err(ImageProblem::Undecodable("bad".to_owned()))]);
        assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
        assert!(
            TorchServe
                .parse_answer(429, &TorchServe.render_throttled().body)
                .unwrap_err()
                .is_throttling()
        );
    }

    #[test]
    fn replace_raw_and_multipart_bodies() {
        let raw = typed("image/jpeg");
        let body = b"\xff\xd8\xff original".to_vec();
        let req = ProxyRequest {
            path_and_query: "/predictions/m",
            headers: &raw,
            body: &body,
        };
        let slots = Protocol::TorchServe.extract_images(&req).unwrap();
        assert_eq!(
            (slots[0].path.as_str(), slots[0].bytes()),
            ("body", Some(&body[..]))
        );
        let rewritten = Protocol::TorchServe
            .replace_images(&req, &[(0, b"small".to_vec())])
            .unwrap();
        assert_eq!(rewritten.body, b"small");

        let boundary = "xYzZY";
        let form = multipart::encode(
            boundary,
            &[
                NewPart {
                    name: "data",
                    filename: Some("a.jpg"),
                    content_type: Some("image/jpeg"),
                    body: b"\xff\xd8\xff original",
                },
                NewPart {
                    name: "threshold",
                    filename: None,
                    content_type: None,
                    body: b"0.5",
                },
            ],
        );
        let headers = typed("multipart/form-data; boundary=xYzZY");
        let slots = extract_images(&headers, &form).unwrap();
        assert_eq!(slots[0].path, "data");
        let out = replace_images(&headers, &form, &[(0, b"small".to_vec())]).unwrap();
        let expected =
            String::from_utf8_lossy(&form).replace("\u{fffd}\u{fffd}\u{fffd} original", "small");
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(
            extract_images(&headers, &out).unwrap()[0].bytes(),
            Some(&b"small"[..])
        );

        let json = typed("application/json");
        let slots = extract_images(&json, b"{}").unwrap();
        assert!(!slots[0].is_replaceable());
        assert!(replace_images(&json, b"{}", &[(0, b"x".to_vec())]).is_err());
        assert!(extract_images(&typed("multipart/form-data; boundary=q"), b"junk").is_err());
        assert_eq!(replace_images(&raw, &body, &[]).unwrap(), body);
    }
}
