//! Every API's errors are rendered here: the local backend's
//! ([`backend_error`], [`super::Protocol::render_throttled`]) and the proxy's own
//! ([`proxy_error`]), so that a client of an API reads every error it gets the same way,
//! whoever made it. Each API's body, content type and kinds come from its adapter
//! ([`super::Api::error_body`], [`super::Api::content_type`], [`super::Api::proxy_kind`],
//! [`super::Emulated::error_kind`]); the shapes, for reference:
//!
//! | API | body | kind |
//! |---|---|---|
//! | Google Vision | `{"error": {"code": HTTP, "message", "status"}}` | `status`: a `google.rpc.Code` name |
//! | Rekognition | `{"__type", "Message"}` + `x-amzn-ErrorType` | `__type` |
//! | Baidu | `{"error_code": N, "error_msg", "log_id"}` | `error_code`, `error_msg` starts with Baidu's text |
//! | Face++ | `{"time_used", "error_message", "request_id"}` | `error_message` is `CODE` or `CODE: detail` |
//! | Azure | `{"error": {"code", "message", "innererror"?: {"code", "message"}}}` | `error.code`, `innererror.code` |
//! | KServe / Triton | `{"error": "message"}` | none |
//! | TorchServe | `{"code": HTTP, "type", "message"}` | `type` |
//!
//! Two tables map errors to each API's kinds, one column per adapter: [`proxy_kind`], from an
//! HTTP status the proxy answers with, and [`super::Emulated::error_kind`], from the
//! [`ErrorClass`] of an error the local backend answers with ([`backend_error`]): a
//! [`super::ProtocolError`] is classified once ([`super::ProtocolError::class`]: the client's,
//! the service's or ours) and every adapter only names its [`ErrorKind`] for each class.

use axum::http::StatusCode;
#[cfg(test)]
use serde_json::json;

use super::{BackendResponse, ErrorClass, Protocol, ProtocolError};

/// An API's own name for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A name: Google's `status`, Rekognition's `__type`, Azure's `error.code`, TorchServe's
    /// `type`, the code Face++ starts `error_message` with. KServe writes none.
    Name(&'a str),
    /// Azure's `error.code` with an `innererror.code` (carrying the same message).
    Nested(&'a str, &'a str),
    /// Baidu's `error_code` and the text Baidu gives it (`error_msg` starts with it).
    Code(i64, &'a str),
}

impl<'a> Kind<'a> {
    /// The kind as a name, whatever its form (Baidu's: its text).
    pub fn name(self) -> &'a str {
        match self {
            Kind::Name(name) | Kind::Nested(name, _) | Kind::Code(_, name) => name,
        }
    }
}

/// One error as an API writes it.
#[derive(Debug, Clone, Copy)]
pub struct ApiError<'a> {
    /// The HTTP status (the backend answers Baidu's errors with 200, as Baidu does).
    pub status: StatusCode,
    pub kind: Kind<'a>,
    /// What went wrong. Face++ and Baidu append it to their code's text (`CODE: message`);
    /// empty, they write the code's text alone.
    pub message: &'a str,
    /// Face++'s `request_id` (else a fresh one in Face++'s own form).
    pub request_id: Option<&'a str>,
}

impl<'a> ApiError<'a> {
    pub fn new(status: StatusCode, kind: Kind<'a>, message: &'a str) -> ApiError<'a> {
        ApiError {
            status,
            kind,
            message,
            request_id: None,
        }
    }
}

impl ApiError<'_> {
    /// `text`, then `: message` when there is a message: how Face++ and Baidu write an
    /// error after their code's text.
    pub fn with_detail(&self, text: &str) -> String {
        if self.message.is_empty() {
            text.to_owned()
        } else {
            format!("{text}: {}", self.message)
        }
    }
}

/// How an API answers one [`ErrorClass`] of the local backend's request-level errors: a row
/// of its table ([`super::Emulated::error_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind {
    /// The HTTP status (Baidu's: 200).
    pub status: StatusCode,
    pub kind: Kind<'static>,
    /// The message the API writes for the whole class in place of the error's own (the
    /// generic text of an internal error, Azure's `Resource not found`, ...); `None` writes
    /// the error's own ([`super::Emulated::error_detail`]).
    pub message: Option<&'static str>,
}

impl ErrorKind {
    /// `kind` at `status`, with the error's own message.
    pub const fn new(status: StatusCode, kind: Kind<'static>) -> ErrorKind {
        ErrorKind {
            status,
            kind,
            message: None,
        }
    }

    /// The API's generic server error: 500, `kind`, and `message` in place of the error's
    /// own (whose detail only the log sees).
    pub const fn server_error(kind: Kind<'static>, message: &'static str) -> ErrorKind {
        ErrorKind::new(StatusCode::INTERNAL_SERVER_ERROR, kind).saying(message)
    }

    /// The same, with `message` in place of the error's own.
    pub const fn saying(self, message: &'static str) -> ErrorKind {
        ErrorKind {
            message: Some(message),
            ..self
        }
    }
}

/// A request-level error of the local backend in `protocol`'s shape
/// ([`super::Protocol::render_backend_error`]): the status, kind and message of the adapter's
/// row for the error's [`ErrorClass`] ([`super::Emulated::error_kind`]). The client's errors
/// are logged at debug, internal ones (whose detail the client does not see) as errors.
pub fn backend_error(protocol: Protocol, err: &ProtocolError) -> BackendResponse {
    let emulated = protocol.emulated();
    let class = err.class();
    let row = emulated.error_kind(class);
    match class {
        ErrorClass::Internal => {
            tracing::error!(%err, api = %protocol, "internal error rendered as the API's server error");
        }
        ErrorClass::Unavailable => tracing::debug!(%err, "request refused"),
        _ => tracing::debug!(%err, kind = row.kind.name(), "request rejected"),
    }
    let detail;
    let message = match row.message {
        Some(message) => message,
        None => {
            detail = emulated.error_detail(err);
            &detail
        }
    };
    render(protocol, &ApiError::new(row.status, row.kind, message))
}

/// The content type each API answers JSON with ([`super::Api::content_type`]).
pub fn content_type(protocol: Protocol) -> &'static str {
    protocol.api().content_type()
}

/// `err` in `protocol`'s error shape (see the module doc): the body and headers of
/// [`super::Api::error_body`], the status and the API's content type.
pub fn render(protocol: Protocol, err: &ApiError<'_>) -> BackendResponse {
    let api = protocol.api();
    let (body, extra) = api.error_body(err);
    BackendResponse::json(err.status, api.content_type(), extra, &body)
}

/// The table: which kind each API gives an error the proxy answers with `status` itself
/// ([`super::Api::proxy_kind`]). Statuses the proxy never makes fall back to the API's
/// generic server error.
pub fn proxy_kind(protocol: Protocol, status: StatusCode) -> Kind<'static> {
    protocol.api().proxy_kind(status)
}

/// An error the proxy answers itself, in `protocol`'s shape: the status kept, the kind from
/// [`proxy_kind`], the message as the proxy words it; Face++'s `request_id` is the proxy's
/// request id.
pub fn proxy_error(
    protocol: Protocol,
    status: StatusCode,
    message: &str,
    request_id: &str,
) -> BackendResponse {
    render(
        protocol,
        &ApiError {
            status,
            kind: proxy_kind(protocol, status),
            message,
            request_id: Some(request_id),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json_of;

    /// Every API, every status the proxy makes: the API's own field names, the status kept,
    /// the message whole.
    #[test]
    fn proxy_errors_have_each_apis_field_names() {
        let statuses = [400, 403, 404, 405, 408, 413, 502, 503, 504];
        for protocol in Protocol::ALL {
            for s in statuses {
                let status = StatusCode::from_u16(s).expect("status");
                let r = proxy_error(protocol, status, "limit = 7", "rid-1");
                assert_eq!(r.status, status, "{protocol} {s}");
                let doc = json_of(&r.body);
                let ok = match protocol {
                    Protocol::GoogleVision => {
                        doc["error"]["code"] == s
                            && doc["error"]["message"] == "limit = 7"
                            && doc["error"]["status"].as_str().is_some_and(|k| {
                                k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                            })
                    }
                    Protocol::Rekognition => {
                        doc["Message"] == "limit = 7"
                            && r.headers
                                .iter()
                                .any(|(n, v)| n == "x-amzn-ErrorType" && doc["__type"] == *v)
                    }
                    Protocol::Baidu => {
                        doc["error_code"].as_i64().is_some_and(|c| c > 0)
                            && doc["error_msg"]
                                .as_str()
                                .is_some_and(|m| m.ends_with(": limit = 7"))
                            && doc["log_id"].is_u64()
                    }
                    Protocol::FacePlusPlus => {
                        doc["error_message"]
                            .as_str()
                            .is_some_and(|m| m.ends_with(": limit = 7"))
                            && doc["request_id"] == "rid-1"
                            && doc["time_used"] == 0
                    }
                    Protocol::Azure => {
                        doc["error"]["message"] == "limit = 7"
                            && doc["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                    }
                    Protocol::KServe => doc == json!({"error": "limit = 7"}),
                    Protocol::TorchServe => {
                        doc["code"] == s
                            && doc["message"] == "limit = 7"
                            && doc["type"]
                                .as_str()
                                .is_some_and(|t| t.ends_with("Exception"))
                    }
                };
                assert!(ok, "{protocol} {s}: {doc}");
            }
        }
    }

    #[test]
    fn the_table_follows_each_apis_conventions() {
        let k = |p, s: u16| proxy_kind(p, StatusCode::from_u16(s).expect("status"));
        assert_eq!(k(Protocol::GoogleVision, 502), Kind::Name("UNAVAILABLE"));
        assert_eq!(
            k(Protocol::GoogleVision, 504),
            Kind::Name("DEADLINE_EXCEEDED")
        );
        assert_eq!(
            k(Protocol::GoogleVision, 413),
            Kind::Name("INVALID_ARGUMENT")
        );
        assert_eq!(
            k(Protocol::Baidu, 503),
            Kind::Code(18, "Open api qps request limit reached")
        );
        assert_eq!(
            k(Protocol::FacePlusPlus, 503),
            Kind::Name("CONCURRENCY_LIMIT_EXCEEDED")
        );
        assert_eq!(k(Protocol::Azure, 404), Kind::Name("404"));
        assert_eq!(
            k(Protocol::TorchServe, 413),
            Kind::Name("RequestEntityTooLargeException")
        );
    }
}

/// Every request-level error the local backend renders, for every API, against
/// `tests/fixtures/protocol/backend_errors.txt`: status, headers and body byte for byte (the
/// random Baidu `log_id` and Face++ `request_id` replaced by placeholders). Regenerate the
/// file with `BLESS_BACKEND_ERRORS=1 cargo test --lib every_backend_error` after a change
/// meant to alter the wire.
#[cfg(test)]
mod backend_errors {
    use super::*;

    /// One error of every variant, with the paths Azure tells apart.
    fn samples() -> Vec<(&'static str, ProtocolError)> {
        let invalid = |path: &str| ProtocolError::InvalidValue {
            path: path.to_owned(),
            expected: "a number",
            got: "\"x\"".to_owned(),
        };
        vec![
            (
                "UnknownProtocol",
                ProtocolError::UnknownProtocol {
                    name: "ftp".to_owned(),
                },
            ),
            (
                "NotJson",
                ProtocolError::NotJson {
                    what: "request body",
                    detail: "EOF at line 1".to_owned(),
                },
            ),
            (
                "Malformed",
                ProtocolError::Malformed {
                    what: "request body",
                    format: "multipart/form-data",
                    detail: "no boundary".to_owned(),
                },
            ),
            (
                "TooComplex",
                ProtocolError::TooComplex {
                    what: "request body",
                    unit: "JSON values",
                    count: 11,
                    limit: 10,
                },
            ),
            (
                "MissingField",
                ProtocolError::MissingField {
                    path: "requests".to_owned(),
                },
            ),
            ("InvalidValue", invalid("MaxLabels")),
            ("InvalidValue/Content-Type", invalid("Content-Type header")),
            ("InvalidValue/features", invalid("features query parameter")),
            (
                "NoImage",
                ProtocolError::NoImage {
                    path: "requests[0].image".to_owned(),
                    fields: "content nor source",
                },
            ),
            (
                "InvalidBase64",
                ProtocolError::InvalidBase64 {
                    path: "image".to_owned(),
                    detail: "invalid byte 33".to_owned(),
                },
            ),
            (
                "RemoteImage",
                ProtocolError::RemoteImage {
                    path: "url".to_owned(),
                    reference: "http://example.com/a.jpg".to_owned(),
                },
            ),
            (
                "ImageTooLarge",
                ProtocolError::ImageTooLarge {
                    limit: 100,
                    actual: 101,
                },
            ),
            (
                "TooManyImages",
                ProtocolError::TooManyImages {
                    limit: 16,
                    actual: 17,
                },
            ),
            (
                "UnsupportedOperation",
                ProtocolError::UnsupportedOperation {
                    found: "path `/x`".to_owned(),
                    expected: "/y",
                },
            ),
            (
                "Unavailable",
                ProtocolError::Unavailable {
                    reason: "no face detector loaded".to_owned(),
                },
            ),
            (
                "Service",
                ProtocolError::Service {
                    status: 400,
                    kind: "BAD".to_owned(),
                    message: "secret".to_owned(),
                },
            ),
            (
                "Upstream",
                ProtocolError::Upstream {
                    status: 502,
                    excerpt: "secret".to_owned(),
                },
            ),
            (
                "ImageError",
                ProtocolError::ImageError {
                    path: "responses[0]".to_owned(),
                    code: 3,
                    message: "secret".to_owned(),
                },
            ),
            (
                "UnexpectedAnswer",
                ProtocolError::UnexpectedAnswer {
                    detail: "secret".to_owned(),
                },
            ),
            (
                "NoSuchSlot",
                ProtocolError::NoSuchSlot { index: 3, count: 1 },
            ),
            (
                "NotReplaceable",
                ProtocolError::NotReplaceable {
                    index: 0,
                    path: "url".to_owned(),
                    reason: "a URL".to_owned(),
                },
            ),
        ]
    }

    /// One line per error: protocol, sample, status, headers, body with its random ids
    /// replaced.
    fn rendered() -> String {
        let mut out = String::new();
        for protocol in Protocol::ALL {
            for (name, err) in samples() {
                let r = protocol.render_backend_error(&err);
                let mut body = String::from_utf8(r.body).expect("a UTF-8 body");
                let doc: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
                if let Some(id) = doc.get("log_id").and_then(serde_json::Value::as_u64) {
                    body = body.replace(&format!(":{id}"), ":LOG_ID");
                }
                if let Some(id) = doc.get("request_id").and_then(serde_json::Value::as_str) {
                    body = body.replace(id, "REQUEST_ID");
                }
                let headers: Vec<String> =
                    r.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
                out.push_str(&format!(
                    "{protocol} {name}: {} [{}] {body}\n",
                    r.status.as_u16(),
                    headers.join("; ")
                ));
            }
        }
        out
    }

    #[test]
    fn every_backend_error_renders_as_before() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/protocol/backend_errors.txt");
        let got = rendered();
        if std::env::var_os("BLESS_BACKEND_ERRORS").is_some() {
            std::fs::write(&path, &got).expect("write backend_errors.txt");
        }
        let want = std::fs::read_to_string(&path).expect("backend_errors.txt");
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "line {}", i + 1);
        }
        assert_eq!(got.lines().count(), want.lines().count());
    }
}
