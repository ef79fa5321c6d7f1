//! gRPC through the proxy (issue 9 item 3): the same APIs as their HTTP/JSON routes, carried
//! as protobuf messages over HTTP/2.
//!
//! A gRPC request is recognised by its `content-type` (`application/grpc…`) and its path
//! (`/package.Service/Method`). Google Vision's `ImageAnnotator/BatchAnnotateImages` is
//! compressed like `images:annotate`; the API's other methods (and KServe's
//! `GRPCInferenceService`) go to that API's upstream untouched; a service the proxy does not
//! know gets `UNIMPLEMENTED`.
//!
//! The image bytes are rewritten **on the wire**: the message is walked field by field and
//! every byte that is not an image's `content` is copied as it came, so fields the proxy
//! does not know (newer API versions, extensions) survive. Only `content` (field 1 of
//! `Image`, field 1 of `AnnotateImageRequest`, field 1 of `BatchAnnotateImagesRequest`) is
//! replaced; the enclosing lengths are re-encoded. One uncompressed message per request
//! (unary calls); anything else (a compressed message, a stream of several) goes up as
//! sent.
//!
//! Upstream, gRPC needs HTTP/2 (prior knowledge for `http://`, ALPN for `https://`), and
//! its status comes in trailers, which come back to the client unchanged. Errors the proxy
//! makes itself are gRPC statuses in a trailers-only answer (HTTP 200, `grpc-status`,
//! `grpc-message`), never an HTTP error a gRPC client cannot read.
//!
//! Vision's gRPC answers are read like its REST answers ([`parse_answers`]), so the live
//! pair audits gRPC traffic and watches its answers' margins as it does REST traffic.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::compress::ImageWire;
use crate::protocol::{
    Answer, ImageSlot, Label, Protocol, ProtocolError, ProxyRequest, Rewritten, SlotImage,
};

/// Google Vision's image annotation method (the backend serves the same path).
pub use crate::backend::grpc::VISION_BATCH_ANNOTATE as GOOGLE_ANNOTATE;
/// Whether headers start a gRPC call (`application/grpc`, `+proto`, `;…`).
pub use crate::backend::grpc::is_grpc;

/// A gRPC request the proxy recognised: the API it belongs to, and whether it is the
/// method whose images the proxy compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCall {
    pub api: Protocol,
    pub compress: bool,
}

/// The API of a gRPC call by its path; `None`: a service the proxy does not know.
pub fn recognize(method: &Method, path: &str) -> Option<GrpcCall> {
    if *method != Method::POST {
        return None;
    }
    let path = path.split('?').next().unwrap_or_default();
    if path == GOOGLE_ANNOTATE {
        return Some(GrpcCall {
            api: Protocol::GoogleVision,
            compress: true,
        });
    }
    if path.starts_with("/google.cloud.vision.") {
        return Some(GrpcCall {
            api: Protocol::GoogleVision,
            compress: false,
        });
    }
    if path
        .strip_prefix(crate::backend::grpc::KSERVE_SERVICE)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return Some(GrpcCall {
            api: Protocol::KServe,
            compress: false,
        });
    }
    None
}

/// The images of a gRPC call's message, as [`ImageWire`] (Google Vision only for now).
#[derive(Debug, Clone, Copy)]
pub struct GrpcWire(pub Protocol);

impl ImageWire for GrpcWire {
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        let msg = unframe(req.body)?;
        let mut slots = Vec::new();
        for (index, request) in fields(msg)?
            .into_iter()
            .filter(|f| f.number == 1 && f.wire == LEN)
            .enumerate()
        {
            let image = fields(request.value(msg))?
                .into_iter()
                .find(|f| f.number == 1 && f.wire == LEN);
            let Some(image) = image else {
                slots.push(ImageSlot {
                    index,
                    path: format!("requests[{index}].image"),
                    image: SlotImage::Unusable("no image".into()),
                });
                continue;
            };
            let inner = image.value(request.value(msg));
            let parts = fields(inner)?;
            let content = parts.iter().find(|f| f.number == 1 && f.wire == LEN);
            let source = parts.iter().any(|f| f.number == 2 && f.wire == LEN);
            slots.push(ImageSlot {
                index,
                path: format!("requests[{index}].image"),
                image: match content {
                    Some(c) if !c.value(inner).is_empty() => {
                        SlotImage::Inline(c.value(inner).to_vec())
                    }
                    _ if source => SlotImage::Remote("image.source".into()),
                    _ => SlotImage::Unusable("no image content".into()),
                },
            });
        }
        Ok(slots)
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        let msg = unframe(req.body)?;
        let mut out = Vec::with_capacity(msg.len());
        let mut index = 0;
        for f in fields(msg)? {
            if f.number == 1 && f.wire == LEN {
                match replacements.iter().find(|(i, _)| *i == index) {
                    Some((_, bytes)) => {
                        let request = rewrite(f.value(msg), 1, &|image| {
                            rewrite(image, 1, &|_| Ok(bytes.clone()))
                        })?;
                        put_len_field(&mut out, 1, &request);
                    }
                    None => out.extend_from_slice(f.raw(msg)),
                }
                index += 1;
            } else {
                out.extend_from_slice(f.raw(msg));
            }
        }
        Ok(Rewritten::body(frame(&out)))
    }

    fn max_image_bytes(&self) -> Option<usize> {
        self.0.max_image_bytes()
    }

    fn max_images(&self) -> Option<usize> {
        self.0.max_images()
    }
}

/// Whether [`parse_answers`] reads this API's gRPC answers (so its calls can be audited).
pub fn reads_answers(api: Protocol) -> bool {
    api == Protocol::GoogleVision
}

/// The answers of a gRPC call, per image, like [`Protocol::parse_answers`] for its REST
/// route: a non-OK `grpc-status` is an error about the whole call; Vision's per-image
/// `error` is that image's error. `None`: the API's answers are not read yet (KServe).
pub fn parse_answers(
    api: Protocol,
    headers: &HeaderMap,
    body: &[u8],
    trailers: Option<&HeaderMap>,
) -> Option<Result<Vec<Result<Answer, ProtocolError>>, ProtocolError>> {
    if !reads_answers(api) {
        return None;
    }
    Some(parse_vision(headers, body, trailers))
}

fn parse_vision(
    headers: &HeaderMap,
    body: &[u8],
    trailers: Option<&HeaderMap>,
) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
    use prost::Message;
    let status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match status {
        Some(0) => {}
        code => {
            return Err(ProtocolError::Service {
                status: 200,
                kind: format!(
                    "grpc-status {}",
                    code.map_or("missing".into(), |c| c.to_string())
                ),
                message: trailers
                    .and_then(|t| t.get("grpc-message"))
                    .or_else(|| headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    let unexpected = |detail: String| ProtocolError::UnexpectedAnswer { detail };
    let msg = unframe(body).map_err(|e| unexpected(e.to_string()))?;
    let answer = crate::backend::grpc::vision::BatchAnnotateImagesResponse::decode(msg)
        .map_err(|e| unexpected(format!("BatchAnnotateImagesResponse: {e}")))?;
    Ok(answer
        .responses
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r.error {
            Some(e) if e.code != 0 => Err(ProtocolError::ImageError {
                path: format!("responses[{i}]"),
                code: i64::from(e.code),
                message: e.message,
            }),
            _ => Ok(Answer::new(
                r.label_annotations
                    .into_iter()
                    .map(|l| Label {
                        name: l.description,
                        score: l.score,
                    })
                    .collect(),
            )),
        })
        .collect())
}

/// gRPC status codes the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The gRPC status for an HTTP status the proxy would have answered with (gRPC's own
    /// HTTP-to-status mapping, with the proxy's timeouts as `DEADLINE_EXCEEDED`).
    pub fn from_http(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            400 | 413 | 431 => GrpcCode::InvalidArgument,
            401 | 403 => GrpcCode::Unauthenticated,
            404 => GrpcCode::Unimplemented,
            405 => GrpcCode::Unimplemented,
            408 | 504 => GrpcCode::DeadlineExceeded,
            429 => GrpcCode::ResourceExhausted,
            502 | 503 => GrpcCode::Unavailable,
            _ => GrpcCode::Internal,
        }
    }
}

/// A trailers-only gRPC answer: HTTP 200 whose headers carry the status and message
/// (percent-encoded as gRPC requires), plus the proxy's error reason.
pub fn status_answer(code: GrpcCode, message: &str, reason: &str, request_id: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code as u32));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    if let Ok(v) = HeaderValue::from_str(reason) {
        h.insert(super::ERROR_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(super::REQUEST_ID_HEADER, v);
    }
    resp
}

/// gRPC's percent-encoding of `grpc-message`: visible ASCII but `%` as is, the rest `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A body with trailers after its data (what a gRPC answer is).
pub fn body_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    Body::new(DataThenTrailers {
        data: (!data.is_empty()).then_some(data),
        trailers,
    })
}

/// [`body_with_trailers`]'s body: one data frame, then the trailers.
struct DataThenTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for DataThenTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(d) => Some(http_body::Frame::data(d)),
            None => self.trailers.take().map(http_body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

// ------------------------------------------------------------------ the wire format

/// Wire type of length-delimited fields (bytes, strings, messages).
const LEN: u8 = 2;

/// One field of a protobuf message, as byte ranges of the message.
#[derive(Debug, Clone, Copy)]
struct Field {
    number: u32,
    wire: u8,
    /// The whole field (tag, length and value).
    start: usize,
    end: usize,
    /// The value (for `LEN` fields, without the length).
    value_start: usize,
}

impl Field {
    fn raw<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.start..self.end]
    }
    fn value<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.value_start..self.end]
    }
}

fn bad(why: &str) -> ProtocolError {
    ProtocolError::Malformed {
        what: "request body",
        format: "a gRPC protobuf message",
        detail: why.to_owned(),
    }
}

/// Most fields read in one message (a bound on work for hostile input).
const MAX_FIELDS: usize = 100_000;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtocolError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

/// The top-level fields of `msg`, in order.
fn fields(msg: &[u8]) -> Result<Vec<Field>, ProtocolError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        if out.len() >= MAX_FIELDS {
            return Err(ProtocolError::TooComplex {
                what: "request body",
                unit: "protobuf fields",
                count: out.len(),
                limit: MAX_FIELDS,
            });
        }
        let start = pos;
        let tag = varint(msg, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| bad("field number too large"))?;
        let wire = (tag & 7) as u8;
        if number == 0 {
            return Err(bad("field number 0"));
        }
        match wire {
            0 => {
                varint(msg, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            LEN => {
                let len =
                    usize::try_from(varint(msg, &mut pos)?).map_err(|_| bad("length too large"))?;
                let value_start = pos;
                pos = pos
                    .checked_add(len)
                    .ok_or_else(|| bad("length too large"))?;
                if pos > msg.len() {
                    return Err(bad("field runs past the message"));
                }
                out.push(Field {
                    number,
                    wire,
                    start,
                    end: pos,
                    value_start,
                });
                continue;
            }
            _ => return Err(bad("unsupported wire type (groups)")),
        }
        if pos > msg.len() {
            return Err(bad("field runs past the message"));
        }
        out.push(Field {
            number,
            wire,
            start,
            end: pos,
            value_start: start,
        });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A field's new value from its old one.
type Rewriter<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, ProtocolError> + 'a;

/// `msg` with its first `number` field (a message or bytes) replaced by `f(old value)`;
/// every other byte copied as it came. A message without the field is returned unchanged.
fn rewrite(msg: &[u8], number: u32, f: &Rewriter<'_>) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(msg.len());
    let mut done = false;
    for field in fields(msg)? {
        if !done && field.number == number && field.wire == LEN {
            put_len_field(&mut out, number, &f(field.value(msg))?);
            done = true;
        } else {
            out.extend_from_slice(field.raw(msg));
        }
    }
    Ok(out)
}

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

    /// A BatchAnnotateImagesRequest: two requests (one inline image with a feature and an
    /// unknown field, one by URI), plus a top-level field the proxy does not know.
    fn request(content: &[u8]) -> Vec<u8> {
        let mut image = Vec::new();
        put_len_field(&mut image, 1, content);
        let mut feature = Vec::new();
        put_varint(&mut feature, 1 << 3); // type
        put_varint(&mut feature, 4); // LABEL_DETECTION
        put_varint(&mut feature, 3 << 3); // max_results
        put_varint(&mut feature, 5);
        let mut first = Vec::new();
        put_len_field(&mut first, 1, &image);
        put_len_field(&mut first, 2, &feature);
        put_len_field(&mut first, 99, b"unknown to the proxy");
        let mut source = Vec::new();
        put_len_field(&mut source, 2, b"gs://bucket/photo.jpg"); // image_uri
        let mut remote_image = Vec::new();
        put_len_field(&mut remote_image, 2, &source);
        let mut second = Vec::new();
        put_len_field(&mut second, 1, &remote_image);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, &first);
        put_len_field(&mut msg, 1, &second);
        put_len_field(&mut msg, 4, b"projects/p/locations/eu"); // parent
        frame(&msg)
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
    fn images_are_found_and_replaced_and_every_other_byte_survives() {
        let wire = GrpcWire(Protocol::GoogleVision);
        let body = request(b"original jpeg bytes");
        let slots = wire.extract_images(&view(&body)).unwrap();
        assert_eq!(slots.len(), 2);
        assert!(matches!(&slots[0].image, SlotImage::Inline(b) if b == b"original jpeg bytes"));
        assert!(matches!(&slots[1].image, SlotImage::Remote(_)));
        let out = wire
            .replace_images(&view(&body), &[(0, b"smaller".to_vec())])
            .unwrap()
            .body;
        // Exactly what a sender would have built with the smaller image.
        assert_eq!(out, request(b"smaller"));
        let again = wire.extract_images(&view(&out)).unwrap();
        assert!(matches!(&again[0].image, SlotImage::Inline(b) if b == b"smaller"));
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        let wire = GrpcWire(Protocol::GoogleVision);
        for body in [
            vec![],
            vec![0, 0, 0, 0],
            vec![1, 0, 0, 0, 1, 0],                 // compressed
            vec![0, 0, 0, 0, 9, 1, 2],              // length mismatch
            frame(&[0x0a, 0xff, 0xff, 0xff, 0x0f]), // field longer than the message
            frame(&[0x0a; 11]),                     // nested nonsense
            frame(&[0x80; 12]),                     // endless varint
            frame(&[0x0b]),                         // group
        ] {
            assert!(wire.extract_images(&view(&body)).is_err(), "{body:?}");
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
        assert_eq!(
            recognize(&post, GOOGLE_ANNOTATE),
            Some(GrpcCall {
                api: Protocol::GoogleVision,
                compress: true
            })
        );
        assert_eq!(
            recognize(
                &post,
                "/google.cloud.vision.v1.ImageAnnotator/AsyncBatchAnnotateFiles"
            )
            .map(|c| c.compress),
            Some(false)
        );
        assert_eq!(
            recognize(&post, "/inference.GRPCInferenceService/ServerLive").map(|c| c.api),
            Some(Protocol::KServe)
        );
        assert_eq!(recognize(&post, "/grpc.health.v1.Health/Check"), None);
        assert_eq!(percent_encode("naïve 100%"), "na%C3%AFve 100%25");
    }
}
