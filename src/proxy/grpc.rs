//! gRPC through the proxy (issue 9 item 3): the same APIs as their HTTP/JSON routes, carried
//! as protobuf messages over HTTP/2. This file is the transport only; what is per API (the
//! methods it serves, the images in its messages, its answers) is its [`GrpcApi`]
//! ([`Api::grpc`](crate::protocol::Api::grpc)): today Google Vision's
//! `ImageAnnotator/BatchAnnotateImages` ([`crate::protocol::google::grpc`]) and KServe v2's
//! `GRPCInferenceService/ModelInfer` ([`crate::protocol::kserve::grpc`]).
//!
//! A gRPC request is recognised by its `content-type` (`application/grpc…`) and its path
//! (`/package.Service/Method`), which the APIs' [`GrpcApi::method`] claim: the method an
//! API compresses is compressed like its REST route; its other methods (health, metadata,
//! Vision's file methods) go to that API's upstream untouched; a service no API claims gets
//! `UNIMPLEMENTED`.
//!
//! The image bytes are rewritten **on the wire** (`protocol::protobuf`): the
//! message is walked field by field and every byte that is not an image is copied as it
//! came, so fields the proxy does not know (newer API versions, extensions) survive; only
//! the enclosing lengths are re-encoded.
//!
//! One uncompressed message per request (unary calls); anything else (a compressed
//! message, a stream of several) goes up as sent.
//!
//! Upstream, gRPC needs HTTP/2 (prior knowledge for `http://`, ALPN for `https://`), and
//! its status comes in trailers, which come back to the client unchanged. Errors the proxy
//! makes itself are gRPC statuses in a trailers-only answer (HTTP 200, `grpc-status`,
//! `grpc-message`), never an HTTP error a gRPC client cannot read.
//!
//! The APIs' gRPC answers are read like their REST answers ([`parse_answers`]: Vision's
//! label annotations, KServe's `labels`/`scores` outputs), so the live pair audits gRPC
//! traffic and watches its answers' margins as it does REST traffic.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::compress::ImageWire;
use crate::protocol::protobuf::{bad, unexpected};
use crate::protocol::{
    Answer, GrpcApi, ImageSlot, Protocol, ProtocolError, ProxyRequest, Rewritten,
};

/// Whether headers start a gRPC call (`application/grpc`, `+proto`, `;…`).
pub use crate::backend::grpc::is_grpc;
/// Google Vision's image annotation method (the backend serves the same path).
pub use crate::protocol::google::grpc::ANNOTATE as GOOGLE_ANNOTATE;

/// A gRPC request the proxy recognised: the API it belongs to, and whether it is the
/// method whose images the proxy compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCall {
    pub api: Protocol,
    pub compress: bool,
}

/// The API of a gRPC call by its path (the API whose [`GrpcApi::method`] claims it);
/// `None`: a service the proxy does not know.
pub fn recognize(method: &Method, path: &str) -> Option<GrpcCall> {
    if *method != Method::POST {
        return None;
    }
    let path = path.split('?').next().unwrap_or_default();
    Protocol::ALL.into_iter().find_map(|api| {
        let compress = api.api().grpc()?.method(path)?;
        Some(GrpcCall { api, compress })
    })
}

/// The images of a gRPC call's message, as [`ImageWire`]: the API's [`GrpcApi`] reads and
/// rewrites the one message of the call.
#[derive(Debug, Clone, Copy)]
pub struct GrpcWire(pub Protocol);

impl GrpcWire {
    /// The API's gRPC form, or the error for an API without one ([`recognize`] never
    /// names such an API).
    fn form(&self) -> Result<&'static dyn GrpcApi, ProtocolError> {
        self.0.api().grpc().ok_or_else(|| {
            bad(&format!(
                "the proxy reads no gRPC images of {}",
                self.0.name()
            ))
        })
    }
}

impl ImageWire for GrpcWire {
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        let msg = unframe(req.body)?;
        self.form()?.extract_images(msg)
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        let msg = unframe(req.body)?;
        let out = self.form()?.replace_images(msg, replacements)?;
        Ok(Rewritten::body(frame(&out)))
    }

    fn max_image_bytes(&self) -> Option<usize> {
        self.0.max_image_bytes()
    }

    fn max_images(&self) -> Option<usize> {
        self.0.max_images()
    }
}

/// Whether [`parse_answers`] reads this API's gRPC answers (so its calls can be audited):
/// whether it has a gRPC form.
pub fn reads_answers(api: Protocol) -> bool {
    api.api().grpc().is_some()
}

/// The answers of a gRPC call, per image, like [`Protocol::parse_answers`] for its REST
/// route: a non-OK `grpc-status` is an error about the whole call; Vision's per-image
/// `error` is that image's error. `None`: the API's answers are not read.
pub fn parse_answers(
    api: Protocol,
    headers: &HeaderMap,
    body: &[u8],
    trailers: Option<&HeaderMap>,
) -> Option<Result<Vec<Result<Answer, ProtocolError>>, ProtocolError>> {
    let form = api.api().grpc()?;
    Some(ok_message(headers, body, trailers).and_then(|msg| form.parse_answers(msg)))
}

/// The answer's one message, once its `grpc-status` (trailers, or the headers of a
/// trailers-only answer) says OK.
fn ok_message<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    trailers: Option<&HeaderMap>,
) -> Result<&'a [u8], ProtocolError> {
    let field = |name: &str| {
        trailers
            .and_then(|t| t.get(name))
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    match field("grpc-status").and_then(|v| v.parse::<u32>().ok()) {
        Some(0) => unframe(body).map_err(|e| unexpected(e.to_string())),
        code => Err(ProtocolError::Service {
            status: 200,
            kind: format!(
                "grpc-status {}",
                code.map_or("missing".into(), |c| c.to_string())
            ),
            message: field("grpc-message").unwrap_or_default().to_owned(),
        }),
    }
}

pub use crate::backend::grpc::Code as GrpcCode;

/// The gRPC status for an HTTP status the proxy would have answered with (gRPC's own
/// HTTP-to-status mapping, with the proxy's timeouts as `DEADLINE_EXCEEDED`).
pub fn code_for_http(status: StatusCode) -> GrpcCode {
    match status.as_u16() {
        400 | 413 | 431 => GrpcCode::InvalidArgument,
        401 | 403 => GrpcCode::Unauthenticated,
        404 | 405 => GrpcCode::Unimplemented,
        408 | 504 => GrpcCode::DeadlineExceeded,
        429 => GrpcCode::ResourceExhausted,
        502 | 503 => GrpcCode::Unavailable,
        _ => GrpcCode::Internal,
    }
}

/// A trailers-only gRPC answer: HTTP 200 whose headers carry the status and message
/// (percent-encoded as gRPC requires), plus the proxy's error reason.
pub fn status_answer(code: GrpcCode, message: &str, reason: &str, request_id: &str) -> Response {
    use axum::response::IntoResponse;
    let mut resp = crate::backend::grpc::Status::new(code, message).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(reason) {
        h.insert(super::ERROR_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(super::REQUEST_ID_HEADER, v);
    }
    resp
}

/// A body with trailers after its data (what a gRPC answer is).
pub fn body_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    use http_body_util::{BodyExt, Full};
    Body::new(Full::new(data).with_trailers(async move { trailers.map(Ok) }))
}

// ------------------------------------------------------------------ framing

/// The one uncompressed message of a unary gRPC body (5-byte prefix: flag, length).
fn unframe(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let (head, rest) = body
        .split_at_checked(5)
        .ok_or_else(|| bad("shorter than its 5-byte prefix"))?;
    if head[0] != 0 {
        return Err(bad("compressed message (grpc-encoding)"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(bad("not exactly one message"));
    }
    Ok(rest)
}

/// `msg` as a gRPC body: flag 0 (uncompressed) and its length.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The APIs with a gRPC form.
    fn grpc_apis() -> Vec<Protocol> {
        Protocol::ALL
            .into_iter()
            .filter(|&p| reads_answers(p))
            .collect()
    }

    fn view(body: &[u8]) -> ProxyRequest<'_> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        ProxyRequest {
            path_and_query: GOOGLE_ANNOTATE,
            headers: EMPTY.get_or_init(HeaderMap::new),
            body,
        }
    }

    #[test]
    fn bodies_that_are_not_one_uncompressed_message_are_errors() {
        assert_eq!(
            grpc_apis().iter().map(|p| p.name()).collect::<Vec<_>>(),
            ["google", "kserve"]
        );
        for api in grpc_apis() {
            let wire = GrpcWire(api);
            for body in [
                vec![],
                vec![0, 0, 0, 0],
                vec![1, 0, 0, 0, 1, 0],    // compressed
                vec![0, 0, 0, 0, 9, 1, 2], // length mismatch
            ] {
                assert!(wire.extract_images(&view(&body)).is_err(), "{api} {body:?}");
                assert!(
                    wire.replace_images(&view(&body), &[(0, b"x".to_vec())])
                        .is_err(),
                    "{api} {body:?}"
                );
            }
            // An empty message has no images, and goes back framed as it came.
            let empty = frame(&[]);
            assert!(wire.extract_images(&view(&empty)).unwrap().is_empty());
            assert_eq!(wire.replace_images(&view(&empty), &[]).unwrap().body, empty);
        }
        // An API without a gRPC form reads no gRPC messages.
        for api in Protocol::ALL.into_iter().filter(|&p| !reads_answers(p)) {
            assert!(GrpcWire(api).extract_images(&view(&frame(&[]))).is_err());
            assert!(parse_answers(api, &HeaderMap::new(), &[], None).is_none());
        }
    }

    #[test]
    fn grpc_calls_are_recognised_by_content_type_and_path() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        assert!(is_grpc(&h));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(!is_grpc(&h));
        let post = Method::POST;
        let named = |path: &str| recognize(&post, path).map(|c| (c.api.name(), c.compress));
        assert_eq!(named(GOOGLE_ANNOTATE), Some(("google", true)));
        assert_eq!(
            named(&format!("{GOOGLE_ANNOTATE}?alt=x")),
            Some(("google", true))
        );
        assert_eq!(
            named("/google.cloud.vision.v1.ImageAnnotator/AsyncBatchAnnotateFiles"),
            Some(("google", false))
        );
        assert_eq!(
            named("/inference.GRPCInferenceService/ModelInfer"),
            Some(("kserve", true))
        );
        assert_eq!(
            named("/inference.GRPCInferenceService/ServerLive"),
            Some(("kserve", false))
        );
        assert_eq!(named("/inference.GRPCInferenceServiceX/ModelInfer"), None);
        assert_eq!(named("/grpc.health.v1.Health/Check"), None);
        assert_eq!(recognize(&Method::GET, GOOGLE_ANNOTATE), None);
        assert_eq!(
            crate::backend::grpc::percent_encode("naïve 100%"),
            "na%C3%AFve 100%25"
        );
    }
}
