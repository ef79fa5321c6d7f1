//! Baidu AI image recognition `advanced_general` (通用物体和场景识别, general objects and
//! scenes).
//!
//! Request: `POST /rest/2.0/image-classify/v2/advanced_general?access_token=…` with
//! `Content-Type: application/x-www-form-urlencoded`:
//!
//! ```text
//! image=<base64, then urlencoded>&baike_num=0
//! ```
//!
//! Answer: `{"log_id": 327863200205075661, "result_num": 5, "result": [{"keyword", "score",
//! "root", "baike_info"}]}`, scores in `0..=1`.
//!
//! Quirks this file handles:
//! - Errors come with **HTTP 200**: `{"error_code": 216201, "error_msg": "image format error",
//!   "log_id": …}`. [`Baidu::parse_answer`] turns them into [`ProtocolError::Service`] with status 200
//!   and kind `error_code N`; QPS and cluster limits (18, 4) count as throttling
//!   ([`ProtocolError::is_throttling`]).
//! - `image` is base64 without a `data:` header, then urlencoded; the base64 text may be at
//!   most [`MAX_BASE64_BYTES`] (4 MB, Baidu's limit is on the base64, not the image). A client
//!   that forgot to urlencode it lost every `+` to a space; spaces are read back as `+`.
//! - `url` names a remote image and counts only when `image` is absent (as at Baidu); the
//!   backend does not fetch it, the proxy leaves it untouched.
//! - There is no parameter for the number of results: the backend answers
//!   [`RESULT_NUM`] (what Baidu usually returns). ImageNet has no label hierarchy, so `root` is
//!   empty (Baidu leaves it empty for some tags too); `baike_num` results carry an empty
//!   `baike_info` (no encyclopedia here).
//! - The access token is in the query and the body is not signed: the proxy rewrites only the
//!   `image` value, and every other field keeps its bytes and its place.

use std::borrow::Cow;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Api, Emulated};
use super::one_image::{Found, only_result, single_replacement, slot_not_replaceable};
use super::shape::{ApiError, ErrorKind, Kind};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    ProtocolError, SlotImage, decode_form_base64, describe, encode_base64, excerpt, form_encode,
    form_fields, is_success, labels_from, parse_json, read_answer, splice, wire_number,
};
use super::{BadRequest, ErrorClass};
use super::{ProxyRequest, Rewritten};
use super::{WireLabel, wire::Field, wire::wire_object};

/// An `advanced_general` answer: `result` on success, `error_code` / `error_msg` on failure
/// (at HTTP 200 too).
#[derive(Debug, Deserialize)]
struct ClassifyAnswer<'a> {
    #[serde(default)]
    error_code: Field<Value>,
    #[serde(default, borrow)]
    error_msg: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    result: Field<Vec<Field<ResultItem<'a>>>>,
}

/// One of `result`: `{"keyword", "score", "root", "baike_info"}`; `score` in `0..=1`, a
/// number or, in older answers, a numeric string.
#[derive(Debug, Deserialize)]
struct ResultItem<'a> {
    #[serde(default, borrow)]
    keyword: Field<Cow<'a, str>>,
    #[serde(default)]
    score: Field<Value>,
}

impl WireLabel for ResultItem<'_> {
    fn name(&self) -> Option<&str> {
        self.keyword.text()
    }

    fn score(&self) -> Option<f64> {
        self.score.ok().and_then(as_number)
    }
}

wire_object!('a, ClassifyAnswer, ResultItem);

/// The path of `advanced_general`.
pub const PATH: &str = "/rest/2.0/image-classify/v2/advanced_general";

/// The content type of requests.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The longest `image` accepted, as base64 text (4 MiB).
pub const MAX_BASE64_BYTES: usize = 4 * 1024 * 1024;

/// Results the backend answers with.
pub const RESULT_NUM: usize = 5;

/// The content type of answers (what Baidu sends).
pub(crate) const CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// Baidu's error codes the backend uses: `(code, Baidu's message)`.
mod code {
    pub const UNSUPPORTED_METHOD: (i64, &str) = (3, "Unsupported openapi method");
    pub const SERVICE_UNAVAILABLE: (i64, &str) = (2, "Service temporarily unavailable");
    pub const QPS_LIMIT: (i64, &str) = (18, "Open api qps request limit reached");
    pub const INVALID_PARAM: (i64, &str) = (216_100, "invalid param");
    pub const NOT_ENOUGH_PARAM: (i64, &str) = (216_101, "not enough param");
    pub const IMAGE_FORMAT: (i64, &str) = (216_201, "image format error");
    pub const IMAGE_SIZE: (i64, &str) = (216_202, "image size error");
    pub const INTERNAL: (i64, &str) = (282_000, "internal error");
}

/// Error codes meaning "too many requests now": 4 (cluster limit) and 18 (QPS limit).
const THROTTLING_CODES: [i64; 2] = [4, code::QPS_LIMIT.0];

/// What the renderer needs from the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// `baike_num`: how many results carry `baike_info`.
    pub baike_num: usize,
}

/// A score as a JSON number or a numeric string (older Baidu answers quote them).
fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a [`ProtocolError::Service`] kind is one of Baidu's throttling codes.
pub(super) fn is_throttling_kind(kind: &str) -> bool {
    kind.strip_prefix("error_code ")
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| THROTTLING_CODES.contains(&code))
}

/// Renders the answer for the request's single image (HTTP 200 either way, as Baidu does).
///
/// `Ok` is rendered with exactly its labels, `root` empty, `baike_info` `{}` on the first
/// `baike_num`; an undecodable image is `error_code` 216201; anything but one result is our
/// bug (282000).
pub fn render_backend_response(
    reply: &Reply,
    results: Vec<Result<Answer, ImageProblem>>,
) -> BackendResponse {
    let Some(result) = only_result("Baidu", results) else {
        return error_response(code::INTERNAL, None);
    };
    match result {
        Ok(answer) => {
            let result: Vec<Value> = answer
                .labels
                .iter()
                .enumerate()
                .map(|(i, label)| {
                    let mut entry = json!({
                        "keyword": label.name,
                        "score": wire_number(label.score),
                        "root": "",
                    });
                    if i < reply.baike_num {
                        entry["baike_info"] = json!({});
                    }
                    entry
                })
                .collect();
            let body = json!({
                "log_id": fresh_log_id(),
                "result_num": result.len(),
                "result": result,
            });
            BackendResponse::json(StatusCode::OK, CONTENT_TYPE, Vec::new(), &body)
        }
        Err(ImageProblem::Request(err)) => super::Protocol::Baidu.render_backend_error(&err),
        Err(problem @ ImageProblem::Undecodable(_)) => {
            tracing::debug!(%problem, "image rejected");
            error_response(code::IMAGE_FORMAT, Some(problem.to_string()))
        }
        Err(problem @ ImageProblem::Internal(_)) => {
            tracing::error!(%problem, "image failed");
            error_response(code::INTERNAL, None)
        }
    }
}

/// An error answer: HTTP 200, Baidu's message, then `: detail` when there is one.
fn error_response((code, message): (i64, &str), detail: Option<String>) -> BackendResponse {
    super::shape::render(
        super::Protocol::Baidu,
        &ApiError::new(
            StatusCode::OK,
            Kind::Code(code, message),
            detail.as_deref().unwrap_or_default(),
        ),
    )
}

/// Baidu's `internal error`, for a kind Baidu has no code for.
const INTERNAL: (i64, &str) = (282_000, "internal error");

/// A random `log_id` below 2^53, so that JavaScript clients read it exactly.
fn fresh_log_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 11
}

/// The request's single image slot (index 0): `image`, else `url`, else unusable.
///
/// Any body reads as a form, unless it has more than [`super::MAX_FORM_FIELDS`] fields.
pub fn extract_images(body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let fields = form_fields(body)?;
    let slot = find_image(&fields).slot("url", "image", |text| {
        let image = match decode_form_base64(text, || "image".to_owned()) {
            Ok(bytes) => SlotImage::Inline(bytes),
            Err(err) => SlotImage::Unusable(err.to_string()),
        };
        ("image", image)
    });
    Ok(vec![slot])
}

/// The body with the `image` value replaced (slot 0 is the only slot): see
/// [`super::Protocol::replace_images`]. Only the bytes of that value change.
pub fn replace_images(
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let Some(bytes) = single_replacement(replacements)? else {
        return Ok(body.to_vec());
    };
    let slot = extract_images(body)?.remove(0);
    if let Some(err) = slot_not_replaceable(&slot) {
        return Err(err);
    }
    let not_replaceable = |reason: String| ProtocolError::NotReplaceable {
        index: 0,
        path: slot.path.clone(),
        reason,
    };
    let fields = form_fields(body)?;
    let field = fields
        .iter()
        .find(|f| f.name == "image" && !f.value.is_empty())
        .ok_or_else(|| not_replaceable("its field was not located".to_owned()))?;
    let value = form_encode(&encode_base64(bytes));
    Ok(splice(body, field.value_range.clone(), value.as_bytes()))
}

/// Finds the image among the form fields: the (form-decoded) base64 text of the first
/// non-empty `image` wins over the first non-empty `url`.
fn find_image(fields: &[super::FormField]) -> Found<&str> {
    let first = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name && !f.value.is_empty())
            .map(|f| f.value.as_str())
    };
    match (first("image"), first("url")) {
        (Some(text), _) => Found::Inline(text),
        (None, Some(url)) => Found::Remote {
            path: "url".to_owned(),
            reference: url.to_owned(),
        },
        (None, None) => Found::Missing(ProtocolError::NoImage {
            path: "request body".to_owned(),
            fields: "image nor url",
        }),
    }
}

/// The Baidu image-classify adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::Baidu`].
#[derive(Debug, Clone, Copy)]
pub struct Baidu;

impl Api for Baidu {
    fn name(&self) -> &'static str {
        "baidu"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let (code, text) = match err.kind {
            Kind::Code(code, text) => (code, text),
            other => (INTERNAL.0, other.name()),
        };
        let body = json!({
            "error_code": code,
            "error_msg": err.with_detail(text),
            "log_id": fresh_log_id(),
        });
        (body, Vec::new())
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        let (code, text) = match status.as_u16() {
            400 | 408 => (216_100, "invalid param"),
            403 => (6, "No permission to access data"),
            404 | 405 => (3, "Unsupported openapi method"),
            413 => (216_202, "image size error"),
            429 | 503 => (18, "Open api qps request limit reached"),
            502 | 504 => (2, "Service temporarily unavailable"),
            _ => INTERNAL,
        };
        Kind::Code(code, text)
    }

    fn max_image_bytes(&self) -> Option<usize> {
        Some(MAX_BASE64_BYTES / 4 * 3)
    }

    fn recognizes(&self, route: &str, _headers: &HeaderMap) -> bool {
        route == PATH
    }

    /// Whether a path (query ignored) is one of Baidu's image-classify endpoints: anything under
    /// `/rest/2.0/image-classify/`.
    fn owns(&self, _method: &Method, route: &str, _headers: &HeaderMap) -> bool {
        let route = route.split('?').next().unwrap_or_default();
        route.starts_with("/rest/2.0/image-classify/")
    }

    /// The request for labels of one image: see [`super::Protocol::client_request`]. Append
    /// `?access_token=…` for the real service.
    fn client_request(&self, image: &[u8], _max_labels: usize) -> ClientRequest {
        ClientRequest {
            path_and_query: PATH.to_owned(),
            headers: vec![("Content-Type".to_owned(), FORM_CONTENT_TYPE.to_owned())],
            body: format!("image={}", form_encode(&encode_base64(image))).into_bytes(),
        }
    }

    /// The labels of an `advanced_general` answer.
    ///
    /// An `error_code` (at any status) becomes [`ProtocolError::Service`] with kind
    /// `error_code N`; a non-2xx answer in no known shape [`ProtocolError::Upstream`].
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        let doc = match parse_json(body, "answer body") {
            Ok(doc) => doc,
            Err(_) if !is_success(status) => {
                return Err(ProtocolError::Upstream {
                    status,
                    excerpt: excerpt(body),
                });
            }
            Err(err) => return Err(err),
        };
        let answer = read_answer::<ClassifyAnswer>(&doc);
        if let Some(code) = answer.as_ref().and_then(|a| a.error_code.ok()) {
            return Err(ProtocolError::Service {
                status,
                kind: format!("error_code {code}"),
                message: answer
                    .as_ref()
                    .and_then(|a| a.error_msg.text())
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        if !is_success(status) {
            return Err(ProtocolError::Upstream {
                status,
                excerpt: excerpt(body),
            });
        }
        let results = answer.as_ref().and_then(|a| a.result.ok()).ok_or_else(|| {
            ProtocolError::UnexpectedAnswer {
                detail: "no `result` array".to_owned(),
            }
        })?;
        let labels = labels_from(results, "result", ("keyword", "score"), 1.0)?;
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

impl Emulated for Baidu {
    /// Reads an `advanced_general` request: see [`super::Protocol::parse_backend_request`].
    ///
    /// One image, so every problem is a request-level `Err`: another path, a bad `baike_num`, no
    /// `image` (a `url` is a [`ProtocolError::RemoteImage`]), bad base64, base64 over
    /// [`MAX_BASE64_BYTES`]. The content type is not checked (the body is read as a form).
    fn parse_backend_request(
        &self,
        path: &str,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        let route = path.split('?').next().unwrap_or_default();
        if route != PATH {
            return Err(ProtocolError::UnsupportedOperation {
                found: format!("path `{route}`"),
                expected: "`POST /rest/2.0/image-classify/v2/advanced_general`",
            });
        }
        let fields = form_fields(body)?;
        let baike_num =
            match fields.iter().find(|f| f.name == "baike_num") {
                None => 0,
                Some(field) => field.value.trim().parse::<usize>().map_err(|_| {
                    ProtocolError::InvalidValue {
                        path: "baike_num".to_owned(),
                        expected: "a non-negative integer",
                        got: describe(&Value::String(field.value.clone())),
                    }
                })?,
            };
        let text = find_image(&fields).inline()?;
        if text.len() > MAX_BASE64_BYTES {
            return Err(ProtocolError::ImageTooLarge {
                limit: MAX_BASE64_BYTES,
                actual: text.len(),
            });
        }
        let bytes = decode_form_base64(text, || "image".to_owned())?;
        Ok(BackendRequest {
            images: vec![Ok(BackendImage {
                bytes,
                max_labels: RESULT_NUM,
                min_score: 0.0,
            })],
            reply: super::Reply::Baidu(Reply { baike_num }),
        })
    }

    fn render_backend_response(
        &self,
        reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        match reply {
            super::Reply::Baidu(reply) => render_backend_response(reply, results),
            _ => render_backend_response(&Reply::default(), results),
        }
    }

    /// HTTP 200 (as Baidu answers), codes 3 (another path), 216101 (no image), 216100 (bad
    /// parameters, a `url`), 216201 (bad base64), 216202 (too large), 2 (unavailable); ours a
    /// generic 282000 without detail.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let (code, text) = match class {
            ErrorClass::BadRequest(bad) => match bad {
                BadRequest::MissingField | BadRequest::NoImage => code::NOT_ENOUGH_PARAM,
                BadRequest::Unreadable
                | BadRequest::InvalidArgument
                | BadRequest::UnsupportedMediaType
                | BadRequest::UnsupportedFeature
                | BadRequest::RemoteImage => code::INVALID_PARAM,
                BadRequest::BadEncoding => code::IMAGE_FORMAT,
                BadRequest::ImageTooLarge => code::IMAGE_SIZE,
            },
            ErrorClass::UnsupportedOperation => code::UNSUPPORTED_METHOD,
            ErrorClass::Unavailable => code::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => {
                let (code, text) = code::INTERNAL;
                return ErrorKind::new(StatusCode::OK, Kind::Code(code, text)).saying("");
            }
        };
        ErrorKind::new(StatusCode::OK, Kind::Code(code, text))
    }

    /// The error's message, but Baidu's size limit is on the image's base64.
    fn error_detail(&self, err: &ProtocolError) -> String {
        match err {
            ProtocolError::ImageTooLarge { limit, actual } => {
                format!("the image's base64 is {actual} bytes, over the limit of {limit} bytes")
            }
            _ => err.to_string(),
        }
    }

    /// Baidu's QPS-limit error (`error_code` 18) with status 429: see
    /// [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        let mut response = error_response(code::QPS_LIMIT, None);
        response.status = StatusCode::TOO_MANY_REQUESTS;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Label;
    use crate::protocol::{
        AnswerCase, Protocol, ProxyRequest, check_answer_cases, fixture, json_of,
    };

    fn backend(body: &[u8]) -> Result<BackendRequest, ProtocolError> {
        Baidu.parse_backend_request(
            &format!("{PATH}?access_token=24.abc"),
            &HeaderMap::new(),
            body,
        )
    }

    #[test]
    fn parse_answer_on_fixtures() {
        // (name, body, status, Ok((top1, label count)) or Err(message fragment))
        let cases: Vec<AnswerCase> = vec![
            (
                "labels",
                fixture("baidu_answer.json"),
                200,
                Ok((Some("大熊猫"), 5)),
            ),
            (
                "no labels",
                br#"{"log_id": 1, "result_num": 0, "result": []}"#.to_vec(),
                200,
                Ok((None, 0)),
            ),
            (
                "image format error in a 200",
                fixture("baidu_error_image_format.json"),
                200,
                Err("upstream answered HTTP 200 error_code 216201: image format error"),
            ),
            (
                "bad token",
                fixture("baidu_error_token.json"),
                200,
                Err("upstream answered HTTP 200 error_code 110: Access token invalid"),
            ),
            (
                "gateway page",
                b"<html><body>502 Bad Gateway</body></html>".to_vec(),
                502,
                Err("upstream answered HTTP 502: <html><body>502 Bad Gateway"),
            ),
            (
                "no result",
                br#"{"log_id": 1}"#.to_vec(),
                200,
                Err("no `result` array"),
            ),
            (
                "score missing",
                br#"{"result": [{"keyword": "x"}]}"#.to_vec(),
                200,
                Err("result[0].score is missing or not a number"),
            ),
            (
                "not JSON",
                b"image format error".to_vec(),
                200,
                Err("answer body is not valid JSON"),
            ),
        ];
        check_answer_cases(cases, |status, body| Baidu.parse_answer(status, body));
        let answer = Baidu
            .parse_answer(200, &fixture("baidu_answer.json"))
            .unwrap();
        assert!((answer.labels[0].score - 0.953_114).abs() < 1e-6);
        assert!(answer.labels.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn throttling_codes_are_retryable() {
        let qps = Baidu
            .parse_answer(
                200,
                br#"{"error_code": 18, "error_msg": "Open api qps request limit reached"}"#,
            )
            .unwrap_err();
        assert!(qps.is_throttling(), "{qps}");
        let format = Baidu
            .parse_answer(200, &fixture("baidu_error_image_format.json"))
            .unwrap_err();
        assert!(!format.is_throttling());
        let rendered = Baidu.render_throttled();
        assert_eq!(rendered.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            Baidu
                .parse_answer(429, &rendered.body)
                .unwrap_err()
                .is_throttling()
        );
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).cycle().take(3001).collect();
        let request = Protocol::Baidu.client_request(&image, 10);
        assert_eq!(request.path_and_query, PATH);
        assert_eq!(
            request.headers,
            [(
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned()
            )]
        );
        let text = String::from_utf8(request.body.clone()).unwrap();
        assert!(text.starts_with("image=AAECAwQF"), "{text}");
        assert!(!text.contains('+') && !text.contains('/'), "urlencoded");
        let parsed = backend(&request.body).unwrap();
        let got = parsed.images[0].as_ref().unwrap();
        assert_eq!(got.bytes, image);
        assert_eq!((got.max_labels, got.min_score), (RESULT_NUM, 0.0));
        assert_eq!(
            parsed.reply,
            super::super::Reply::Baidu(Reply { baike_num: 0 })
        );
    }

    #[test]
    fn backend_reads_fixture_and_tolerates_unencoded_plus() {
        let parsed = backend(&fixture("baidu_request.txt")).unwrap();
        assert!(
            parsed.images[0]
                .as_ref()
                .unwrap()
                .bytes
                .starts_with(b"\xff\xd8\xff")
        );
        assert_eq!(
            parsed.reply,
            super::super::Reply::Baidu(Reply { baike_num: 2 })
        );
        // `+` sent raw arrives as a space; it is read back as `+`.
        let bytes = [0xfb_u8, 0xef, 0xbe, 0xfb];
        let raw = format!("image={}", encode_base64(&bytes));
        assert!(raw.contains('+'));
        let parsed = backend(raw.as_bytes()).unwrap();
        assert_eq!(parsed.images[0].as_ref().unwrap().bytes, bytes);
    }

    #[test]
    fn rendered_answers_parse_back() {
        let sent = Answer::new(vec![
            Label {
                name: "giant panda".to_owned(),
                score: 0.91,
            },
            Label {
                name: "lesser panda".to_owned(),
                score: 0.05,
            },
        ]);
        let rendered = render_backend_response(&Reply { baike_num: 1 }, vec![Ok(sent.clone())]);
        assert_eq!(rendered.status, StatusCode::OK);
        assert_eq!(rendered.headers[0].1, "application/json;charset=utf-8");
        let doc = json_of(&rendered.body);
        assert_eq!(doc["result_num"], 2);
        assert!(doc["log_id"].as_u64().unwrap() < 1 << 53);
        assert_eq!(
            doc["result"][0],
            json!({"keyword": "giant panda", "score": 0.91, "root": "", "baike_info": {}})
        );
        assert!(doc["result"][1].get("baike_info").is_none());
        let back = Baidu.parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.top1(), Some("giant panda"));
        assert_eq!(back.labels.len(), 2);
    }

    #[test]
    fn request_errors_render_in_baidu_shape_with_status_200() {
        let big = format!("image={}", "A".repeat(MAX_BASE64_BYTES + 4));
        // (name, path, body, error_code, message fragment)
        let cases: Vec<(&str, &str, Vec<u8>, i64, &str)> = vec![
            (
                "other path",
                "/rest/2.0/image-classify/v1/animal",
                b"image=AAAA".to_vec(),
                3,
                "unsupported operation: path `/rest/2.0/image-classify/v1/animal`",
            ),
            (
                "no image",
                PATH,
                b"baike_num=1".to_vec(),
                216_101,
                "not enough param: request body has neither image nor url",
            ),
            (
                "empty image",
                PATH,
                b"image=&baike_num=1".to_vec(),
                216_101,
                "request body has neither image nor url",
            ),
            (
                "url",
                PATH,
                b"url=https%3A%2F%2Fexample.com%2Fa.jpg".to_vec(),
                216_100,
                "url refers to https://example.com/a.jpg; this backend does not fetch",
            ),
            (
                "bad base64",
                PATH,
                b"image=data%3Aimage%2Fjpeg%3Bbase64%2C%2F9j".to_vec(),
                216_201,
                "image format error: image is not valid base64 at image: ",
            ),
            (
                "too large",
                PATH,
                big.into_bytes(),
                216_202,
                "image size error: the image's base64 is 4194308 bytes, over the limit of \
                 4194304 bytes",
            ),
            (
                "bad baike_num",
                PATH,
                b"image=AAAA&baike_num=two".to_vec(),
                216_100,
                "invalid param: baike_num must be a non-negative integer, got \"two\"",
            ),
        ];
        for (name, path, body, code, fragment) in cases {
            let err = Baidu
                .parse_backend_request(path, &HeaderMap::new(), &body)
                .unwrap_err();
            let rendered = crate::protocol::Protocol::Baidu.render_backend_error(&err);
            assert_eq!(rendered.status, StatusCode::OK, "{name}");
            let doc = json_of(&rendered.body);
            assert_eq!(doc["error_code"], code, "{name}");
            let message = doc["error_msg"].as_str().unwrap();
            assert!(message.contains(fragment), "{name}: {message}");
            match Baidu.parse_answer(200, &rendered.body) {
                Err(ProtocolError::Service {
                    status: 200, kind, ..
                }) => {
                    assert_eq!(kind, format!("error_code {code}"), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let undecodable = render_backend_response(
            &Reply::default(),
            vec![Err(ImageProblem::Undecodable("unknown format".to_owned()))],
        );
        assert_eq!(json_of(&undecodable.body)["error_code"], 216_201);
        let internal = render_backend_response(
            &Reply::default(),
            vec![Err(ImageProblem::Internal("tract exploded".to_owned()))],
        );
        let doc = json_of(&internal.body);
        assert_eq!(doc["error_code"], 282_000);
        assert_eq!(doc["error_msg"], "internal error");
    }

    #[test]
    fn extract_finds_image_or_url() {
        let slots = extract_images(&fixture("baidu_request.txt")).unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!((slots[0].index, slots[0].path.as_str()), (0, "image"));
        assert!(slots[0].bytes().unwrap().starts_with(b"\xff\xd8\xff"));

        // `image` wins over `url`; `url` alone is remote; nothing is unusable.
        let both = b"url=https%3A%2F%2Fx%2Fa.jpg&image=%2F9j%2F2Q%3D%3D";
        assert_eq!(
            extract_images(both).unwrap()[0].bytes(),
            Some(&b"\xff\xd8\xff\xd9"[..])
        );
        let url = extract_images(b"url=https%3A%2F%2Fx%2Fa.jpg&baike_num=1").unwrap();
        assert_eq!(
            url[0].image,
            SlotImage::Remote("https://x/a.jpg".to_owned())
        );
        assert_eq!(url[0].path, "url");
        let none = extract_images(b"baike_num=1").unwrap();
        assert_eq!(
            none[0].image,
            SlotImage::Unusable("request body has neither image nor url".to_owned())
        );
        let broken = extract_images(b"image=%25%25%25").unwrap();
        assert!(matches!(&broken[0].image, SlotImage::Unusable(why) if why.contains("base64")));
    }

    #[test]
    fn replace_keeps_other_fields_bytes_and_order() {
        let body = fixture("baidu_request.txt");
        let headers = HeaderMap::new();
        let req = ProxyRequest {
            path_and_query: PATH,
            headers: &headers,
            body: &body,
        };
        let new_image = vec![0xff, 0xd8, 0xff, 0xfe, 0x3e, 0x3f];
        let rewritten = Protocol::Baidu
            .replace_images(&req, &[(0, new_image.clone())])
            .unwrap();
        assert!(rewritten.headers.is_empty());
        let text = String::from_utf8(rewritten.body.clone()).unwrap();
        let original = String::from_utf8(body.clone()).unwrap();
        let before: Vec<&str> = original.split('&').collect();
        let after: Vec<&str> = text.split('&').collect();
        assert_eq!(before.len(), after.len());
        for (a, b) in before.iter().zip(&after) {
            if a.starts_with("image=") {
                assert_eq!(
                    *b,
                    format!("image={}", form_encode(&encode_base64(&new_image)))
                );
            } else {
                assert_eq!(a, b, "other fields keep their bytes");
            }
        }
        let slots = extract_images(&rewritten.body).unwrap();
        assert_eq!(slots[0].bytes(), Some(&new_image[..]));
        // Round trip: extract → replace with the same bytes → extract.
        let same = replace_images(&body, &[(0, slots[0].bytes().unwrap().to_vec())]).unwrap();
        assert_eq!(extract_images(&same).unwrap(), slots);

        assert_eq!(replace_images(&body, &[]).unwrap(), body);
        assert_eq!(
            replace_images(&body, &[(1, b"x".to_vec())]).unwrap_err(),
            ProtocolError::NoSuchSlot { index: 1, count: 1 }
        );
        let url = b"url=https%3A%2F%2Fx%2Fa.jpg";
        let err = replace_images(url, &[(0, b"x".to_vec())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image slot 0 (url) cannot be replaced: it refers to https://x/a.jpg"
        );
    }
}
