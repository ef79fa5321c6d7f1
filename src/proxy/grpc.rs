//! gRPC through the proxy (issue 9 item 3): the same APIs as their HTTP/JSON routes, carried
//! as protobuf messages over HTTP/2.
//!
//! A gRPC request is recognised by its `content-type` (`application/grpc…`) and its path
//! (`/package.Service/Method`). Google Vision's `ImageAnnotator/BatchAnnotateImages` is
//! compressed like `images:annotate`, and KServe v2's `GRPCInferenceService/ModelInfer` like
//! `POST /v2/models/{model}/infer`; the APIs' other methods (health, metadata, Vision's file
//! methods) go to that API's upstream untouched; a service the proxy does not know gets
//! `UNIMPLEMENTED`.
//!
//! The image bytes are rewritten **on the wire**: the message is walked field by field and
//! every byte that is not an image is copied as it came, so fields the proxy does not know
//! (newer API versions, extensions) survive; only the enclosing lengths are re-encoded.
//! - Vision: `content` (field 1 of `Image`, field 1 of `AnnotateImageRequest`, field 1 of
//!   `BatchAnnotateImagesRequest`) is replaced.
//! - KServe: the image input is the one the backend (and the REST adapter) classify: the
//!   `BYTES` input whose first element is a recognisable image, else the first `BYTES`
//!   input. Each of its elements is an image slot, in element order. The elements are in
//!   its `raw_input_contents` entry (field 7; entries go to the inputs without `contents`
//!   or a shared-memory region, in order, as Triton reads them; each element a u32
//!   little-endian length then its bytes, what tritonclient sends) or in
//!   `contents.bytes_contents` (field 8 of field 5 of the input, field 5 of the request).
//!   A replaced element gets its new bytes (and length prefix); the other elements,
//!   inputs, `parameters` and raw entries go up as they came. At most
//!   `limits.max_tensor_elements` elements are read (as over REST); raw contents that do
//!   not add up are `Malformed`, and such a request goes up as sent.
//!
//! One uncompressed message per request (unary calls); anything else (a compressed
//! message, a stream of several) goes up as sent.
//!
//! Upstream, gRPC needs HTTP/2 (prior knowledge for `http://`, ALPN for `https://`), and
//! its status comes in trailers, which come back to the client unchanged. Errors the proxy
//! makes itself are gRPC statuses in a trailers-only answer (HTTP 200, `grpc-status`,
//! `grpc-message`), never an HTTP error a gRPC client cannot read.
//!
//! Vision's and KServe's gRPC answers are read like their REST answers ([`parse_answers`]:
//! Vision's label annotations, KServe's `labels`/`scores` outputs), so the live pair audits
//! gRPC traffic and watches its answers' margins as it does REST traffic.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::compress::ImageWire;
use crate::protocol::{
    Answer, ImageSlot, Label, Protocol, ProtocolError, ProxyRequest, Rewritten, SlotImage,
};

/// Google Vision's image annotation method (the backend serves the same path).
pub use crate::backend::grpc::VISION_BATCH_ANNOTATE as GOOGLE_ANNOTATE;
/// KServe v2's inference method (`/inference.GRPCInferenceService/ModelInfer`), the one
/// whose images the proxy compresses; the service's other methods go up untouched.
const KSERVE_INFER_METHOD: &str = "ModelInfer";
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
    if let Some(method) = path
        .strip_prefix(crate::backend::grpc::KSERVE_SERVICE)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        return Some(GrpcCall {
            api: Protocol::KServe,
            compress: method == KSERVE_INFER_METHOD,
        });
    }
    None
}

/// The images of a gRPC call's message, as [`ImageWire`]: Google Vision's
/// `BatchAnnotateImagesRequest` and KServe v2's `ModelInferRequest`.
#[derive(Debug, Clone, Copy)]
pub struct GrpcWire(pub Protocol);

impl ImageWire for GrpcWire {
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        let msg = unframe(req.body)?;
        match self.0 {
            Protocol::GoogleVision => vision_images(msg),
            Protocol::KServe => Ok(image_input(msg)?
                .map(|input| input.slots())
                .unwrap_or_default()),
            other => Err(no_wire(other)),
        }
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        let msg = unframe(req.body)?;
        let out = match self.0 {
            Protocol::GoogleVision => vision_replace(msg, replacements)?,
            Protocol::KServe => infer_replace(msg, replacements)?,
            other => return Err(no_wire(other)),
        };
        Ok(Rewritten::body(frame(&out)))
    }

    fn max_image_bytes(&self) -> Option<usize> {
        self.0.max_image_bytes()
    }

    fn max_images(&self) -> Option<usize> {
        self.0.max_images()
    }
}

/// An API whose gRPC messages the proxy does not read ([`recognize`] never asks it to).
fn no_wire(api: Protocol) -> ProtocolError {
    bad(&format!("the proxy reads no gRPC images of {}", api.name()))
}

// ------------------------------------------------------------------ Google Vision

/// A `BatchAnnotateImagesRequest`'s images: one slot per `requests[]` entry.
fn vision_images(msg: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
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
                Some(c) if !c.value(inner).is_empty() => SlotImage::Inline(c.value(inner).to_vec()),
                _ if source => SlotImage::Remote("image.source".into()),
                _ => SlotImage::Unusable("no image content".into()),
            },
        });
    }
    Ok(slots)
}

/// A `BatchAnnotateImagesRequest` with `Image.content` of the given requests replaced.
fn vision_replace(msg: &[u8], replacements: &[(usize, Vec<u8>)]) -> Result<Vec<u8>, ProtocolError> {
    let out = rewrite_fields(msg, 1, |index, request| {
        match replacements.iter().find(|(i, _)| *i == index) {
            Some((_, bytes)) => rewrite(request, 1, &|image| {
                rewrite(image, 1, &|_| Ok(bytes.clone()))
            })
            .map(Some),
            None => Ok(None),
        }
    })?;
    Ok(out.unwrap_or_else(|| msg.to_vec()))
}

// ------------------------------------------------------------------ KServe v2 ModelInfer

// Field numbers of `inference.ModelInferRequest` (Triton's `grpc_service.proto`, as
// tritonclient 2.73.0 ships it; the backend's `v2` structs use the same).
/// `ModelInferRequest.inputs` (repeated `InferInputTensor`).
const INFER_INPUTS: u32 = 5;
/// `ModelInferRequest.raw_input_contents` (repeated bytes, one per input sent raw).
const INFER_RAW: u32 = 7;
/// `InferInputTensor.datatype`.
const INPUT_DATATYPE: u32 = 2;
/// `InferInputTensor.parameters` (map entries: key 1, value 2).
const INPUT_PARAMETERS: u32 = 4;
/// `InferInputTensor.contents` (`InferTensorContents`).
const INPUT_CONTENTS: u32 = 5;
/// `InferTensorContents.bytes_contents` (repeated bytes, one per element).
const CONTENTS_BYTES: u32 = 8;
/// The input parameter that puts an input's data in shared memory (Triton's extension):
/// such an input has no bytes in the message, and no `raw_input_contents` entry.
const SHARED_MEMORY: &[u8] = b"shared_memory_region";

/// Where an input's `BYTES` elements are in a `ModelInferRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elements {
    /// In `raw_input_contents[entry]`, each a u32 little-endian length then its bytes.
    Raw(usize),
    /// In `contents.bytes_contents`, one entry each.
    Contents,
    /// In shared memory: none in the message.
    Shared,
}

/// The image input of a `ModelInferRequest`, as the backend (and the REST adapter) pick it.
#[derive(Debug)]
struct ImageInput<'a> {
    /// Index among the request's inputs.
    input: usize,
    source: Elements,
    /// Each element's bytes (without a length prefix), in order.
    elements: Vec<&'a [u8]>,
}

impl ImageInput<'_> {
    /// One slot per element, in order.
    fn slots(&self) -> Vec<ImageSlot> {
        self.elements
            .iter()
            .enumerate()
            .map(|(k, element)| ImageSlot {
                index: k,
                path: self.path(k),
                image: if element.is_empty() {
                    SlotImage::Unusable(EMPTY_ELEMENT.into())
                } else {
                    SlotImage::Inline(element.to_vec())
                },
            })
            .collect()
    }

    /// Where element `k` is, for messages.
    fn path(&self, k: usize) -> String {
        match self.source {
            Elements::Raw(j) => format!("raw_input_contents[{j}][{k}]"),
            Elements::Contents | Elements::Shared => {
                format!("inputs[{}].contents.bytes_contents[{k}]", self.input)
            }
        }
    }
}

/// Why an empty element is no image slot to replace.
const EMPTY_ELEMENT: &str = "empty BYTES element";

/// The image input of a `ModelInferRequest` (`None`: it has no `BYTES` input): the
/// `BYTES` input whose first element is a recognisable image, else the first `BYTES`
/// input, as the backend chooses. Its elements are its `raw_input_contents` entry when
/// the request sends raw contents (entries go to the inputs that have neither `contents`
/// nor a shared-memory region, in order, as Triton reads them), else its
/// `contents.bytes_contents`.
///
/// Errors: a message that is not protobuf, raw contents that do not add up (an element
/// running past its entry, entries not one per such input, an input with `contents` as
/// well), more `BYTES` elements over all inputs than `limits.max_tensor_elements`. Such a
/// request goes up as sent and the upstream answers for it.
fn image_input(msg: &[u8]) -> Result<Option<ImageInput<'_>>, ProtocolError> {
    use crate::protocol::kserve::{SplitError, split_elements, too_many_elements};

    let top = fields(msg)?;
    let raws: Vec<&[u8]> = top
        .iter()
        .filter(|f| f.number == INFER_RAW && f.wire == LEN)
        .map(|f| f.value(msg))
        .collect();
    let max_elements = crate::protocol::parse_limits().max_tensor_elements;
    let mut read = 0usize;
    let mut raw_entries = 0usize;
    let mut candidates = Vec::new();
    for (i, input) in top
        .iter()
        .filter(|f| f.number == INFER_INPUTS && f.wire == LEN)
        .enumerate()
    {
        let tensor = input.value(msg);
        let parts = fields(tensor)?;
        let bytes = parts
            .iter()
            .rfind(|f| f.number == INPUT_DATATYPE && f.wire == LEN)
            .is_some_and(|f| f.value(tensor) == b"BYTES");
        let contents: Vec<&[u8]> = parts
            .iter()
            .filter(|f| f.number == INPUT_CONTENTS && f.wire == LEN)
            .map(|f| f.value(tensor))
            .collect();
        let mut shared = false;
        for entry in parts
            .iter()
            .filter(|f| f.number == INPUT_PARAMETERS && f.wire == LEN)
        {
            let entry = entry.value(tensor);
            shared |= fields(entry)?
                .iter()
                .rfind(|f| f.number == 1 && f.wire == LEN)
                .is_some_and(|key| key.value(entry) == SHARED_MEMORY);
        }
        if !raws.is_empty() && !contents.is_empty() {
            return Err(bad(&format!(
                "inputs[{i}] has contents while the request sends raw_input_contents"
            )));
        }
        let source = if shared {
            Elements::Shared
        } else if raws.is_empty() {
            Elements::Contents
        } else {
            raw_entries += 1;
            Elements::Raw(raw_entries - 1)
        };
        if !bytes {
            continue;
        }
        let room = max_elements.saturating_sub(read);
        let elements: Vec<&[u8]> = match source {
            Elements::Shared => Vec::new(),
            Elements::Raw(j) => {
                let Some(blob) = raws.get(j) else {
                    return Err(bad(&format!(
                        "raw_input_contents has {} entries, inputs[{i}] would need entry {j}",
                        raws.len()
                    )));
                };
                split_elements(blob, room)
                    .map_err(|e| match e {
                        SplitError::Malformed(detail) => {
                            bad(&format!("raw_input_contents[{j}]: {detail}"))
                        }
                        SplitError::TooMany => too_many_elements(max_elements),
                    })?
                    .into_iter()
                    .map(|range| &blob[range])
                    .collect()
            }
            Elements::Contents => {
                let mut elements = Vec::new();
                for value in &contents {
                    for f in fields(value)? {
                        if f.number == CONTENTS_BYTES && f.wire == LEN {
                            if elements.len() >= room {
                                return Err(too_many_elements(max_elements));
                            }
                            elements.push(f.value(value));
                        }
                    }
                }
                elements
            }
        };
        read += elements.len();
        candidates.push(ImageInput {
            input: i,
            source,
            elements,
        });
    }
    if !raws.is_empty() && raw_entries != raws.len() {
        return Err(bad(&format!(
            "raw_input_contents has {} entries for {raw_entries} inputs sent raw",
            raws.len()
        )));
    }
    let chosen = candidates
        .iter()
        .position(|c| {
            c.elements
                .first()
                .is_some_and(|e| crate::codec::Format::sniff(e).is_some())
        })
        .unwrap_or(0);
    Ok(candidates.into_iter().nth(chosen))
}

/// A `ModelInferRequest` with the given elements of its image input replaced: the element
/// (and its length prefix, in raw contents) and the lengths that enclose it are new,
/// every other byte is copied as it came.
fn infer_replace(msg: &[u8], replacements: &[(usize, Vec<u8>)]) -> Result<Vec<u8>, ProtocolError> {
    let Some(&(first, _)) = replacements.first() else {
        return Ok(msg.to_vec());
    };
    let Some(input) = image_input(msg)? else {
        return Err(ProtocolError::NoSuchSlot {
            index: first,
            count: 0,
        });
    };
    for (index, _) in replacements {
        let element = input
            .elements
            .get(*index)
            .ok_or(ProtocolError::NoSuchSlot {
                index: *index,
                count: input.elements.len(),
            })?;
        if element.is_empty() {
            return Err(ProtocolError::NotReplaceable {
                index: *index,
                path: input.path(*index),
                reason: EMPTY_ELEMENT.to_owned(),
            });
        }
    }
    let new = |k: usize| {
        replacements
            .iter()
            .find(|(i, _)| *i == k)
            .map(|(_, bytes)| bytes.as_slice())
    };
    let out = match input.source {
        Elements::Raw(entry) => rewrite_fields(msg, INFER_RAW, |j, blob| {
            if j != entry {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(blob.len());
            for (k, element) in input.elements.iter().enumerate() {
                let bytes = new(k).unwrap_or(element);
                let length = u32::try_from(bytes.len()).map_err(|_| bad("element over 4 GiB"))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Ok(Some(out))
        })?,
        Elements::Contents => {
            let mut k = 0usize;
            rewrite_fields(msg, INFER_INPUTS, |i, tensor| {
                if i != input.input {
                    return Ok(None);
                }
                rewrite_fields(tensor, INPUT_CONTENTS, |_, contents| {
                    rewrite_fields(contents, CONTENTS_BYTES, |_, _| {
                        let element = k;
                        k += 1;
                        Ok(new(element).map(<[u8]>::to_vec))
                    })
                })
            })?
        }
        Elements::Shared => None,
    };
    Ok(out.unwrap_or_else(|| msg.to_vec()))
}

/// Whether [`parse_answers`] reads this API's gRPC answers (so its calls can be audited).
pub fn reads_answers(api: Protocol) -> bool {
    matches!(api, Protocol::GoogleVision | Protocol::KServe)
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
    let msg = match ok_message(headers, body, trailers) {
        Ok(msg) => msg,
        Err(e) => return reads_answers(api).then_some(Err(e)),
    };
    match api {
        Protocol::GoogleVision => Some(parse_vision(msg)),
        Protocol::KServe => Some(parse_model_infer(msg)),
        _ => None,
    }
}

fn unexpected(detail: String) -> ProtocolError {
    ProtocolError::UnexpectedAnswer { detail }
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

fn parse_vision(msg: &[u8]) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
    use prost::Message;
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

/// A `ModelInferResponse` with the outputs the REST route reads ([`kserve::LABELS_OUTPUT`]
/// BYTES `[N, k]` and [`kserve::SCORES_OUTPUT`] FP32 `[N, k]`, in `raw_output_contents` by
/// position): one answer per image row.
fn parse_model_infer(msg: &[u8]) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
    use crate::protocol::kserve;
    use prost::Message;
    let answer = crate::backend::grpc::v2::ModelInferResponse::decode(msg)
        .map_err(|e| unexpected(format!("ModelInferResponse: {e}")))?;
    let raw = |name: &str| {
        answer.outputs.iter().position(|o| o.name == name).map(|i| {
            let shape = answer.outputs[i].shape.clone();
            (answer.raw_output_contents.get(i), shape)
        })
    };
    let (Some((Some(labels), shape)), Some((Some(scores), _))) =
        (raw(kserve::LABELS_OUTPUT), raw(kserve::SCORES_OUTPUT))
    else {
        return Err(unexpected(
            "no raw `labels` and `scores` outputs".to_owned(),
        ));
    };
    let names: Vec<String> = kserve::split_elements(labels, kserve::MAX_ANSWER_ELEMENTS)
        .map_err(|_| unexpected("`labels` is not a BYTES tensor".to_owned()))?
        .into_iter()
        .map(|r| String::from_utf8_lossy(&labels[r]).into_owned())
        .collect();
    let values: Vec<f32> = scores
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let k = match shape.as_slice() {
        [_, k] => usize::try_from(*k).unwrap_or(0),
        _ => names.len(),
    };
    if k == 0 || names.len() != values.len() || !names.len().is_multiple_of(k) {
        return Err(unexpected(format!(
            "{} labels and {} scores do not make rows of {k}",
            names.len(),
            values.len()
        )));
    }
    Ok(names
        .chunks(k)
        .zip(values.chunks(k))
        .map(|(n, v)| {
            Ok(Answer::new(
                n.iter()
                    .zip(v)
                    .map(|(name, &score)| Label {
                        name: name.clone(),
                        score,
                    })
                    .collect(),
            ))
        })
        .collect())
}

/// gRPC status codes (one enum for the backend and the proxy).
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
    let out = rewrite_fields(msg, number, |occurrence, value| {
        if occurrence == 0 {
            f(value).map(Some)
        } else {
            Ok(None)
        }
    })?;
    Ok(out.unwrap_or_else(|| msg.to_vec()))
}

/// `msg` with its `number` fields (messages or bytes) given to `f` in order, with their
/// occurrence (0, 1, …): `Some(new value)` replaces the value (its length re-encoded),
/// `None` keeps the field's bytes as they came; every other field is copied as it came.
/// `None` when no field was replaced (the message is unchanged).
fn rewrite_fields(
    msg: &[u8],
    number: u32,
    mut f: impl FnMut(usize, &[u8]) -> Result<Option<Vec<u8>>, ProtocolError>,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut out = Vec::with_capacity(msg.len());
    let mut occurrence = 0;
    let mut changed = false;
    for field in fields(msg)? {
        if field.number == number && field.wire == LEN {
            match f(occurrence, field.value(msg))? {
                Some(value) => {
                    put_len_field(&mut out, number, &value);
                    changed = true;
                }
                None => out.extend_from_slice(field.raw(msg)),
            }
            occurrence += 1;
        } else {
            out.extend_from_slice(field.raw(msg));
        }
    }
    Ok(changed.then_some(out))
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

    /// An `InferInputTensor`: name, datatype, shape, then `extra` (parameters, contents).
    fn tensor(name: &str, datatype: &str, shape: &[u64], extra: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        put_len_field(&mut t, 1, name.as_bytes());
        put_len_field(&mut t, 2, datatype.as_bytes());
        let mut dims = Vec::new();
        for &d in shape {
            put_varint(&mut dims, d);
        }
        put_len_field(&mut t, 3, &dims); // packed int64
        t.extend_from_slice(extra);
        t
    }

    /// Triton's serialised BYTES tensor.
    fn serialised(elements: &[&[u8]]) -> Vec<u8> {
        let mut blob = Vec::new();
        for e in elements {
            blob.extend_from_slice(&u32::try_from(e.len()).unwrap().to_le_bytes());
            blob.extend_from_slice(e);
        }
        blob
    }

    const JPEG: &[u8] = b"\xff\xd8\xff\xe0 a photo \xff\xd9";
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n another photo";
    /// Re-encodes (still JPEGs, as the agent's are).
    const SMALL: &[u8] = b"\xff\xd8\xff small";
    const SMALLER: &[u8] = b"\xff\xd8\xff";

    /// A `ModelInferRequest` as tritonclient sends one, plus what it does not: an INT64
    /// input first, a BYTES text input before the images, a `top_k` parameter, an unknown
    /// top-level field, an unknown field inside the image input.
    fn infer(images: &[&[u8]]) -> Vec<u8> {
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"classifier");
        put_len_field(&mut msg, 3, b"req-7");
        let mut top_k = Vec::new();
        put_len_field(&mut top_k, 1, b"top_k");
        let mut value = Vec::new();
        put_varint(&mut value, 2 << 3); // int64_param
        put_varint(&mut value, 3);
        put_len_field(&mut top_k, 2, &value);
        put_len_field(&mut msg, 4, &top_k);
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[2], &[]));
        put_len_field(&mut msg, 5, &tensor("prompt", "BYTES", &[1], &[]));
        let mut unknown = Vec::new();
        put_len_field(&mut unknown, 42, b"unknown inside the input");
        let n = images.len() as u64;
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[n], &unknown));
        let mut out = Vec::new();
        put_len_field(&mut out, 1, b"labels");
        put_len_field(&mut msg, 6, &out);
        put_len_field(
            &mut msg,
            7,
            &[7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0],
        );
        put_len_field(&mut msg, 7, &serialised(&[b"a cat, in words"]));
        put_len_field(&mut msg, 7, &serialised(images));
        put_len_field(&mut msg, 99, b"unknown to the proxy");
        frame(&msg)
    }

    /// The same images in `contents.bytes_contents`, split over two `contents` (which
    /// protobuf merges), with no raw contents.
    fn infer_in_contents(images: &[&[u8]]) -> Vec<u8> {
        let (first, second) = images.split_at(images.len().min(1));
        let mut extra = Vec::new();
        for part in [first, second] {
            let mut contents = Vec::new();
            for image in part {
                put_len_field(&mut contents, 8, image);
            }
            put_len_field(&mut extra, 5, &contents);
        }
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"classifier");
        let n = images.len() as u64;
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[n], &extra));
        put_len_field(&mut msg, 99, b"unknown to the proxy");
        frame(&msg)
    }

    fn kserve_view(body: &[u8]) -> ProxyRequest<'_> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        ProxyRequest {
            path_and_query: "/inference.GRPCInferenceService/ModelInfer",
            headers: EMPTY.get_or_init(HeaderMap::new),
            body,
        }
    }

    fn inline(slots: &[ImageSlot]) -> Vec<Vec<u8>> {
        slots
            .iter()
            .map(|s| match &s.image {
                SlotImage::Inline(b) => b.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn infer_elements_are_found_and_replaced_and_every_other_byte_survives() {
        let wire = GrpcWire(Protocol::KServe);
        for (build, path) in [
            (infer as fn(&[&[u8]]) -> Vec<u8>, "raw_input_contents[2][1]"),
            (infer_in_contents, "inputs[0].contents.bytes_contents[1]"),
        ] {
            let body = build(&[JPEG, PNG, JPEG]);
            let slots = wire.extract_images(&kserve_view(&body)).unwrap();
            assert_eq!(inline(&slots), [JPEG, PNG, JPEG]);
            assert_eq!(slots[1].index, 1);
            assert_eq!(slots[1].path, path);
            let out = wire
                .replace_images(
                    &kserve_view(&body),
                    &[(0, SMALL.to_vec()), (2, SMALLER.to_vec())],
                )
                .unwrap()
                .body;
            // Exactly what the client would have sent with the smaller images.
            assert_eq!(out, build(&[SMALL, PNG, SMALLER]));
            let again = wire.extract_images(&kserve_view(&out)).unwrap();
            assert_eq!(inline(&again), [SMALL, PNG, SMALLER]);
            // One element only: the others go up as they came.
            let out = wire
                .replace_images(&kserve_view(&body), &[(1, SMALL.to_vec())])
                .unwrap()
                .body;
            assert_eq!(out, build(&[JPEG, SMALL, JPEG]));
            assert!(matches!(
                wire.replace_images(&kserve_view(&body), &[(3, b"x".to_vec())]),
                Err(ProtocolError::NoSuchSlot { index: 3, count: 3 })
            ));
        }
    }

    #[test]
    fn infer_image_input_is_chosen_as_the_backend_chooses() {
        let wire = GrpcWire(Protocol::KServe);
        // No image anywhere: the first BYTES input ("prompt"), whose element is its slot.
        let body = infer(&[b"not an image"]);
        let slots = wire.extract_images(&kserve_view(&body)).unwrap();
        assert_eq!(inline(&slots), [b"a cat, in words"]);
        assert_eq!(slots[0].path, "raw_input_contents[1][0]");
        // No BYTES input: no slots.
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[1], &[]));
        put_len_field(&mut msg, 7, &[1, 0, 0, 0, 0, 0, 0, 0]);
        let body = frame(&msg);
        assert!(wire.extract_images(&kserve_view(&body)).unwrap().is_empty());
        assert!(matches!(
            wire.replace_images(&kserve_view(&body), &[(0, JPEG.to_vec())]),
            Err(ProtocolError::NoSuchSlot { index: 0, count: 0 })
        ));
        // An input in shared memory has no raw entry: the next input has the first one.
        let mut shm = Vec::new();
        let mut entry = Vec::new();
        put_len_field(&mut entry, 1, b"shared_memory_region");
        put_len_field(&mut entry, 2, &[0x1a, 3, b'r', b'e', b'g']); // string_param
        put_len_field(&mut shm, 4, &entry);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[1], &shm));
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 7, &serialised(&[JPEG]));
        let body = frame(&msg);
        let slots = wire.extract_images(&kserve_view(&body)).unwrap();
        assert_eq!(inline(&slots), [JPEG]);
        assert_eq!(slots[0].path, "raw_input_contents[0][0]");
        // An empty element is a slot that cannot be replaced.
        let body = infer(&[JPEG, b""]);
        let slots = wire.extract_images(&kserve_view(&body)).unwrap();
        assert!(matches!(slots[1].image, SlotImage::Unusable(_)));
        assert!(matches!(
            wire.replace_images(&kserve_view(&body), &[(1, b"x".to_vec())]),
            Err(ProtocolError::NotReplaceable { index: 1, .. })
        ));
    }

    #[test]
    fn hostile_infer_messages_are_errors_not_panics() {
        let wire = GrpcWire(Protocol::KServe);
        let with_raw = |blobs: &[&[u8]], inputs: usize| {
            let mut msg = Vec::new();
            for _ in 0..inputs {
                put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &[]));
            }
            for blob in blobs {
                put_len_field(&mut msg, 7, blob);
            }
            frame(&msg)
        };
        let mut contents = Vec::new();
        put_len_field(&mut contents, 8, JPEG);
        let mut extra = Vec::new();
        put_len_field(&mut extra, 5, &contents);
        let mut both = Vec::new();
        put_len_field(&mut both, 5, &tensor("image", "BYTES", &[1], &extra));
        put_len_field(&mut both, 7, &serialised(&[JPEG]));
        let mut bad_contents = Vec::new();
        put_len_field(&mut bad_contents, 5, &[0x0a, 0x05, 0x42, 0x01]);
        let mut input_with_bad_contents = Vec::new();
        put_len_field(
            &mut input_with_bad_contents,
            5,
            &tensor("image", "BYTES", &[1], &bad_contents),
        );
        let mut truncated = serialised(&[JPEG]);
        truncated.pop();
        for body in [
            vec![],
            vec![1, 0, 0, 0, 1, 0],                      // compressed
            frame(&[0x2a, 0xff, 0xff, 0xff, 0x0f]),      // an input longer than the message
            with_raw(&[&truncated], 1),                  // an element past its entry
            with_raw(&[&[5, 0]], 1),                     // a truncated length prefix
            with_raw(&[&[0xff, 0xff, 0xff, 0xff]], 1),   // an element of 4 GiB
            with_raw(&[&serialised(&[JPEG])[..]; 2], 1), // more entries than inputs
            with_raw(&[&serialised(&[JPEG])], 2),        // fewer entries than inputs
            frame(&both),                                // raw contents and contents
            frame(&input_with_bad_contents),             // contents that are not protobuf
        ] {
            assert!(
                wire.extract_images(&kserve_view(&body)).is_err(),
                "{body:?}"
            );
            assert!(
                wire.replace_images(&kserve_view(&body), &[(0, b"x".to_vec())])
                    .is_err(),
                "{body:?}"
            );
        }
        // Every prefix of a real request, and every byte of it flipped: an answer (the
        // message may still parse) or an error, never a panic.
        let body = infer(&[JPEG, PNG]);
        let msg = &body[5..];
        for cut in 0..msg.len() {
            let _ = wire.extract_images(&kserve_view(&frame(&msg[..cut])));
            let _ = wire.replace_images(&kserve_view(&frame(&msg[..cut])), &[(0, JPEG.to_vec())]);
            let mut flipped = msg.to_vec();
            flipped[cut] ^= 0xff;
            let _ = wire.extract_images(&kserve_view(&frame(&flipped)));
            let _ = wire.replace_images(&kserve_view(&frame(&flipped)), &[(1, JPEG.to_vec())]);
        }
        // More elements than limits.max_tensor_elements (over all BYTES inputs): too
        // complex, before any slot is built; as many is fine.
        let max = crate::protocol::parse_limits().max_tensor_elements;
        let empties = vec![&b""[..]; max];
        let body = with_raw(&[&serialised(&empties)], 1);
        assert_eq!(wire.extract_images(&kserve_view(&body)).unwrap().len(), max);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("a", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 5, &tensor("b", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 7, &serialised(&empties));
        put_len_field(&mut msg, 7, &serialised(&[JPEG]));
        assert!(matches!(
            wire.extract_images(&kserve_view(&frame(&msg))),
            Err(ProtocolError::TooComplex { .. })
        ));
        let mut contents = Vec::new();
        for _ in 0..=max {
            put_len_field(&mut contents, 8, b"");
        }
        let mut extra = Vec::new();
        put_len_field(&mut extra, 5, &contents);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &extra));
        assert!(matches!(
            wire.extract_images(&kserve_view(&frame(&msg))),
            Err(ProtocolError::TooComplex { .. })
        ));
    }

    #[test]
    fn only_model_infer_is_compressed_among_kserve_methods() {
        let post = Method::POST;
        assert_eq!(
            recognize(&post, "/inference.GRPCInferenceService/ModelInfer"),
            Some(GrpcCall {
                api: Protocol::KServe,
                compress: true
            })
        );
        for method in [
            "ServerLive",
            "ModelMetadata",
            "ModelStreamInfer",
            "ModelInferX",
        ] {
            assert_eq!(
                recognize(&post, &format!("/inference.GRPCInferenceService/{method}")),
                Some(GrpcCall {
                    api: Protocol::KServe,
                    compress: false
                }),
                "{method}"
            );
        }
        assert_eq!(
            recognize(&post, "/inference.GRPCInferenceServiceX/ModelInfer"),
            None
        );
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
        assert_eq!(
            crate::backend::grpc::percent_encode("naïve 100%"),
            "na%C3%AFve 100%25"
        );
    }
}
