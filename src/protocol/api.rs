//! What an adapter implements: [`Api`], what the proxy and the vision client need of a cloud
//! API, and [`Emulated`], what the local backend needs to answer as that API.
//!
//! Each adapter file implements both on a unit struct of its own (`google::Google`,
//! `rekognition::Rekognition`, ...); [`Protocol::api`] and [`Protocol::emulated`] are the
//! registry that maps a [`Protocol`] to them, and the only place that lists every API.
//! [`Protocol`]'s own methods delegate here, so callers keep writing
//! `protocol.extract_images(&req)`. Errors are the one exception: an adapter writes no
//! error renderer, only its tables ([`Api::proxy_kind`] for the proxy's errors,
//! [`Emulated::error_kind`] for the backend's, by [`ErrorClass`]) and its body shape
//! ([`Api::error_body`]); `super::shape` renders every API's errors from them.
//!
//! An API with a gRPC form also implements [`GrpcApi`] (in a file next to its adapter,
//! `src/protocol/<api>/grpc.rs`) and returns it from [`Api::grpc`]; the proxy's gRPC
//! transport (`crate::proxy::grpc`) asks every API's [`Api::grpc`] which calls it knows,
//! and leaves the messages to it.
//!
//! [`Protocol`]: super::Protocol
//! [`Protocol::api`]: super::Protocol::api
//! [`Protocol::emulated`]: super::Protocol::emulated

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use super::shape::{ApiError, ErrorKind, Kind};
use super::{
    Answer, BackendRequest, BackendResponse, ClientRequest, ErrorClass, ImageProblem, ImageSlot,
    ProtocolError, ProxyRequest, Reply, Rewritten,
};

/// The proxy and the vision client's view of a cloud API: recognise its requests, find and
/// replace the images in them, build the request for one image and read the answers.
pub trait Api: Sync {
    /// The name used on the CLI, in config files, in serde and in metric labels, e.g.
    /// `google`. Must be unique; [`Protocol`](super::Protocol)'s `FromStr` and `Display` use it.
    fn name(&self) -> &'static str;

    /// The content type the API answers JSON with, its errors included.
    fn content_type(&self) -> &'static str;

    /// `err` as this API writes an error: the JSON body, and the headers its error shape
    /// adds besides the content type (Rekognition's `x-amzn-ErrorType`). Used for the
    /// backend's errors and the proxy's own alike ([`super::shape::render`]), so a client
    /// reads both the same way.
    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>);

    /// This API's kind for an error the proxy answers with `status` itself (400, 403, 404,
    /// 405, 408, 413, 429, 502, 503, 504); any other status is the API's generic server
    /// error. Its [`Api::parse_answer`] must read such an error back.
    fn proxy_kind(&self, status: StatusCode) -> Kind<'static>;

    /// The largest image, in raw bytes, the API documents accepting inline (after any
    /// base64 overhead is taken off); `None` where no limit is documented. The proxy makes
    /// an upload over it fit.
    fn max_image_bytes(&self) -> Option<usize>;

    /// The most images one request may carry, where the API documents it; `None` where the
    /// batch size is the deployment's own (only `limits.max_images_per_request` applies).
    /// The default is one image, for the one-image APIs.
    fn max_images(&self) -> Option<usize> {
        Some(1)
    }

    /// Whether a `POST` to `route` (the path without its query) with these headers is a
    /// request of this API that the proxy compresses. Decided from the route and headers
    /// alone: the body is not read. No two APIs may recognise the same request.
    fn recognizes(&self, route: &str, headers: &HeaderMap) -> bool;

    /// Whether a request the proxy does not compress (no API [`Api::recognizes`] it) belongs
    /// to this API's upstream anyway: its other operations, health and metadata routes.
    /// `route` is the path without its query. No two APIs may own the same request.
    fn owns(&self, method: &Method, route: &str, headers: &HeaderMap) -> bool;

    /// Client side: the request that asks for at most `max_labels` labels of one image
    /// (ignored by an API without such a parameter). Credentials are the caller's.
    fn client_request(&self, image: &[u8], max_labels: usize) -> ClientRequest;

    /// Client side: reads the answer to an [`Api::client_request`] (status and body) into an
    /// [`Answer`] (labels best first, scores in `0..=1`), or the API's error, in its own
    /// shape or not, as a [`ProtocolError`].
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError>;

    /// Client or proxy side: reads an answer about several images, one result per image in
    /// request order; the outer error is about the answer as a whole. A batch API overrides
    /// it; the default is [`Api::parse_answer`] as a one-element list.
    fn parse_answers(
        &self,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        Ok(vec![self.parse_answer(status, body)])
    }

    /// Proxy side: the image slots of a client's request, in request order. Slots that hold
    /// no inline image (URLs, S3 objects, broken base64) are listed too, as not replaceable;
    /// an `Err` means the request is not one of this API at all.
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError>;

    /// Proxy side: the request body with the images of the given slots (by
    /// [`ImageSlot::index`]) replaced by new bytes, every other field kept, and the headers
    /// that must change with the body ([`Rewritten::body`] when none does). A later
    /// replacement of the same slot wins; a slot the request does not have is
    /// [`ProtocolError::NoSuchSlot`], one without inline bytes [`ProtocolError::NotReplaceable`].
    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError>;

    /// This API's gRPC form, where the proxy serves one; the default is none (a gRPC call
    /// to the API's services is then `UNIMPLEMENTED`).
    fn grpc(&self) -> Option<&'static dyn GrpcApi> {
        None
    }
}

/// The proxy's view of an API's gRPC form: which calls are its own, and the images and
/// answers in its protobuf messages. The transport (framing, HTTP/2, statuses, trailers)
/// is the proxy's; these methods see one unframed message. Messages are read and
/// rewritten on the wire with `protocol::protobuf`, so fields the proxy does not know
/// survive.
pub trait GrpcApi: Sync {
    /// Whether a gRPC call to `path` (`/package.Service/Method`, without query) is this
    /// API's: `Some(true)` for the method whose images the proxy compresses,
    /// `Some(false)` for its other methods (health, metadata, ...), which go up untouched,
    /// `None` for a call that is not this API's. No two APIs may claim the same path.
    fn method(&self, path: &str) -> Option<bool>;

    /// The image slots of a request message of the compressed method, in request order,
    /// like [`Api::extract_images`].
    fn extract_images(&self, msg: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError>;

    /// The request message with the images of the given slots replaced and every other
    /// byte copied as it came, like [`Api::replace_images`] (same errors).
    fn replace_images(
        &self,
        msg: &[u8],
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Vec<u8>, ProtocolError>;

    /// The answers in the response message of an OK call, one per image in request order,
    /// like [`Api::parse_answers`] for the REST answer.
    fn parse_answers(
        &self,
        msg: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError>;
}

/// The local backend's view of a cloud API: read the images out of a request and answer in
/// the API's own shape.
pub trait Emulated: Sync {
    /// Reads the images and their per-image options out of an incoming request (`path` may
    /// carry a query string), with what the renderer will need from the request in
    /// [`BackendRequest::reply`]. An `Err` is about the whole request and is answered from
    /// [`Emulated::error_kind`].
    fn parse_backend_request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError>;

    /// The answer to a request, one result per image of [`BackendRequest::images`], in the
    /// same order; `reply` is that request's [`BackendRequest::reply`], and a `reply` of
    /// another API must be treated as this API's default. Labels are rendered as given.
    fn render_backend_response(
        &self,
        reply: &Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse;

    /// This API's table for request-level errors: its status, kind and (where it words the
    /// whole class itself) message for each [`ErrorClass`]. [`super::shape::backend_error`]
    /// renders every API's errors from it ([`super::Protocol::render_backend_error`]).
    fn error_kind(&self, class: ErrorClass) -> ErrorKind;

    /// The message of an error whose [`Emulated::error_kind`] has none of its own: the
    /// error's, unless the API words it otherwise.
    fn error_detail(&self, err: &ProtocolError) -> String {
        err.to_string()
    }

    /// "Too many requests, retry later" in the API's own body shape, always with status 429
    /// (the caller adds `retry-after`); its [`Api::parse_answer`] must read it back as an
    /// error for which [`ProtocolError::is_throttling`] holds.
    fn render_throttled(&self) -> BackendResponse;
}
