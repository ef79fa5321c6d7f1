//! Every API's error shape, in one place: the local backend's errors
//! ([`super::Protocol::render_backend_error`], [`super::Protocol::render_throttled`]) and the
//! proxy's own ([`proxy_error`]) are written here, so that a client of an API reads every
//! error it gets the same way, whoever made it.
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
//! [`proxy_kind`] is the one table from an HTTP status the proxy answers with to each API's
//! kind.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::json;

use super::{BackendResponse, Protocol};

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

/// The content type each API answers JSON with.
pub fn content_type(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::GoogleVision => super::google::CONTENT_TYPE,
        Protocol::Rekognition => super::rekognition::CONTENT_TYPE,
        Protocol::Baidu => super::baidu::CONTENT_TYPE,
        Protocol::FacePlusPlus => super::facepp::CONTENT_TYPE,
        Protocol::Azure => super::azure::CONTENT_TYPE,
        Protocol::KServe => super::kserve::JSON_CONTENT_TYPE,
        Protocol::TorchServe => super::torchserve::CONTENT_TYPE,
    }
}

/// `err` in `protocol`'s error shape (see the module doc).
pub fn render(protocol: Protocol, err: &ApiError<'_>) -> BackendResponse {
    let ApiError {
        status,
        kind,
        message,
        request_id,
    } = *err;
    let with_detail = |text: &str| {
        if message.is_empty() {
            text.to_owned()
        } else {
            format!("{text}: {message}")
        }
    };
    let mut extra = Vec::new();
    let body = match protocol {
        Protocol::GoogleVision => json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "status": kind.name(),
        }}),
        Protocol::Rekognition => {
            extra.push(("x-amzn-ErrorType".to_owned(), kind.name().to_owned()));
            json!({"__type": kind.name(), "Message": message})
        }
        Protocol::Baidu => {
            let (code, text) = match kind {
                Kind::Code(code, text) => (code, text),
                other => (BAIDU_INTERNAL.0, other.name()),
            };
            json!({"error_code": code, "error_msg": with_detail(text), "log_id": fresh_log_id()})
        }
        Protocol::FacePlusPlus => json!({
            "time_used": 0,
            "error_message": with_detail(kind.name()),
            "request_id": request_id.map_or_else(facepp_request_id, str::to_owned),
        }),
        Protocol::Azure => {
            let mut error = json!({"code": kind.name(), "message": message});
            if let Kind::Nested(_, inner) = kind {
                error["innererror"] = json!({"code": inner, "message": message});
            }
            json!({ "error": error })
        }
        Protocol::KServe => json!({ "error": message }),
        Protocol::TorchServe => json!({
            "code": status.as_u16(),
            "type": kind.name(),
            "message": message,
        }),
    };
    BackendResponse::json(status, content_type(protocol), extra, &body)
}

/// Baidu's `internal error`, for a kind Baidu has no code for.
const BAIDU_INTERNAL: (i64, &str) = (282_000, "internal error");

/// The table: which kind each API gives an error the proxy answers with `status` itself.
/// Statuses the proxy never makes fall back to the API's generic server error.
pub fn proxy_kind(protocol: Protocol, status: StatusCode) -> Kind<'static> {
    let s = status.as_u16();
    match protocol {
        // google.rpc.Code, by its documented HTTP mapping.
        Protocol::GoogleVision => Kind::Name(match s {
            400 | 413 => "INVALID_ARGUMENT",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 => "UNIMPLEMENTED",
            429 => "RESOURCE_EXHAUSTED",
            502 | 503 => "UNAVAILABLE",
            408 | 504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        }),
        Protocol::Rekognition => Kind::Name(match s {
            400 | 408 => "InvalidParameterException",
            403 => "AccessDeniedException",
            404 | 405 => "UnknownOperationException",
            413 => "ImageTooLargeException",
            429 => "ThrottlingException",
            502..=504 => "ServiceUnavailableException",
            _ => "InternalServerError",
        }),
        Protocol::Baidu => {
            let (code, text) = match s {
                400 | 408 => (216_100, "invalid param"),
                403 => (6, "No permission to access data"),
                404 | 405 => (3, "Unsupported openapi method"),
                413 => (216_202, "image size error"),
                429 | 503 => (18, "Open api qps request limit reached"),
                502 | 504 => (2, "Service temporarily unavailable"),
                _ => BAIDU_INTERNAL,
            };
            Kind::Code(code, text)
        }
        Protocol::FacePlusPlus => Kind::Name(match s {
            400 | 408 => "BAD_ARGUMENTS",
            403 => "AUTHORIZATION_ERROR",
            404 | 405 => "API_NOT_FOUND",
            413 => "Request Entity Too Large",
            429 | 503 => "CONCURRENCY_LIMIT_EXCEEDED",
            _ => "INTERNAL_ERROR",
        }),
        Protocol::Azure => match s {
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
        },
        Protocol::KServe => Kind::Name(""),
        Protocol::TorchServe => Kind::Name(match s {
            400 | 408 => "BadRequestException",
            403 => "InvalidKeyException",
            404 => "ResourceNotFoundException",
            405 => "MethodNotAllowedException",
            413 => "RequestEntityTooLargeException",
            429 | 502..=504 => "ServiceUnavailableException",
            _ => "InternalServerException",
        }),
    }
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

/// A random Baidu `log_id` below 2^53, so that JavaScript clients read it exactly.
pub(crate) fn fresh_log_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 11
}

/// A request id as Face++ writes them: `unix seconds,uuid`.
pub(crate) fn facepp_request_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{seconds},{}", uuid::Uuid::new_v4().hyphenated())
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
