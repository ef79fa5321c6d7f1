//! KServe Open Inference Protocol (v2) and Triton `infer`, with encoded images in `BYTES`
//! tensors.
//!
//! Request: `POST /v2/models/{model}[/versions/{version}]/infer`. With Triton's binary-data
//! extension the body is a JSON header of `Inference-Header-Content-Length` bytes followed by
//! the tensors' raw data, in the order of the inputs that declare
//! `parameters.binary_data_size`:
//!
//! ```text
//! {"id": "7", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
//!                         "parameters": {"binary_data_size": 9110}}],
//!  "outputs": [{"name": "labels"}, {"name": "scores"}], "parameters": {"top_k": 5}}
//! <u32 LE length><JPEG bytes><u32 LE length><JPEG bytes>
//! ```
//!
//! Without the extension a `BYTES` input carries `data` in the JSON, each element a base64
//! string or, in KServe's convention, `{"b64": "<base64>"}`.
//!
//! Answer: `{"model_name", "model_version", "id", "outputs": [{"name": "labels", "datatype":
//! "BYTES", "shape": [N, k], "data": [...]}, {"name": "scores", "datatype": "FP32", ...}]}`,
//! row `i` for image `i`; outputs may also come back in binary (`binary_data_output`).
//!
//! Quirks this file handles:
//! - Every element of every `BYTES` input is a slot, in input then element order, so every
//!   image of a batch is one; non-`BYTES` tensors are carried along untouched. Binary
//!   elements are raw bytes (or base64, when they are text that decodes to a JPEG, PNG or
//!   WebP); JSON elements are base64, as a string or in `{"b64"}`, and a JSON string that is
//!   not base64 is text: an unusable slot. `BYTES` that are not images (a text prompt) are
//!   slots the proxy cannot decode, and it forwards them as they were.
//! - Replacing an image in binary data rewrites its length prefix, the input's
//!   `binary_data_size` and the `Inference-Header-Content-Length` header
//!   ([`super::Rewritten::headers`]); the other tensors' bytes are copied as they were. The
//!   JSON header goes through `serde_json::Value`, like Google's body: every field is kept,
//!   key order and number formatting are serde_json's.
//! - A binary answer's JSON length is not known without the response headers: the parser
//!   reads one JSON value off the front and takes the rest as tensor data.
//! - Errors are `{"error": "message"}` with a 4xx/5xx status; there are no per-image errors.
//! - The local backend serves its one classifier under every model name. It classifies the
//!   `BYTES` input holding the first image (or the first `BYTES` input), answers outputs `labels` (`BYTES`, the top-k class names) and `scores`
//!   (`FP32`), `k` from the request's `parameters.top_k` (default [`DEFAULT_TOP_K`]), and
//!   honours `binary_data` / `binary_data_output`. Triton's `classification` extension is not
//!   served.
//! - Health and metadata are `GET`s with JSON answers ([`render_live`], [`render_ready`],
//!   [`render_server_metadata`], [`render_model_metadata`], [`render_model_ready`]); the
//!   proxy does not compress them and sends every `/v2` path ([`owns_path`]) to the KServe
//!   upstream as it came.
//! - gRPC: `GRPCInferenceService/ModelInfer` is compressed like `infer` ([`grpc`]).

pub mod grpc;

use std::borrow::Cow;
use std::ops::Range;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ErrorClass;
use super::ProxyRequest;
use super::api::{Api, Emulated, GrpcApi};
use super::shape::{ApiError, ErrorKind, Kind};
use super::wire::{self, Field, wire_object};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, ImageProblem, ImageSlot,
    Label, ProtocolError, Rewritten, SlotImage, decode_base64, describe, encode_base64, excerpt,
    is_success, looks_like_image, normalise_score, read_answer,
};

/// The JSON header of an `infer` request, the fields this crate reads. Tensor `data` is not
/// in it: its elements are nested arrays addressed by position, walked on the `Value` by JSON
/// pointer, which is also what the rewrite replaces; every other field goes up as sent.
#[derive(Debug, Default, Deserialize)]
struct InferRequest<'a> {
    #[serde(default, borrow)]
    id: Field<Cow<'a, str>>,
    #[serde(default, borrow)]
    inputs: Field<Vec<Field<RequestInput<'a>>>>,
    #[serde(default, borrow)]
    outputs: Field<Vec<Field<RequestOutput<'a>>>>,
    #[serde(default)]
    parameters: Field<InferParameters>,
}

/// One of `inputs`: `{"name", "datatype", "shape", "data" | "parameters": {"binary_data_size"}}`.
#[derive(Debug, Deserialize)]
struct RequestInput<'a> {
    #[serde(default, borrow)]
    datatype: Field<Cow<'a, str>>,
    #[serde(default)]
    shape: Field<Value>,
    #[serde(default)]
    parameters: Field<TensorParameters>,
}

/// A tensor's `parameters`: `binary_data_size` (binary-data extension), and for a requested
/// output `binary_data`.
#[derive(Debug, Deserialize)]
struct TensorParameters {
    #[serde(default)]
    binary_data_size: Field<Value>,
    #[serde(default)]
    binary_data: Field<bool>,
}

/// One of the request's `outputs`: `{"name", "parameters": {"binary_data"}}`.
#[derive(Debug, Deserialize)]
struct RequestOutput<'a> {
    #[serde(default, borrow)]
    name: Field<Cow<'a, str>>,
    #[serde(default)]
    parameters: Field<TensorParameters>,
}

/// The request's `parameters`: `top_k`, `binary_data_output`.
#[derive(Debug, Deserialize)]
struct InferParameters {
    #[serde(default)]
    top_k: Field<Value>,
    #[serde(default)]
    binary_data_output: Field<bool>,
}

/// An `infer` answer's JSON header: `{"outputs": [...]}`, or `{"error": "…"}`.
#[derive(Debug, Deserialize)]
struct InferAnswer<'a> {
    #[serde(default, borrow)]
    outputs: Field<Vec<Field<AnswerOutput<'a>>>>,
    #[serde(default, borrow)]
    error: Field<Cow<'a, str>>,
}

/// One of the answer's `outputs`: `data` as JSON, or binary (`parameters.binary_data_size`).
#[derive(Debug, Deserialize)]
struct AnswerOutput<'a> {
    #[serde(default, borrow)]
    name: Field<Cow<'a, str>>,
    #[serde(default)]
    shape: Field<Vec<Value>>,
    #[serde(default)]
    parameters: Field<TensorParameters>,
    #[serde(default)]
    data: Field<Value>,
}

/// A JSON `BYTES` element in the `{"b64": "<base64>"}` form.
#[derive(Debug, Deserialize)]
struct B64Element<'a> {
    #[serde(default, borrow)]
    b64: Field<Cow<'a, str>>,
}

/// Whether an element of `data` is a `{"b64": string}` object.
fn is_b64_element(value: &Value) -> bool {
    match wire::read::<B64Element>(value) {
        Field::Is(element) => element.b64.text().is_some(),
        Field::Absent | Field::Wrong(_) => false,
    }
}

wire_object!(TensorParameters, InferParameters);
wire_object!(
    'a,
    InferRequest,
    RequestInput,
    RequestOutput,
    InferAnswer,
    AnswerOutput,
    B64Element
);

/// The typed header of a request; a header that is not a JSON object has none of the fields.
fn header_of(header: &Value) -> InferRequest<'_> {
    match wire::read(header) {
        Field::Is(request) => request,
        Field::Absent | Field::Wrong(_) => InferRequest::default(),
    }
}

/// The model name the client asks for; the local backend answers to any name.
pub const DEFAULT_MODEL: &str = "classifier";

/// The name of the client's image input.
pub const IMAGE_INPUT: &str = "image";

/// The output holding the top-k class names.
pub const LABELS_OUTPUT: &str = "labels";

/// The output holding their scores.
pub const SCORES_OUTPUT: &str = "scores";

/// Labels per image when the request has no `parameters.top_k`.
pub const DEFAULT_TOP_K: usize = 5;

/// The header giving the JSON header's length in a binary-data body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The content type of binary-data bodies.
const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// The content type of JSON bodies.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// The datatype of encoded images.
const BYTES: &str = "BYTES";

/// What the renderer needs from the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The model name from the path.
    pub model: String,
    /// The version from the path, if any.
    pub version: Option<String>,
    /// The request's `id`, echoed back.
    pub id: Option<String>,
    /// The outputs to answer, in order (empty: `labels` then `scores`, as JSON).
    pub outputs: Vec<RequestedOutput>,
}

/// One output a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    /// [`LABELS_OUTPUT`] or [`SCORES_OUTPUT`].
    pub name: String,
    /// Whether to send it as binary data.
    pub binary: bool,
}

/// The model name and version of an `infer` path (query ignored), or `None` for any other
/// path.
pub fn model_of(path: &str) -> Option<(&str, Option<&str>)> {
    let route = path.split('?').next().unwrap_or_default();
    let rest = route.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let (model, version) = match rest.split_once("/versions/") {
        Some((model, version)) => (model, Some(version)),
        None => (rest, None),
    };
    let clean = |s: &str| !s.is_empty() && !s.contains('/');
    (clean(model) && version.is_none_or(clean)).then_some((model, version))
}

/// One `BYTES` element in binary form: a little-endian `u32` length, then the bytes.
fn bytes_element(bytes: &[u8]) -> Vec<u8> {
    // Elements over 4 GiB cannot be framed; images are far smaller (bodies are capped).
    let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    [&length.to_le_bytes()[..], bytes].concat()
}

/// The answers for every image of a batch: row `i` of `labels` and `scores` for image `i`.
///
/// `labels` is required; without `scores` every label scores 0. Empty labels (padding of
/// ragged rows) are dropped. A non-2xx answer becomes [`ProtocolError::Service`] (kind: the
/// status's reason phrase) from `{"error": …}`, or [`ProtocolError::Upstream`].
pub fn parse_answers(
    status: u16,
    body: &[u8],
) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
    if !is_success(status) {
        return Err(error_from_answer(status, body));
    }
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let header = match stream.next() {
        Some(Ok(header)) => header,
        Some(Err(err)) => {
            return Err(ProtocolError::NotJson {
                what: "answer body",
                detail: err.to_string(),
            });
        }
        None => {
            return Err(ProtocolError::NotJson {
                what: "answer body",
                detail: "empty body".to_owned(),
            });
        }
    };
    let binary = &body[stream.byte_offset()..];
    let answer = read_answer::<InferAnswer>(&header);
    let outputs = answer
        .as_ref()
        .and_then(|answer| answer.outputs.ok())
        .ok_or_else(|| ProtocolError::UnexpectedAnswer {
            detail: "no `outputs` array".to_owned(),
        })?;
    let mut cursor = 0;
    let mut labels = None;
    let mut scores = None;
    for (j, output) in outputs.iter().enumerate() {
        // An output that is not an object has no name and is skipped.
        let Some(output) = output.ok() else {
            continue;
        };
        let name = output.name.text().unwrap_or_default();
        let size = binary_size(&output.parameters, &format!("outputs[{j}]"))?;
        let data = match size {
            Some(size) => {
                let range = take(binary, &mut cursor, size).ok_or_else(|| {
                    ProtocolError::UnexpectedAnswer {
                        detail: format!(
                            "outputs[{j}] declares {size} bytes of binary data, {} remain",
                            binary.len() - cursor.min(binary.len())
                        ),
                    }
                })?;
                Some(&binary[range])
            }
            None => None,
        };
        match name {
            LABELS_OUTPUT => labels = Some(read_labels(j, output, data)?),
            SCORES_OUTPUT => scores = Some(read_scores(j, output, data)?),
            _ => {}
        }
    }
    let (labels, rows) = labels.ok_or_else(|| ProtocolError::UnexpectedAnswer {
        detail: "no `labels` output".to_owned(),
    })?;
    let scores = scores.map(|(scores, _)| scores).unwrap_or_default();
    let width = labels.len().checked_div(rows).unwrap_or(0);
    Ok((0..rows)
        .map(|row| {
            let labels = (row * width..(row + 1) * width)
                .filter(|&i| !labels[i].is_empty())
                .map(|i| Label {
                    name: labels[i].clone(),
                    score: normalise_score(f64::from(scores.get(i).copied().unwrap_or(0.0)), 1.0),
                })
                .collect();
            Ok(Answer::new(labels))
        })
        .collect())
}

/// The error of a non-2xx answer: `{"error": "…"}` or, in no known shape, the body's start.
fn error_from_answer(status: u16, body: &[u8]) -> ProtocolError {
    let message = super::parse_json(body, "answer body").ok().and_then(|doc| {
        read_answer::<InferAnswer>(&doc).and_then(|answer| answer.error.text().map(str::to_owned))
    });
    match message {
        Some(message) => ProtocolError::Service {
            status,
            kind: StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_owned(),
            message,
        },
        None => ProtocolError::Upstream {
            status,
            excerpt: excerpt(body),
        },
    }
}

/// The `labels` output: its strings and its number of rows.
fn read_labels(
    j: usize,
    output: &AnswerOutput<'_>,
    binary: Option<&[u8]>,
) -> Result<(Vec<String>, usize), ProtocolError> {
    let values: Vec<String> = match binary {
        Some(blob) => split_elements(blob, MAX_ANSWER_ELEMENTS)
            .map_err(|e| ProtocolError::UnexpectedAnswer {
                detail: match e {
                    SplitError::Malformed(detail) => {
                        format!("outputs[{j}] binary data: {detail}")
                    }
                    SplitError::TooMany => {
                        format!("outputs[{j}] binary data has over {MAX_ANSWER_ELEMENTS} elements")
                    }
                },
            })?
            .into_iter()
            .map(|range| String::from_utf8_lossy(&blob[range]).into_owned())
            .collect(),
        None => flat_data(output)
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                detail: format!("outputs[{j}].data must hold strings"),
            })?,
    };
    let rows = rows_of(j, output, values.len())?;
    Ok((values, rows))
}

/// The `scores` output: its numbers and its number of rows.
fn read_scores(
    j: usize,
    output: &AnswerOutput<'_>,
    binary: Option<&[u8]>,
) -> Result<(Vec<f32>, usize), ProtocolError> {
    let values: Vec<f32> = match binary {
        Some(blob) => blob
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        // Scores are compared, never accumulated: f32 is enough.
        None => flat_data(output)
            .iter()
            .map(|value| value.as_f64().map(|v| v as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                detail: format!("outputs[{j}].data must hold numbers"),
            })?,
    };
    let rows = rows_of(j, output, values.len())?;
    Ok((values, rows))
}

/// Rows of an output: the first dimension of a 2-D `shape`, else 1 (0 when empty).
fn rows_of(j: usize, output: &AnswerOutput<'_>, count: usize) -> Result<usize, ProtocolError> {
    let shape: Vec<usize> = output
        .shape
        .ok()
        .map(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or(Some(vec![count]))
        .ok_or_else(|| ProtocolError::UnexpectedAnswer {
            detail: format!("outputs[{j}].shape must hold non-negative integers"),
        })?;
    if shape.iter().product::<usize>() != count {
        return Err(ProtocolError::UnexpectedAnswer {
            detail: format!("outputs[{j}].shape {shape:?} does not match its {count} elements"),
        });
    }
    Ok(match shape.as_slice() {
        _ if count == 0 => 0,
        [rows, _] => *rows,
        _ => 1,
    })
}

/// The `data` of an output, nested arrays flattened in row-major order.
fn flat_data<'v>(output: &'v AnswerOutput<'_>) -> Vec<&'v Value> {
    fn walk<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    if let Some(data) = output.data.value() {
        walk(data, &mut out);
    }
    out
}

/// `parameters.binary_data_size` of a tensor at `path`, if it has one.
fn binary_size(
    parameters: &Field<TensorParameters>,
    path: &str,
) -> Result<Option<usize>, ProtocolError> {
    match parameters.ok().and_then(|p| p.binary_data_size.value()) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ProtocolError::InvalidValue {
                path: format!("{path}.parameters.binary_data_size"),
                expected: "a non-negative integer",
                got: describe(value),
            }),
    }
}

/// The next `size` bytes of `data` from `cursor`, advancing it; `None` if too few remain.
fn take(data: &[u8], cursor: &mut usize, size: usize) -> Option<Range<usize>> {
    let end = cursor.checked_add(size).filter(|&end| end <= data.len())?;
    let range = *cursor..end;
    *cursor = end;
    Some(range)
}

/// Default of `limits.max_tensor_elements`: most `BYTES` elements read from one request,
/// over all its inputs ([`super::parse_limits`]). Each element becomes
/// a slot (a path, a range, a copy), so without a cap a 20 MB body of 5 million zero-length
/// elements costs gigabytes; Triton's and KServe's batch sizes are far below this, and the
/// proxy compresses at most `limits.max_images_per_request` images anyway. A request with
/// more is refused by the parsers (the proxy forwards it as sent, counted `too_complex`).
pub const MAX_ELEMENTS: usize = 1024;

/// Most label strings read from one answer (top-k labels of a batch are far fewer).
pub(crate) const MAX_ANSWER_ELEMENTS: usize = 1 << 20;

pub(crate) fn too_many_elements(limit: usize) -> ProtocolError {
    ProtocolError::TooComplex {
        what: "request body",
        unit: "BYTES elements",
        count: limit,
        limit,
    }
}

/// Why the elements of a binary tensor could not be read.
pub(crate) enum SplitError {
    /// The framing does not add up (the message says where).
    Malformed(String),
    /// More elements than there is room for.
    TooMany,
}

/// The elements of a binary `BYTES` tensor: the range of each element's bytes (after its
/// length prefix), at most `room` of them. Also how the proxy reads a gRPC `ModelInfer`'s
/// `raw_input_contents` ([`grpc`]).
pub(crate) fn split_elements(blob: &[u8], room: usize) -> Result<Vec<Range<usize>>, SplitError> {
    let mut elements = Vec::new();
    let mut cursor = 0;
    while cursor < blob.len() {
        if elements.len() >= room {
            return Err(SplitError::TooMany);
        }
        let prefix = take(blob, &mut cursor, 4).ok_or_else(|| {
            SplitError::Malformed(format!(
                "element {} has a truncated length prefix ({} bytes)",
                elements.len(),
                blob.len() - (cursor.min(blob.len()))
            ))
        })?;
        let p = &blob[prefix];
        let length = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        let size = usize::try_from(length).unwrap_or(usize::MAX);
        let remaining = blob.len() - cursor;
        let range = take(blob, &mut cursor, size).ok_or_else(|| {
            SplitError::Malformed(format!(
                "element {} claims {length} bytes, only {remaining} remain",
                elements.len()
            ))
        })?;
        elements.push(range);
    }
    Ok(elements)
}

/// A request body split at the end of its JSON header.
struct Framed<'a> {
    /// The JSON header.
    header: Value,
    /// The tensor data after it (empty without the binary-data extension).
    binary: &'a [u8],
    /// Whether `Inference-Header-Content-Length` was given.
    has_length_header: bool,
}

/// Splits a request by `Inference-Header-Content-Length` (without it the whole body is JSON).
fn frame<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Framed<'a>, ProtocolError> {
    let length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(value) => {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let length = text
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= body.len())
                .ok_or_else(|| ProtocolError::InvalidValue {
                    path: "Inference-Header-Content-Length header".to_owned(),
                    expected: "a byte count no larger than the body",
                    got: format!("{text:?} for a body of {} bytes", body.len()),
                })?;
            Some(length)
        }
    };
    let split = length.unwrap_or(body.len());
    let header = super::parse_json(&body[..split], "inference request header")?;
    Ok(Framed {
        header,
        binary: &body[split..],
        has_length_header: length.is_some(),
    })
}

/// An input tensor, as far as its data goes.
struct Input {
    /// `datatype`.
    datatype: String,
    /// Where its binary data sits in the tensor data, when sent binary.
    binary: Option<Range<usize>>,
    /// Its elements.
    elements: Vec<Element>,
}

/// Where one element of a `BYTES` input sits.
enum Element {
    /// Bytes of the tensor data (after the length prefix).
    Binary(Range<usize>),
    /// A JSON string at this pointer.
    JsonString(String),
    /// A `{"b64": …}` object at this pointer.
    JsonB64(String),
    /// Something else in `data` at this pointer (not an image).
    Other(String),
}

/// Every input of a framed request, its binary data accounted for.
fn read_inputs(framed: &Framed<'_>) -> Result<Vec<Input>, ProtocolError> {
    let header = header_of(&framed.header);
    let inputs = match &header.inputs {
        Field::Is(inputs) => inputs,
        Field::Absent => {
            return Err(ProtocolError::MissingField {
                path: "inputs".to_owned(),
            });
        }
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: "inputs".to_owned(),
                expected: "an array",
                got: describe(other),
            });
        }
    };
    let malformed = |detail: String| ProtocolError::Malformed {
        what: "request body",
        format: "KServe binary tensor data",
        detail,
    };
    let mut cursor = 0;
    let mut read = Vec::with_capacity(inputs.len());
    let mut elements_read = 0usize;
    let max_elements = super::parse_limits().max_tensor_elements;
    for (i, input) in inputs.iter().enumerate() {
        let input = match input {
            Field::Is(input) => input,
            Field::Absent | Field::Wrong(_) => {
                return Err(ProtocolError::InvalidValue {
                    path: format!("inputs[{i}]"),
                    expected: "an object",
                    got: describe(input.wrong()),
                });
            }
        };
        let datatype = input.datatype.text().unwrap_or_default().to_owned();
        let binary = match binary_size(&input.parameters, &format!("inputs[{i}]"))? {
            Some(size) => Some(take(framed.binary, &mut cursor, size).ok_or_else(|| {
                malformed(format!(
                    "inputs[{i}] declares binary_data_size {size}, only {} bytes remain",
                    framed.binary.len() - cursor
                ))
            })?),
            None => None,
        };
        let room = max_elements.saturating_sub(elements_read);
        let elements: Vec<Element> = match (&binary, datatype.as_str()) {
            (Some(range), BYTES) => split_elements(&framed.binary[range.clone()], room)
                .map_err(|e| match e {
                    SplitError::Malformed(detail) => malformed(format!("inputs[{i}]: {detail}")),
                    SplitError::TooMany => too_many_elements(max_elements),
                })?
                .into_iter()
                .map(|e| Element::Binary(range.start + e.start..range.start + e.end))
                .collect(),
            (None, BYTES) => {
                let data = framed.header.pointer(&format!("/inputs/{i}/data"));
                json_elements(i, data, room).ok_or_else(|| too_many_elements(max_elements))?
            }
            _ => Vec::new(),
        };
        elements_read += elements.len();
        read.push(Input {
            datatype,
            binary,
            elements,
        });
    }
    if cursor != framed.binary.len() {
        return Err(malformed(format!(
            "{} bytes follow the last tensor's binary data",
            framed.binary.len() - cursor
        )));
    }
    Ok(read)
}

/// The elements of a JSON `BYTES` input's `data` (`inputs[i].data`), nested arrays
/// flattened; `None` when there are more than `room`.
fn json_elements(i: usize, data: Option<&Value>, room: usize) -> Option<Vec<Element>> {
    fn walk(value: &Value, pointer: String, out: &mut Vec<Element>, room: usize) -> Option<()> {
        if out.len() >= room && !value.is_array() {
            return None;
        }
        match value {
            Value::Array(items) => {
                for (k, item) in items.iter().enumerate() {
                    walk(item, format!("{pointer}/{k}"), out, room)?;
                }
            }
            Value::String(_) => out.push(Element::JsonString(pointer)),
            Value::Object(_) if is_b64_element(value) => {
                out.push(Element::JsonB64(format!("{pointer}/b64")));
            }
            _ => out.push(Element::Other(pointer)),
        }
        Some(())
    }
    let mut out = Vec::new();
    if let Some(data) = data {
        walk(data, format!("/inputs/{i}/data"), &mut out, room)?;
    }
    Some(out)
}

/// An image element of the request: where it is, how it is encoded, what it holds.
struct Located {
    /// Input index.
    input: usize,
    /// Element index within the input.
    element: usize,
    /// Whether the element holds the image as base64 text (JSON, or text in binary data).
    base64: bool,
    /// The slot as reported to the proxy.
    slot: ImageSlot,
}

/// Every element of every `BYTES` input as a slot, in input then element order.
///
/// Binary elements are raw bytes, or base64 when they are text that decodes to an image;
/// JSON elements are base64 (a JSON string that is not base64 is text: unusable).
fn locate(framed: &Framed<'_>, inputs: &[Input]) -> Vec<Located> {
    let mut located = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        for (k, element) in input.elements.iter().enumerate() {
            let (base64, path, image) = match element {
                Element::Binary(range) => {
                    let raw = &framed.binary[range.clone()];
                    let path = format!("inputs[{i}].binary[{k}]");
                    match base64_image(raw) {
                        Some(image) if !looks_like_image(raw) => {
                            (true, path, SlotImage::Inline(image))
                        }
                        _ => (false, path, SlotImage::Inline(raw.to_vec())),
                    }
                }
                Element::JsonString(pointer) | Element::JsonB64(pointer) => {
                    let text = framed
                        .header
                        .pointer(pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let image = match decode_base64(text.trim(), || path_of(pointer)) {
                        Ok(bytes) => SlotImage::Inline(bytes),
                        Err(err) => SlotImage::Unusable(err.to_string()),
                    };
                    (true, path_of(pointer), image)
                }
                Element::Other(pointer) => (
                    true,
                    path_of(pointer),
                    SlotImage::Unusable(format!(
                        "{} is neither a base64 string nor {{\"b64\": …}}",
                        path_of(pointer)
                    )),
                ),
            };
            located.push(Located {
                input: i,
                element: k,
                base64,
                slot: ImageSlot {
                    index: located.len(),
                    path,
                    image,
                },
            });
        }
    }
    located
}

/// The image in base64 text, if the text is base64 of something that looks like an image.
fn base64_image(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    decode_base64(text.trim(), String::new)
        .ok()
        .filter(|bytes| looks_like_image(bytes))
}

/// `/inputs/0/data/1/b64` → `inputs[0].data[1].b64`.
fn path_of(pointer: &str) -> String {
    let mut path = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.chars().all(|c| c.is_ascii_digit()) {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    path
}

/// Reads an `infer` request: see [`super::Protocol::parse_backend_request`].
///
/// Request-level errors: another path, a bad `Inference-Header-Content-Length`, a header that
/// is not JSON, binary data that does not add up, no `BYTES` input, a `shape` that does not
/// match the elements, a bad `top_k`, an output other than `labels` and `scores`. Every
/// element of the image input — the input of the first recognisable image, else the first
/// `BYTES` input — is an image (raw bytes, or base64); an element that is not base64 where
/// base64 is required is a per-image problem, which the renderer turns into a request error.
pub fn parse_backend_request(
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BackendRequest, ProtocolError> {
    let (model, version) = model_of(path).ok_or_else(|| ProtocolError::UnsupportedOperation {
        found: format!("path `{}`", path.split('?').next().unwrap_or_default()),
        expected: "`POST /v2/models/{model}[/versions/{version}]/infer`",
    })?;
    let framed = frame(headers, body)?;
    let inputs = read_inputs(&framed)?;
    // The input holding the first recognisable image, else the first BYTES input.
    let i = locate(&framed, &inputs)
        .iter()
        .find(|located| located.slot.bytes().is_some_and(looks_like_image))
        .map(|located| located.input)
        .or_else(|| inputs.iter().position(|input| input.datatype == BYTES))
        .ok_or(ProtocolError::MissingField {
            path: "inputs[] of datatype BYTES (encoded images)".to_owned(),
        })?;
    let input = &inputs[i];
    let header = header_of(&framed.header);
    let declared = header
        .inputs
        .ok()
        .and_then(|inputs| inputs.get(i))
        .and_then(Field::ok);
    if let Some(shape) = declared.and_then(|declared| declared.shape.value()) {
        let count = shape
            .as_array()
            .and_then(|dims| dims.iter().map(Value::as_u64).product::<Option<u64>>());
        if count != u64::try_from(input.elements.len()).ok() {
            return Err(ProtocolError::InvalidValue {
                path: format!("inputs[{i}].shape"),
                expected: "dimensions whose product is the number of elements sent",
                got: format!("{} for {} elements", describe(shape), input.elements.len()),
            });
        }
    }
    let parameters = header.parameters.ok();
    let top_k = match parameters.and_then(|p| p.top_k.value()) {
        None | Some(Value::Null) => DEFAULT_TOP_K,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| ProtocolError::InvalidValue {
                path: "parameters.top_k".to_owned(),
                expected: "a positive integer",
                got: describe(value),
            })?,
    };
    let binary_default = parameters
        .and_then(|p| p.binary_data_output.ok().copied())
        .unwrap_or(false);
    let outputs = requested_outputs(&header.outputs, binary_default)?;
    let images = input
        .elements
        .iter()
        .map(|element| {
            let bytes = match element {
                Element::Binary(range) => {
                    let raw = &framed.binary[range.clone()];
                    if looks_like_image(raw) {
                        raw.to_vec()
                    } else {
                        base64_image(raw).unwrap_or_else(|| raw.to_vec())
                    }
                }
                Element::JsonString(pointer) | Element::JsonB64(pointer) => {
                    let text = framed
                        .header
                        .pointer(pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    decode_base64(text.trim(), || path_of(pointer))?
                }
                Element::Other(pointer) => {
                    return Err(ImageProblem::Request(ProtocolError::InvalidValue {
                        path: path_of(pointer),
                        expected: "a base64 string or {\"b64\": base64 string}",
                        got: "another JSON value".to_owned(),
                    }));
                }
            };
            Ok(BackendImage {
                bytes,
                max_labels: top_k,
                min_score: 0.0,
            })
        })
        .collect();
    Ok(BackendRequest {
        images,
        reply: super::Reply::KServe(Reply {
            model: model.to_owned(),
            version: version.map(str::to_owned),
            id: header.id.text().map(str::to_owned),
            outputs,
        }),
    })
}

/// The outputs a request asks for: `outputs[].name` (only `labels`, `scores`) with
/// `parameters.binary_data`, else `binary_default`; both outputs when none are named.
fn requested_outputs(
    outputs: &Field<Vec<Field<RequestOutput<'_>>>>,
    binary_default: bool,
) -> Result<Vec<RequestedOutput>, ProtocolError> {
    let named = match outputs {
        Field::Absent | Field::Wrong(Value::Null) => Vec::new(),
        Field::Is(outputs) => outputs
            .iter()
            .enumerate()
            .map(|(j, output)| {
                let output = output.ok();
                let name = output.map(|o| &o.name);
                match name.and_then(Field::text) {
                    Some(name @ (LABELS_OUTPUT | SCORES_OUTPUT)) => Ok(RequestedOutput {
                        name: name.to_owned(),
                        binary: output
                            .and_then(|o| o.parameters.ok())
                            .and_then(|p| p.binary_data.ok().copied())
                            .unwrap_or(binary_default),
                    }),
                    _ => Err(ProtocolError::InvalidValue {
                        path: format!("outputs[{j}].name"),
                        expected: "`labels` or `scores`",
                        got: describe(&name.map_or(Value::Null, Field::as_sent)),
                    }),
                }
            })
            .collect::<Result<_, _>>()?,
        Field::Wrong(other) => {
            return Err(ProtocolError::InvalidValue {
                path: "outputs".to_owned(),
                expected: "an array",
                got: describe(other),
            });
        }
    };
    if !named.is_empty() {
        return Ok(named);
    }
    Ok([LABELS_OUTPUT, SCORES_OUTPUT]
        .into_iter()
        .map(|name| RequestedOutput {
            name: name.to_owned(),
            binary: binary_default,
        })
        .collect())
}

/// Renders the answer to a batch: one row per image in `labels` and `scores`.
///
/// KServe has no per-image errors: the first failed image fails the request (400 for the
/// client's images, a logged generic 500 for ours). Rows shorter than the longest are padded
/// with empty labels scoring 0 (tensors are rectangular).
pub fn render_backend_response(
    reply: &Reply,
    results: Vec<Result<Answer, ImageProblem>>,
) -> BackendResponse {
    let mut answers = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(answer) => answers.push(answer),
            Err(ImageProblem::Request(err)) => {
                return super::Protocol::KServe.render_backend_error(&err);
            }
            Err(problem @ ImageProblem::Undecodable(_)) => {
                tracing::debug!(image = i, %problem, "image rejected");
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("image element {i}: {problem}"),
                );
            }
            Err(problem @ ImageProblem::Internal(_)) => {
                tracing::error!(image = i, %problem, "image failed");
                return internal_error();
            }
        }
    }
    let rows = answers.len();
    let width = answers.iter().map(|a| a.labels.len()).max().unwrap_or(0);
    let mut names = Vec::with_capacity(rows * width);
    let mut scores = Vec::with_capacity(rows * width);
    for answer in &answers {
        for k in 0..width {
            match answer.labels.get(k) {
                Some(label) => {
                    names.push(label.name.clone());
                    scores.push(label.score);
                }
                None => {
                    names.push(String::new());
                    scores.push(0.0);
                }
            }
        }
    }
    let default_outputs;
    let outputs = if reply.outputs.is_empty() {
        default_outputs = requested_outputs(&Field::Absent, false).unwrap_or_default();
        &default_outputs
    } else {
        &reply.outputs
    };
    let mut rendered = Vec::with_capacity(outputs.len());
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    for output in outputs {
        let (datatype, data, blob) = if output.name == LABELS_OUTPUT {
            let blob: Vec<u8> = names
                .iter()
                .flat_map(|n| bytes_element(n.as_bytes()))
                .collect();
            (BYTES, json!(names), blob)
        } else {
            let blob: Vec<u8> = scores.iter().flat_map(|s| s.to_le_bytes()).collect();
            let data: Vec<Value> = scores.iter().map(|s| super::wire_number(*s)).collect();
            ("FP32", Value::Array(data), blob)
        };
        let mut tensor = json!({
            "name": output.name,
            "datatype": datatype,
            "shape": [rows, width],
        });
        if output.binary {
            tensor["parameters"] = json!({"binary_data_size": blob.len()});
            blobs.push(blob);
        } else {
            tensor["data"] = data;
        }
        rendered.push(tensor);
    }
    let mut body = json!({
        "model_name": reply.model,
        "model_version": reply.version.as_deref().unwrap_or("1"),
        "outputs": rendered,
    });
    if let Some(id) = &reply.id {
        body["id"] = json!(id);
    }
    if blobs.is_empty() {
        return BackendResponse::json(StatusCode::OK, JSON_CONTENT_TYPE, Vec::new(), &body);
    }
    let header = body.to_string();
    let mut bytes = header.clone().into_bytes();
    blobs.iter().for_each(|blob| bytes.extend_from_slice(blob));
    BackendResponse {
        status: StatusCode::OK,
        headers: vec![
            ("content-type".to_owned(), BINARY_CONTENT_TYPE.to_owned()),
            (HEADER_LENGTH.to_owned(), header.len().to_string()),
        ],
        body: bytes,
    }
}

/// Whether a path (query ignored) belongs to the v2 protocol: `/v2` and everything under it
/// (health, metadata, `infer`, Triton's repository and statistics extensions). The proxy sends
/// those it does not compress to the KServe upstream untouched.
pub fn owns_path(path: &str) -> bool {
    let route = path.split('?').next().unwrap_or_default();
    route == "/v2" || route.starts_with("/v2/")
}

/// The name the local backend gives itself in the server metadata.
pub const SERVER_NAME: &str = "adacompress-backend";

/// The model platform the local backend reports (an ONNX classifier).
pub const PLATFORM: &str = "onnx";

/// The version the local backend lists for every model when the path names none.
pub const DEFAULT_VERSION: &str = "1";

/// `GET /v2/health/live`: 200 `{"live": true}` (Triton sends an empty 200; clients read only
/// the status).
pub fn render_live() -> BackendResponse {
    BackendResponse::json(
        StatusCode::OK,
        JSON_CONTENT_TYPE,
        Vec::new(),
        &json!({"live": true}),
    )
}

/// `GET /v2/health/ready`: 200 `{"ready": true}` (the backend serves once its model loaded).
pub fn render_ready() -> BackendResponse {
    BackendResponse::json(
        StatusCode::OK,
        JSON_CONTENT_TYPE,
        Vec::new(),
        &json!({"ready": true}),
    )
}

/// `GET /v2`: the server metadata, `{"name", "version", "extensions"}`; the extension is
/// Triton's binary tensor data, which `infer` honours.
pub fn render_server_metadata() -> BackendResponse {
    let body = json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    });
    BackendResponse::json(StatusCode::OK, JSON_CONTENT_TYPE, Vec::new(), &body)
}

/// `GET /v2/models/{model}[/versions/{version}]`: the model metadata, `{"name", "versions",
/// "platform", "inputs", "outputs"}`, each tensor `{"name", "datatype", "shape"}` with -1 for
/// a dimension of any size. Every name is served (one classifier): an image batch in, the
/// top-k labels and scores per image out.
pub fn render_model_metadata(model: &str, version: Option<&str>) -> BackendResponse {
    let tensor = |name: &str, datatype: &str, shape: Value| json!({"name": name, "datatype": datatype, "shape": shape});
    let body = json!({
        "name": model,
        "versions": [version.unwrap_or(DEFAULT_VERSION)],
        "platform": PLATFORM,
        "inputs": [tensor(IMAGE_INPUT, BYTES, json!([-1]))],
        "outputs": [
            tensor(LABELS_OUTPUT, BYTES, json!([-1, -1])),
            tensor(SCORES_OUTPUT, "FP32", json!([-1, -1])),
        ],
    });
    BackendResponse::json(StatusCode::OK, JSON_CONTENT_TYPE, Vec::new(), &body)
}

/// `GET /v2/models/{model}[/versions/{version}]/ready`: 200 `{"name", "ready": true}`.
pub fn render_model_ready(model: &str) -> BackendResponse {
    BackendResponse::json(
        StatusCode::OK,
        JSON_CONTENT_TYPE,
        Vec::new(),
        &json!({"name": model, "ready": true}),
    )
}

/// `{"error": message}`.
fn error_response(status: StatusCode, message: &str) -> BackendResponse {
    super::shape::render(
        super::Protocol::KServe,
        &ApiError::new(status, Kind::Name(""), message),
    )
}

/// The message of the generic 500 answer.
const INTERNAL_MESSAGE: &str = "internal error";

/// The generic 500 answer; the cause goes to the log, not to the client.
fn internal_error() -> BackendResponse {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
}

/// The image slots of a request: every image element of every `BYTES` input.
///
/// Errors when the body is not an `infer` request (a header that is not JSON, no `inputs`,
/// binary data that does not add up).
pub fn extract_images(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let framed = frame(headers, body)?;
    let inputs = read_inputs(&framed)?;
    Ok(locate(&framed, &inputs)
        .into_iter()
        .map(|located| located.slot)
        .collect())
}

/// The request with the given image elements replaced: see
/// [`super::Protocol::replace_images`].
///
/// Binary elements get a new length prefix and the input a new `binary_data_size`; JSON
/// elements get new base64 (as a string or in `{"b64"}`, as they were). With the binary-data
/// extension the new `inference-header-content-length` is returned. With no replacement the
/// body is returned as it was.
pub fn replace_images(
    headers: &HeaderMap,
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Rewritten, ProtocolError> {
    if replacements.is_empty() {
        return Ok(Rewritten::body(body.to_vec()));
    }
    let framed = frame(headers, body)?;
    let inputs = read_inputs(&framed)?;
    let located = locate(&framed, &inputs);
    // (input, element) → new bytes, as they go on the wire (raw or base64).
    let mut chosen: Vec<(usize, usize, &Located, &[u8])> = Vec::new();
    for (index, bytes) in replacements {
        let target = located.get(*index).ok_or(ProtocolError::NoSuchSlot {
            index: *index,
            count: located.len(),
        })?;
        if let SlotImage::Unusable(why) = &target.slot.image {
            return Err(ProtocolError::NotReplaceable {
                index: *index,
                path: target.slot.path.clone(),
                reason: why.clone(),
            });
        }
        chosen.retain(|(_, _, other, _)| other.slot.index != *index);
        chosen.push((target.input, target.element, target, bytes));
    }
    let mut header = framed.header.clone();
    let encoded = |target: &Located, bytes: &[u8]| {
        if target.base64 {
            encode_base64(bytes).into_bytes()
        } else {
            bytes.to_vec()
        }
    };
    for (_, _, target, bytes) in &chosen {
        let element = &inputs[target.input].elements[target.element];
        let pointer = match element {
            Element::JsonString(pointer) | Element::JsonB64(pointer) => pointer,
            Element::Binary(_) | Element::Other(_) => continue,
        };
        let text = String::from_utf8_lossy(&encoded(target, bytes)).into_owned();
        let value = header
            .pointer_mut(pointer)
            .ok_or_else(|| ProtocolError::NotReplaceable {
                index: target.slot.index,
                path: target.slot.path.clone(),
                reason: format!("no value at {pointer}"),
            })?;
        *value = Value::String(text);
    }
    let mut binary = Vec::with_capacity(framed.binary.len());
    for (i, input) in inputs.iter().enumerate() {
        let Some(range) = &input.binary else {
            continue;
        };
        let replaced: Vec<_> = chosen.iter().filter(|(input, ..)| *input == i).collect();
        if replaced.is_empty() {
            binary.extend_from_slice(&framed.binary[range.clone()]);
            continue;
        }
        let start = binary.len();
        for (k, element) in input.elements.iter().enumerate() {
            let Element::Binary(data) = element else {
                continue;
            };
            match replaced.iter().find(|(_, element, ..)| *element == k) {
                Some((_, _, target, bytes)) => {
                    binary.extend_from_slice(&bytes_element(&encoded(target, bytes)));
                }
                None => binary.extend_from_slice(&framed.binary[data.start - 4..data.end]),
            }
        }
        header["inputs"][i]["parameters"]["binary_data_size"] = json!(binary.len() - start);
    }
    let header = header.to_string();
    let mut out = header.clone().into_bytes();
    out.extend_from_slice(&binary);
    let mut rewritten = Rewritten::body(out);
    if framed.has_length_header {
        rewritten
            .headers
            .push((HEADER_LENGTH.to_owned(), header.len().to_string()));
    }
    Ok(rewritten)
}

/// The KServe v2 / Triton adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::KServe`].
#[derive(Debug, Clone, Copy)]
pub struct KServe;

impl Api for KServe {
    fn name(&self) -> &'static str {
        "kserve"
    }

    fn content_type(&self) -> &'static str {
        JSON_CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        (json!({ "error": err.message }), Vec::new())
    }

    fn proxy_kind(&self, _status: StatusCode) -> Kind<'static> {
        Kind::Name("")
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

    /// The request for the top `max_labels` labels of one image, the image as binary data: see
    /// [`super::Protocol::client_request`].
    fn client_request(&self, image: &[u8], max_labels: usize) -> ClientRequest {
        let blob = bytes_element(image);
        let header = json!({
            "inputs": [{
                "name": IMAGE_INPUT,
                "shape": [1],
                "datatype": BYTES,
                "parameters": {"binary_data_size": blob.len()},
            }],
            "outputs": [{"name": LABELS_OUTPUT}, {"name": SCORES_OUTPUT}],
            "parameters": {"top_k": max_labels.max(1)},
        })
        .to_string();
        ClientRequest {
            path_and_query: format!("/v2/models/{DEFAULT_MODEL}/infer"),
            headers: vec![
                ("Content-Type".to_owned(), BINARY_CONTENT_TYPE.to_owned()),
                (
                    "Inference-Header-Content-Length".to_owned(),
                    header.len().to_string(),
                ),
            ],
            body: [header.as_bytes(), &blob].concat(),
        }
    }

    /// The answer for the first (for a client request: the only) image.
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        parse_answers(status, body)?
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(ProtocolError::UnexpectedAnswer {
                    detail: "the `labels` output has no rows".to_owned(),
                })
            })
    }

    fn parse_answers(
        &self,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        parse_answers(status, body)
    }

    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        extract_images(req.headers, req.body)
    }

    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        replace_images(req.headers, req.body, replacements)
    }

    fn grpc(&self) -> Option<&'static dyn GrpcApi> {
        Some(&KServe)
    }
}

impl Emulated for KServe {
    fn parse_backend_request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        parse_backend_request(path, headers, body)
    }

    fn render_backend_response(
        &self,
        reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        match reply {
            super::Reply::KServe(reply) => render_backend_response(reply, results),
            _ => render_backend_response(&Reply::default(), results),
        }
    }

    /// `{"error": "message"}`: 400 for the client's mistakes, 404 for another path, 503 when
    /// unavailable; ours a generic 500.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let status = match class {
            ErrorClass::BadRequest(_) => StatusCode::BAD_REQUEST,
            ErrorClass::UnsupportedOperation => StatusCode::NOT_FOUND,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => {
                return ErrorKind::server_error(Kind::Name(""), INTERNAL_MESSAGE);
            }
        };
        ErrorKind::new(status, Kind::Name(""))
    }

    /// 429 `{"error": …}`: see [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "the server is saturated; retry later",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::protocol::{
        AnswerCase, Protocol, ProxyRequest, check_answer_cases, fixture, json_of,
    };

    const JPEG_A: &[u8] = b"\xff\xd8\xff\xe0 first image \xff\xd9";
    const PNG_B: &[u8] = b"\x89PNG\r\n\x1a\n second image";

    fn length_header(length: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            "Inference-Header-Content-Length",
            HeaderValue::from_str(&length.to_string()).unwrap(),
        );
        headers
    }

    /// Health, readiness and metadata in the v2 protocol's shapes, and which paths are the
    /// protocol's own.
    #[test]
    fn health_and_metadata_answers() {
        let body = |r: BackendResponse| -> Value {
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.headers[0].1, JSON_CONTENT_TYPE);
            serde_json::from_slice(&r.body).unwrap()
        };
        // (answer, expected)
        let cases: Vec<(BackendResponse, Value)> = vec![
            (render_live(), json!({"live": true})),
            (render_ready(), json!({"ready": true})),
            (render_model_ready("m"), json!({"name": "m", "ready": true})),
            (
                render_server_metadata(),
                json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION"),
                       "extensions": ["binary_tensor_data"]}),
            ),
            (
                render_model_metadata("resnet", Some("2")),
                json!({"name": "resnet", "versions": ["2"], "platform": "onnx",
                       "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                       "outputs": [{"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                                   {"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]}),
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(body(answer), expected);
        }
        assert_eq!(
            body(render_model_metadata("resnet", None))["versions"],
            json!([DEFAULT_VERSION])
        );
        // (path, the protocol's own)
        for (path, owned) in [
            ("/v2", true),
            ("/v2?x=1", true),
            ("/v2/health/live", true),
            ("/v2/models/m/versions/1/ready", true),
            ("/v2x", false),
            ("/v1/images:annotate", false),
            ("/", false),
        ] {
            assert_eq!(owns_path(path), owned, "{path}");
        }
    }

    /// A binary request: a text BYTES input, an FP32 input, then two images, all binary.
    fn mixed_binary_request() -> (HeaderMap, Vec<u8>) {
        let prompt = bytes_element(b"a photo of");
        let floats: Vec<u8> = [0.5f32, -1.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let images = [bytes_element(JPEG_A), bytes_element(PNG_B)].concat();
        let header = json!({
            "id": "req-42",
            "inputs": [
                {"name": "prompt", "shape": [1], "datatype": "BYTES",
                 "parameters": {"binary_data_size": prompt.len()}},
                {"name": "bias", "shape": [2], "datatype": "FP32",
                 "parameters": {"binary_data_size": floats.len()}},
                {"name": "image", "shape": [2, 1], "datatype": "BYTES",
                 "parameters": {"binary_data_size": images.len(), "x-custom": true}},
            ],
            "outputs": [{"name": "labels", "parameters": {"binary_data": true}},
                        {"name": "scores"}],
            "parameters": {"top_k": 3, "sequence_id": 9},
        })
        .to_string();
        let body = [header.as_bytes(), &prompt, &floats, &images].concat();
        (length_header(header.len()), body)
    }

    #[test]
    fn model_of_reads_infer_paths() {
        let cases = [
            ("/v2/models/resnet/infer", Some(("resnet", None))),
            (
                "/v2/models/resnet/versions/3/infer?x=1",
                Some(("resnet", Some("3"))),
            ),
            ("/v2/models/resnet/ready", None),
            ("/v2/models//infer", None),
            ("/v2/models/a/b/infer", None),
            ("/v1/models/resnet:predict", None),
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
                "json outputs",
                fixture("kserve_answer.json"),
                200,
                Ok((Some("tabby"), 3)),
            ),
            (
                "unknown model",
                fixture("kserve_error.json"),
                400,
                Err("upstream answered HTTP 400 Bad Request: Request for unknown model"),
            ),
            (
                "plain 502",
                b"upstream connect error".to_vec(),
                502,
                Err("upstream answered HTTP 502: upstream connect error"),
            ),
            (
                "no labels",
                br#"{"outputs": [{"name": "probs", "datatype": "FP32", "shape": [1], "data": [1]}]}"#
                    .to_vec(),
                200,
                Err("no `labels` output"),
            ),
            (
                "shape mismatch",
                br#"{"outputs": [{"name": "labels", "datatype": "BYTES", "shape": [1, 3], "data": ["a"]}]}"#
                    .to_vec(),
                200,
                Err("outputs[0].shape [1, 3] does not match its 1 elements"),
            ),
            (
                "not json",
                b"\x00\x01".to_vec(),
                200,
                Err("answer body is not valid JSON"),
            ),
        ];
        check_answer_cases(cases, |status, body| KServe.parse_answer(status, body));
        let rows = parse_answers(200, &fixture("kserve_answer.json")).unwrap();
        assert_eq!(rows.len(), 2);
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.top1(), Some("golden retriever"));
        assert_eq!(second.labels.len(), 2, "padding dropped");
        assert!((second.labels[0].score - 0.871).abs() < 1e-6);
    }

    #[test]
    fn client_request_round_trips_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let request = Protocol::KServe.client_request(&image, 7);
        assert_eq!(request.path_and_query, "/v2/models/classifier/infer");
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let length: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        let header = json_of(&request.body[..length]);
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 3004);
        assert_eq!(&request.body[length..length + 4], &3000u32.to_le_bytes());
        let parsed =
            parse_backend_request(&request.path_and_query, &headers, &request.body).unwrap();
        let got = parsed.images[0].as_ref().unwrap();
        assert_eq!(got.bytes, image);
        assert_eq!(got.max_labels, 7);
        match &parsed.reply {
            crate::protocol::Reply::KServe(reply) => {
                assert_eq!(reply.model, "classifier");
                assert_eq!(reply.outputs.len(), 2);
                assert!(reply.outputs.iter().all(|o| !o.binary));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backend_reads_json_and_binary_batches() {
        let (headers, body) = mixed_binary_request();
        let parsed = parse_backend_request("/v2/models/m/versions/2/infer", &headers, &body);
        // The prompt comes first but holds no image: the image input is classified.
        let parsed = parsed.unwrap();
        let images: Vec<&[u8]> = parsed
            .images
            .iter()
            .map(|image| image.as_ref().unwrap().bytes.as_slice())
            .collect();
        assert_eq!(images, [JPEG_A, PNG_B]);

        // Without any image, the first BYTES input is read (and the classifier refuses it).
        let text =
            br#"{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi there!"]}]}"#;
        let parsed = parse_backend_request("/v2/models/m/infer", &HeaderMap::new(), text).unwrap();
        assert!(parsed.images[0].is_err(), "text is not base64");

        let body = fixture("kserve_request_json.json");
        let parsed = parse_backend_request("/v2/models/m/infer", &HeaderMap::new(), &body).unwrap();
        assert_eq!(parsed.images.len(), 3);
        assert!(
            parsed.images[0]
                .as_ref()
                .unwrap()
                .bytes
                .starts_with(b"\xff\xd8\xff")
        );
        assert!(
            parsed.images[1]
                .as_ref()
                .unwrap()
                .bytes
                .starts_with(b"\xff\xd8\xff")
        );
        let err = parsed.images[2].as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("image is not valid base64 at inputs[0].data[2]"),
            "{err}"
        );
        match &parsed.reply {
            crate::protocol::Reply::KServe(reply) => {
                assert_eq!(reply.id.as_deref(), Some("batch-1"));
                assert_eq!(
                    reply.outputs,
                    [RequestedOutput {
                        name: "labels".to_owned(),
                        binary: true
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// (name, path, headers, body, status, message fragment)
    type ErrorCase = (&'static str, &'static str, HeaderMap, Vec<u8>, u16, String);

    #[test]
    fn request_errors_name_the_field() {
        let image = bytes_element(JPEG_A);
        let good = |extra: Value| {
            let mut header = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                "parameters": {"binary_data_size": image.len()}}]});
            if let Value::Object(extra) = extra {
                for (k, v) in extra {
                    header[k] = v;
                }
            }
            let header = header.to_string();
            (
                length_header(header.len()),
                [header.as_bytes(), &image].concat(),
            )
        };
        let (headers, body) = good(json!({}));
        let mut cases: Vec<ErrorCase> = vec![
            (
                "other path",
                "/v2/models/m/ready",
                headers.clone(),
                body.clone(),
                404,
                "unsupported operation: path `/v2/models/m/ready`".to_owned(),
            ),
            (
                "length past the end",
                "/v2/models/m/infer",
                length_header(body.len() + 1),
                body.clone(),
                400,
                format!(
                    "Inference-Header-Content-Length header must be a byte count no larger \
                     than the body, got \"{}\" for a body of {} bytes",
                    body.len() + 1,
                    body.len()
                ),
            ),
            (
                "missing the length header",
                "/v2/models/m/infer",
                HeaderMap::new(),
                body.clone(),
                400,
                "inference request header is not valid JSON".to_owned(),
            ),
            (
                "trailing bytes",
                "/v2/models/m/infer",
                headers.clone(),
                [&body[..], b"xx"].concat(),
                400,
                "request body is not valid KServe binary tensor data: 2 bytes follow the last \
                 tensor's binary data"
                    .to_owned(),
            ),
            (
                "no BYTES input",
                "/v2/models/m/infer",
                HeaderMap::new(),
                br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}"#
                    .to_vec(),
                400,
                "missing field inputs[] of datatype BYTES".to_owned(),
            ),
        ];
        let (h, b) = good(json!({"parameters": {"top_k": 0}}));
        cases.push((
            "top_k 0",
            "/v2/models/m/infer",
            h,
            b,
            400,
            "parameters.top_k must be a positive integer, got 0".to_owned(),
        ));
        let (h, b) = good(json!({"outputs": [{"name": "probabilities"}]}));
        cases.push((
            "unknown output",
            "/v2/models/m/infer",
            h,
            b,
            400,
            "outputs[0].name must be `labels` or `scores`, got \"probabilities\"".to_owned(),
        ));
        let truncated = [&body[..body.len() - 3]].concat();
        let header_len: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        cases.push((
            "short binary",
            "/v2/models/m/infer",
            length_header(header_len),
            truncated,
            400,
            "inputs[0] declares binary_data_size".to_owned(),
        ));
        let shape =
            br#"{"inputs": [{"name": "i", "shape": [2], "datatype": "BYTES", "data": ["AAAA"]}]}"#;
        cases.push((
            "shape",
            "/v2/models/m/infer",
            HeaderMap::new(),
            shape.to_vec(),
            400,
            "inputs[0].shape must be dimensions whose product is the number of elements sent, \
             got [2] for 1 elements"
                .to_owned(),
        ));
        for (name, path, headers, body, status, fragment) in cases {
            let err = parse_backend_request(path, &headers, &body).unwrap_err();
            assert!(err.to_string().contains(&fragment), "{name}: {err}");
            let rendered = crate::protocol::Protocol::KServe.render_backend_error(&err);
            assert_eq!(rendered.status.as_u16(), status, "{name}");
            let back = KServe.parse_answer(status, &rendered.body).unwrap_err();
            assert!(back.to_string().contains(&fragment), "{name}: {back}");
        }
    }

    #[test]
    fn rendered_answers_parse_back_in_json_and_binary() {
        let answers = [
            Ok(Answer::new(vec![
                Label {
                    name: "tabby".to_owned(),
                    score: 0.6,
                },
                Label {
                    name: "tiger cat".to_owned(),
                    score: 0.3,
                },
            ])),
            Ok(Answer::new(vec![Label {
                name: "golden retriever".to_owned(),
                score: 0.9,
            }])),
        ];
        let cloned = || {
            answers
                .iter()
                .map(|a: &Result<Answer, ImageProblem>| Ok(a.as_ref().unwrap().clone()))
                .collect::<Vec<_>>()
        };
        let plain = Reply {
            model: "m".to_owned(),
            version: None,
            id: Some("r1".to_owned()),
            outputs: Vec::new(),
        };
        let rendered = render_backend_response(&plain, cloned());
        assert_eq!(rendered.headers[0].1, "application/json");
        let doc = json_of(&rendered.body);
        assert_eq!(doc["model_name"], "m");
        assert_eq!(doc["model_version"], "1");
        assert_eq!(doc["id"], "r1");
        assert_eq!(
            doc["outputs"][0],
            json!({"name": "labels", "datatype": "BYTES", "shape": [2, 2],
                   "data": ["tabby", "tiger cat", "golden retriever", ""]})
        );
        assert_eq!(doc["outputs"][1]["data"], json!([0.6, 0.3, 0.9, 0.0]));

        for binary in [(true, true), (true, false), (false, true)] {
            let reply = Reply {
                outputs: vec![
                    RequestedOutput {
                        name: "scores".to_owned(),
                        binary: binary.0,
                    },
                    RequestedOutput {
                        name: "labels".to_owned(),
                        binary: binary.1,
                    },
                ],
                ..plain.clone()
            };
            let rendered = render_backend_response(&reply, cloned());
            let length: usize = rendered
                .headers
                .iter()
                .find(|(k, _)| k == HEADER_LENGTH)
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            assert!(json_of(&rendered.body[..length])["outputs"].is_array());
            let back = parse_answers(200, &rendered.body).unwrap();
            assert_eq!(back[0].as_ref().unwrap().top1(), Some("tabby"));
            let second = back[1].as_ref().unwrap();
            assert_eq!(second.labels.len(), 1);
            assert!((second.labels[0].score - 0.9).abs() < 1e-6);
        }

        let failed = render_backend_response(
            &plain,
            vec![
                Ok(Answer::default()),
                Err(ImageProblem::Undecodable("not an image".to_owned())),
            ],
        );
        assert_eq!(failed.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(&failed.body)["error"],
            "image element 1: image could not be decoded: not an image"
        );
        let internal =
            render_backend_response(&plain, vec![Err(ImageProblem::Internal("tract".into()))]);
        assert_eq!(json_of(&internal.body)["error"], "internal error");
        assert!(
            KServe
                .parse_answer(429, &KServe.render_throttled().body)
                .unwrap_err()
                .is_throttling()
        );
    }

    /// A binary request of `n` zero-length `BYTES` elements (4 bytes each on the wire).
    fn empty_elements(n: usize) -> (HeaderMap, Vec<u8>) {
        let header = json!({"inputs": [{
            "name": IMAGE_INPUT, "shape": [n], "datatype": BYTES,
            "parameters": {"binary_data_size": 4 * n},
        }]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.resize(body.len() + 4 * n, 0);
        (length_header(header.len()), body)
    }

    #[test]
    fn element_count_is_capped_before_any_slot_is_built() {
        let (headers, body) = empty_elements(MAX_ELEMENTS);
        assert_eq!(extract_images(&headers, &body).unwrap().len(), MAX_ELEMENTS);
        // 5 million elements is a 20 MB body; it is refused after MAX_ELEMENTS + 1.
        for n in [MAX_ELEMENTS + 1, 5_000_000] {
            let (headers, body) = empty_elements(n);
            let err = extract_images(&headers, &body).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtocolError::TooComplex {
                        limit: MAX_ELEMENTS,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("BYTES elements"), "{err}");
            let err = parse_backend_request("/v2/models/m/infer", &headers, &body).unwrap_err();
            assert!(matches!(err, ProtocolError::TooComplex { .. }), "{err}");
        }
        // The cap counts every input, JSON elements too.
        let strings: Vec<Value> = (0..=MAX_ELEMENTS).map(|_| json!("aGk=")).collect();
        let body = json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": BYTES, "data": ["aGk=", "aGk="]},
            {"name": "b", "shape": [strings.len()], "datatype": BYTES, "data": strings},
        ]})
        .to_string();
        let err = extract_images(&HeaderMap::new(), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ProtocolError::TooComplex { .. }), "{err}");
    }

    #[test]
    fn extract_lists_every_bytes_element() {
        let (headers, body) = mixed_binary_request();
        let slots = extract_images(&headers, &body).unwrap();
        let paths: Vec<&str> = slots.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "inputs[0].binary[0]",
                "inputs[2].binary[0]",
                "inputs[2].binary[1]"
            ],
            "the FP32 input is no slot"
        );
        // The prompt is a slot the proxy will fail to decode and leave alone.
        assert_eq!(slots[0].bytes(), Some(&b"a photo of"[..]));
        assert_eq!(slots[1].bytes(), Some(JPEG_A));
        assert_eq!(slots[2].bytes(), Some(PNG_B));
        assert_eq!(slots.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2]);

        let slots =
            extract_images(&HeaderMap::new(), &fixture("kserve_request_json.json")).unwrap();
        let paths: Vec<&str> = slots.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "inputs[0].data[0].b64",
                "inputs[0].data[1]",
                "inputs[0].data[2].b64"
            ]
        );
        assert!(slots[0].bytes().unwrap().starts_with(b"\xff\xd8\xff"));
        assert!(slots[1].bytes().unwrap().starts_with(b"\xff\xd8\xff"));
        assert!(matches!(&slots[2].image, SlotImage::Unusable(why) if why.contains("base64")));

        // Base64 text in binary data is read as base64; a JSON string that is not base64 is
        // text; a number in BYTES data is neither.
        let b64 = encode_base64(JPEG_A);
        let text = bytes_element(b64.as_bytes());
        let header = json!({"inputs": [
            {"name": "a", "shape": [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": text.len()}},
            {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["hi there!", 7]},
        ]})
        .to_string();
        let body = [header.as_bytes(), &text].concat();
        let slots = extract_images(&length_header(header.len()), &body).unwrap();
        assert_eq!(slots[0].bytes(), Some(JPEG_A));
        assert!(matches!(&slots[1].image, SlotImage::Unusable(why) if why.contains("base64")));
        assert_eq!(
            slots[2].image,
            SlotImage::Unusable(
                "inputs[1].data[1] is neither a base64 string nor {\"b64\": …}".to_owned()
            )
        );
        let replaced =
            replace_images(&length_header(header.len()), &body, &[(0, PNG_B.to_vec())]).unwrap();
        let length: usize = replaced.headers[0].1.parse().unwrap();
        assert_eq!(
            replaced.body[length + 4..],
            *encode_base64(PNG_B).as_bytes(),
            "written back as base64 text"
        );
        assert!(extract_images(&HeaderMap::new(), b"{\"inputs\": 1}").is_err());
    }

    #[test]
    fn replace_binary_rewrites_sizes_and_keeps_other_tensors() {
        let (headers, body) = mixed_binary_request();
        let req = ProxyRequest {
            path_and_query: "/v2/models/m/infer",
            headers: &headers,
            body: &body,
        };
        let smaller = b"\xff\xd8\xff tiny".to_vec();
        let rewritten = Protocol::KServe
            .replace_images(&req, &[(2, smaller.clone())])
            .unwrap();
        let (name, value) = &rewritten.headers[0];
        assert_eq!(name, "inference-header-content-length");
        let length: usize = value.parse().unwrap();
        let header = json_of(&rewritten.body[..length]);
        let old_length: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        let mut expected = json_of(&body[..old_length]);
        let new_size = bytes_element(JPEG_A).len() + bytes_element(&smaller).len();
        expected["inputs"][2]["parameters"]["binary_data_size"] = json!(new_size);
        assert_eq!(
            header, expected,
            "only the size changed, unknown fields kept"
        );
        // The prompt and the floats keep their bytes; image 0 keeps its bytes and prefix.
        let old_binary = &body[old_length..];
        let new_binary = &rewritten.body[length..];
        let untouched = bytes_element(b"a photo of").len() + 8 + bytes_element(JPEG_A).len();
        assert_eq!(new_binary[..untouched], old_binary[..untouched]);
        assert_eq!(new_binary[untouched..], bytes_element(&smaller)[..]);

        let mut new_headers = headers.clone();
        new_headers.insert(HEADER_LENGTH, HeaderValue::from_str(value).unwrap());
        let slots = extract_images(&new_headers, &rewritten.body).unwrap();
        assert_eq!(slots[0].bytes(), Some(&b"a photo of"[..]));
        assert_eq!(slots[1].bytes(), Some(JPEG_A));
        assert_eq!(slots[2].bytes(), Some(&smaller[..]));
        let parsed =
            parse_backend_request("/v2/models/m/infer", &new_headers, &rewritten.body).unwrap();
        let second = parsed.images[1].as_ref().unwrap();
        assert_eq!(
            second.bytes, smaller,
            "the backend reads the rewritten body"
        );

        let unchanged = replace_images(&headers, &body, &[]).unwrap();
        assert_eq!(unchanged.body, body);
        assert!(unchanged.headers.is_empty());
        assert_eq!(
            replace_images(&headers, &body, &[(3, b"x".to_vec())]).unwrap_err(),
            ProtocolError::NoSuchSlot { index: 3, count: 3 }
        );
    }

    #[test]
    fn replace_json_keeps_the_encoding_of_each_element() {
        let body = fixture("kserve_request_json.json");
        let headers = HeaderMap::new();
        let new = b"\xff\xd8\xff new".to_vec();
        let rewritten =
            replace_images(&headers, &body, &[(0, new.clone()), (1, new.clone())]).unwrap();
        assert!(
            rewritten.headers.is_empty(),
            "no binary data, no length header"
        );
        let mut expected = json_of(&body);
        expected["inputs"][0]["data"][0]["b64"] = json!(encode_base64(&new));
        expected["inputs"][0]["data"][1] = json!(encode_base64(&new));
        assert_eq!(json_of(&rewritten.body), expected);
        let slots = extract_images(&headers, &rewritten.body).unwrap();
        assert_eq!(slots[0].bytes(), Some(&new[..]));
        assert_eq!(slots[1].bytes(), Some(&new[..]));
        let err = replace_images(&headers, &body, &[(2, new)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image slot 2 (inputs[0].data[2].b64) cannot be replaced: "),
            "{err}"
        );
    }
}
