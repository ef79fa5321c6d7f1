//! Cloud vision wire formats: one file per API, one [`Protocol`] enum in front of them.
//!
//! Every API is seen from three sides, and each side has its own functions:
//!
//! | side | what it does | functions |
//! |---|---|---|
//! | vision client (training, eval) | send one image, read the labels | [`Protocol::client_request`], [`Protocol::parse_answer`] |
//! | local backend (axum + ImageNet model) | read the images out of a request, answer in the API's shape | [`Protocol::parse_backend_request`], [`Protocol::render_backend_response`], [`Protocol::render_backend_error`], [`Protocol::render_throttled`] |
//! | proxy | find the images in a client's request, swap in re-encoded bytes | [`Protocol::recognize`], [`Protocol::extract_images`], [`Protocol::replace_images`] |
//!
//! Answers are normalised into one [`Answer`]: labels sorted by descending score, every score in
//! `0..=1` (Rekognition's, Face++'s and Azure's percentages or fractions are scaled at the edge);
//! face detectors answer [`Region`]s instead.
//!
//! Errors have two levels, because Google Vision batches images and reports failures per image:
//! a [`ProtocolError`] is about the whole request or answer; an [`ImageProblem`] is about one
//! image inside an otherwise fine request. The single-image APIs turn an image problem into
//! their request-level error shape, and so does KServe, which has no per-image errors. A
//! request-level error is classified once, by who caused it (the client, the service, us) and
//! which kind it is ([`ProtocolError::class`], an [`ErrorClass`]); each API only maps the
//! classes to its status and kind ([`Emulated::error_kind`]), and [`shape::backend_error`]
//! renders them all.
//!
//! The backend remembers what a renderer needs from the request (Face++'s operation, KServe's
//! model name and requested outputs, ...) in [`BackendRequest::reply`].
//!
//! The API-specific details (field names, limits, error shapes) live in one file per API:
//! [`google`], [`rekognition`], [`baidu`], [`facepp`], [`azure`], [`kserve`], [`torchserve`];
//! [`multipart`] reads and rewrites `multipart/form-data` bodies for Face++ and TorchServe;
//! `one_image` holds what the one-image APIs share; [`shape`] renders every API's error
//! (each API's body and kinds come from its [`Api`] impl);
//! `wire` holds `wire::Field`, the field type of the typed wire structs; `protobuf` reads
//! and rewrites protobuf messages on the wire for the gRPC forms ([`GrpcApi`]).
//! This file holds the shared types and small shared helpers.
//!
//! JSON is read through typed wire structs: each API file declares `#[derive(Deserialize)]`
//! structs for the requests it reads and the answers it parses, with the vendor's field names,
//! next to its adapter. They are read from the parsed `serde_json::Value` and only read it:
//! the proxy rewrites that `Value`, so every field the structs do not name goes up as the
//! client sent it (`tests/protocols.rs` checks this for every JSON API).
//!
//! # Adding an API
//!
//! An API is one file that implements two traits, plus its line in the registry. The traits
//! are [`Api`] (what the proxy and the vision client need: recognise, extract, replace,
//! parse answers, build a client request, write errors) and [`Emulated`] (what the local
//! backend needs: parse, render, throttle); [`Protocol`] is only the registry in front of
//! them, and its methods delegate to them.
//!
//! In its own file, `src/protocol/<api>.rs`, a unit struct (`pub struct Google;`) with:
//! - [`Api`]: `name` (its CLI, config and serde name), `content_type`, `error_body` (its error
//!   shape, built from a [`shape::ApiError`]), `proxy_kind` (its error kind for each status
//!   the proxy answers), `max_image_bytes`, `max_images` (default: one image), `recognizes`
//!   (the `POST` routes it compresses), `owns` (its other routes), `client_request`,
//!   `parse_answer`, `parse_answers` (default: `parse_answer` as a one-element list; batch
//!   APIs override it), `extract_images` (the [`ImageSlot`]s, in order) and `replace_images`
//!   (the body with new bytes in the given slots, every other byte kept; a [`Rewritten`]
//!   with headers when one must change too), and `grpc` (default: none) for an API with a
//!   gRPC form;
//! - [`Emulated`]: `parse_backend_request` (a [`BackendRequest`]), `render_backend_response`,
//!   `error_kind` (its table: a [`shape::ErrorKind`] for each [`ErrorClass`], which
//!   [`shape::backend_error`] renders), `error_detail` (default: the error's message; for an
//!   API that words a message otherwise) and `render_throttled` (through [`shape::render`]);
//! - wire structs: `#[derive(Deserialize)]` structs for the JSON it reads (request fields the
//!   backend or proxy needs, answer fields labels are parsed from), vendor field names via
//!   `rename` / `rename_all`, every field a `wire::Field` with `#[serde(default)]` (absent,
//!   of the expected type, or the value as sent, so errors can quote it), strings borrowed
//!   (`Field<Cow<'a, str>>`, `#[serde(borrow)]`) and each struct listed in `wire_object!`;
//!   read a request with `read_request` (refuses a body that is not an object) and an answer
//!   with `read_answer`. Rewrites stay on the `serde_json::Value`, never on the structs, so
//!   no unknown field is lost; do not walk a `Value` by key by hand;
//! - tests: answer fixtures in `tests/fixtures/protocol/` run by `check_answer_cases`.
//!
//! A method whose body only its impl needs is written in the impl, and the adapter's unit
//! tests call it through the struct (`Baidu.parse_answer(status, body)`); a free function
//! of the adapter holds what its other code or other modules call too (`extract_images` on
//! the body alone, `model_of`, ...), and the impl calls it.
//!
//! A one-image API reports where its image is as a `one_image::Found` of its own inline shape
//! and uses `Found::inline` (backend side), `Found::slot` (proxy side), `only_result` (in its
//! renderer) and `single_replacement` / `slot_not_replaceable` (in `replace_images`).
//!
//! The registry, here (the compiler points at each `match`, and unit tests check `ALL` and
//! `PROTOCOL_NAMES`):
//! - a [`Protocol`] variant with its serde name, its place in [`Protocol::ALL`] and its arm
//!   in [`Protocol::api`] and [`Protocol::emulated`]; its name in [`PROTOCOL_NAMES`];
//! - a [`Reply`] variant only if its renderer needs something from the request (Face++'s
//!   operation, KServe's model name and outputs, ...).
//!
//! Outside `src/protocol`:
//! - `src/backend/mod.rs`: its routes (`serve_as`; *not checked*);
//! - tests: its place in `position` in `tests/protocols.rs` (the round trip over every
//!   protocol), `expected_labels` there, its seeds in `request_seeds` in `tests/fuzz.rs` and
//!   its error shape in `tests/errors.rs`;
//! - a gRPC form only: [`GrpcApi`] in `src/protocol/<api>/grpc.rs` (a child module of
//!   its file), returned by its `Api::grpc`: `method` (the gRPC paths it claims, and
//!   which one it compresses), `extract_images` and `replace_images` on the unframed
//!   message (through the shared `protobuf` helpers, so every other byte survives) and
//!   `parse_answers`; the proxy's transport (`src/proxy/grpc.rs`) needs no change. The
//!   backend's emulation is in `src/backend/grpc.rs`.

mod api;
pub mod azure;
pub mod baidu;
pub mod facepp;
pub mod google;
pub mod kserve;
pub mod multipart;
mod one_image;
pub(crate) mod protobuf;
pub mod rekognition;
pub mod shape;
pub mod torchserve;
mod wire;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use api::{Api, Emulated, GrpcApi};

/// One label of an answer, e.g. `golden retriever` at `0.93`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The label as the service spells it (Google `description`, Rekognition `Name`).
    pub name: String,
    /// Confidence in `0..=1`, whatever scale the service uses on the wire.
    pub score: f32,
}

/// What a vision service said about one image.
///
/// `labels` is sorted by descending score when built by [`Answer::new`] or by a parser of this
/// module; code that fills the field by hand should go through [`Answer::new`] to keep that true.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Labels, best first.
    pub labels: Vec<Label>,
    /// Detected regions (faces), for detection APIs; empty for classifiers. Two detection
    /// answers agree when they have the same number of regions and every region of one is
    /// matched by a region of the other at IoU ≥ 0.5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
}

/// A detected region in pixels of the image the service saw, e.g. a face rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
    /// Confidence in `0..=1`.
    pub score: f32,
}

impl Region {
    /// Intersection over union of two regions in `0..=1` (0 when either is empty).
    pub fn iou(&self, other: &Region) -> f32 {
        let x0 = self.left.max(other.left);
        let y0 = self.top.max(other.top);
        let x1 = (self.left + self.width).min(other.left + other.width);
        let y1 = (self.top + self.height).min(other.top + other.height);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.width * self.height + other.width * other.height - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

impl Answer {
    /// Builds an answer, sorting the labels by descending score (ties keep their order).
    pub fn new(mut labels: Vec<Label>) -> Self {
        labels.sort_by(|a, b| b.score.total_cmp(&a.score));
        Answer {
            labels,
            regions: Vec::new(),
        }
    }

    /// The best label's name, if there is any label.
    pub fn top1(&self) -> Option<&str> {
        self.labels.first().map(|label| label.name.as_str())
    }

    /// Whether one of the `k` best labels is named exactly `name` (case-sensitive).
    pub fn top_k_contains(&self, name: &str, k: usize) -> bool {
        self.labels.iter().take(k).any(|label| label.name == name)
    }

    /// Keeps the labels scoring at least `min_score`, at most `max_labels` of them, best first.
    ///
    /// The renderers of this module render exactly the labels they are given; the backend
    /// applies the per-image limits of the request with this (or with [`BackendImage::limit`]).
    pub fn limited(self, max_labels: usize, min_score: f32) -> Self {
        let self_regions = self.regions;
        let mut answer = Answer::new(self.labels);
        answer.labels.retain(|label| label.score >= min_score);
        answer.labels.truncate(max_labels);
        answer.regions = self_regions;
        answer
    }

    /// An answer of detected regions (no labels).
    pub fn detections(regions: Vec<Region>) -> Self {
        Answer {
            labels: Vec::new(),
            regions,
        }
    }

    /// Whether the service found nothing at all (no label, no region): counts as a failure
    /// to agree.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.regions.is_empty()
    }

    /// Detection agreement: same number of regions, and every region of `self` matched one
    /// to one by a region of `other` at IoU ≥ `min_iou` (greedy, best IoU first).
    pub fn regions_match(&self, other: &Answer, min_iou: f32) -> bool {
        if self.regions.len() != other.regions.len() {
            return false;
        }
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, a) in self.regions.iter().enumerate() {
            for (j, b) in other.regions.iter().enumerate() {
                let iou = a.iou(b);
                if iou >= min_iou {
                    pairs.push((iou, i, j));
                }
            }
        }
        pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut used_a = vec![false; self.regions.len()];
        let mut used_b = vec![false; other.regions.len()];
        let mut matched = 0;
        for (_, i, j) in pairs {
            if !used_a[i] && !used_b[j] {
                used_a[i] = true;
                used_b[j] = true;
                matched += 1;
            }
        }
        matched == self.regions.len()
    }
}

/// The cloud APIs this crate speaks.
///
/// Parsed from and displayed as `google` / `rekognition` / `baidu` / `facepp` / `azure` /
/// `kserve` / `torchserve` (CLI values, config, serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Google Cloud Vision `images:annotate`, `LABEL_DETECTION` feature.
    #[serde(rename = "google")]
    GoogleVision,
    /// Amazon Rekognition `DetectLabels`.
    #[serde(rename = "rekognition")]
    Rekognition,
    /// Baidu AI `image-classify/v2/advanced_general` (form-urlencoded base64).
    #[serde(rename = "baidu")]
    Baidu,
    /// Face++ `facepp/v3/detect` (faces) and `imagepp/beta/detectsceneandobject` (labels).
    #[serde(rename = "facepp")]
    FacePlusPlus,
    /// Azure AI Vision Image Analysis 4.0 `imageanalysis:analyze`, `tags` feature.
    #[serde(rename = "azure")]
    Azure,
    /// KServe v2 / Triton `POST /v2/models/{model}/infer`, BYTES inputs (binary-data extension).
    #[serde(rename = "kserve")]
    KServe,
    /// TorchServe `POST /predictions/{model}`, raw or multipart image.
    #[serde(rename = "torchserve")]
    TorchServe,
}

/// The names of [`Protocol::ALL`], for error messages and help texts.
pub const PROTOCOL_NAMES: &str = "google, rekognition, baidu, facepp, azure, kserve, torchserve";

impl Protocol {
    /// Every protocol, in a stable order.
    pub const ALL: [Protocol; 7] = [
        Protocol::GoogleVision,
        Protocol::Rekognition,
        Protocol::Baidu,
        Protocol::FacePlusPlus,
        Protocol::Azure,
        Protocol::KServe,
        Protocol::TorchServe,
    ];

    /// The registry, proxy and client side: this API's adapter.
    pub fn api(self) -> &'static dyn Api {
        match self {
            Protocol::GoogleVision => &google::Google,
            Protocol::Rekognition => &rekognition::Rekognition,
            Protocol::Baidu => &baidu::Baidu,
            Protocol::FacePlusPlus => &facepp::FacePlusPlus,
            Protocol::Azure => &azure::Azure,
            Protocol::KServe => &kserve::KServe,
            Protocol::TorchServe => &torchserve::TorchServe,
        }
    }

    /// The registry, backend side: how the local backend emulates this API.
    pub fn emulated(self) -> &'static dyn Emulated {
        match self {
            Protocol::GoogleVision => &google::Google,
            Protocol::Rekognition => &rekognition::Rekognition,
            Protocol::Baidu => &baidu::Baidu,
            Protocol::FacePlusPlus => &facepp::FacePlusPlus,
            Protocol::Azure => &azure::Azure,
            Protocol::KServe => &kserve::KServe,
            Protocol::TorchServe => &torchserve::TorchServe,
        }
    }

    /// The largest image, in raw bytes, the API documents accepting inline; `None` where
    /// no limit is documented. Rekognition: 5 MB as bytes. Baidu: 4 MB after base64
    /// (3 MB raw). Face++: 2 MB. Google Vision: 10 MB per JSON request, base64 adding a
    /// third (7.5 MB raw for a one-image request). Azure Image Analysis 4.0: 20 MB.
    pub fn max_image_bytes(self) -> Option<usize> {
        self.api().max_image_bytes()
    }

    /// The most images one request may carry, where the API documents it: Google Vision's
    /// `images:annotate` takes 16; Rekognition, Baidu, Face++ and Azure take one. KServe
    /// and TorchServe batches are the deployment's own ([`None`]: only
    /// `limits.max_images_per_request` applies).
    pub fn max_images(self) -> Option<usize> {
        self.api().max_images()
    }

    /// The name used on the CLI, in config files and in serde.
    pub fn name(self) -> &'static str {
        self.api().name()
    }

    /// Client side: the request that asks for at most `max_labels` labels of one image.
    ///
    /// APIs without such a parameter (Baidu, Face++, Azure, TorchServe) ignore `max_labels`
    /// and answer with their own number of labels. Face++ is asked for scenes and objects
    /// (labels), not faces: see [`facepp::detect_request`] for the detector. Credentials are
    /// the caller's: Baidu's `access_token` goes into the query, Face++'s `api_key` and
    /// `api_secret` into the form ([`facepp::scene_request`] takes them).
    pub fn client_request(self, image: &[u8], max_labels: usize) -> ClientRequest {
        self.api().client_request(image, max_labels)
    }

    /// Client side: reads the answer to a [`Protocol::client_request`] (status and body).
    ///
    /// Error answers, in the API's own shape or not, become a [`ProtocolError`] (Baidu's come
    /// with HTTP 200: a [`ProtocolError::Service`] with status 200).
    pub fn parse_answer(self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        self.api().parse_answer(status, body)
    }

    /// Client or proxy side: reads an answer about several images, one result per image in
    /// request order. Google and KServe batch; for the others this is
    /// [`Protocol::parse_answer`] as a one-element list. The outer error is about the answer as
    /// a whole.
    pub fn parse_answers(
        self,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        self.api().parse_answers(status, body)
    }

    /// Backend side: reads the images and their per-image options out of an incoming request.
    ///
    /// `path` may carry a query string. An `Err` is about the whole request and is answered
    /// with [`Protocol::render_backend_error`].
    pub fn parse_backend_request(
        self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        self.emulated().parse_backend_request(path, headers, body)
    }

    /// Backend side: the answer to a request, one result per image of
    /// [`BackendRequest::images`], in the same order; `reply` is that request's
    /// [`BackendRequest::reply`].
    ///
    /// Labels are rendered as given: apply the request's limits first ([`BackendImage::limit`]).
    /// A `reply` of another protocol is treated as the default for this one.
    pub fn render_backend_response(
        self,
        reply: &Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        self.emulated().render_backend_response(reply, results)
    }

    /// Backend side: a request-level error in the API's own error shape and status.
    /// The status, kind and message come from the adapter's table ([`Emulated::error_kind`]),
    /// by the error's [`ErrorClass`] ([`shape::backend_error`]).
    pub fn render_backend_error(self, err: &ProtocolError) -> BackendResponse {
        shape::backend_error(self, err)
    }

    /// Backend side: "too many requests, retry later" in the API's own body shape.
    ///
    /// The status is 429 for every API, whatever the real service uses (Baidu answers HTTP 200
    /// with `error_code` 18, Face++ 403 `CONCURRENCY_LIMIT_EXCEEDED`, Rekognition 400,
    /// TorchServe 503): one status that every client retries on is worth more than
    /// faithfulness here. The caller adds `retry-after`.
    pub fn render_throttled(self) -> BackendResponse {
        self.emulated().render_throttled()
    }

    /// Proxy side: which API a client's request speaks, from its method, path and headers
    /// alone (the body is not read): a `POST` that one adapter [`Api::recognizes`]. `None`
    /// for anything no adapter compresses (health checks of the upstream, other operations of
    /// the same API): the proxy sends those [`Protocol::owner`] places to that API's upstream
    /// untouched, and refuses the rest unless `[upstreams].default` takes them.
    pub fn recognize(method: &Method, path: &str, headers: &HeaderMap) -> Option<Protocol> {
        if method != Method::POST {
            return None;
        }
        let route = path.split('?').next().unwrap_or(path);
        Protocol::ALL
            .into_iter()
            .find(|protocol| protocol.api().recognizes(route, headers))
    }

    /// Proxy side: which API's upstream a request belongs to, compressed or not: what
    /// [`Protocol::recognize`] says, else the API that [`Api::owns`] it — another
    /// Rekognition operation (`POST /` with `X-Amz-Target: RekognitionService.*`), KServe /
    /// Triton health, metadata and repository routes (any method under `/v2`), TorchServe's
    /// `/ping` and inference paths, and (any method) each API's other endpoints: Google's
    /// `/v1/images:*`, `/v1/files:*` and `/v1p…/…` (the beta versions), Azure's
    /// `/computervision/…` and `/vision/v…/…`, Face++'s `/facepp/…` and `/imagepp/…`, Baidu's
    /// `/rest/2.0/image-classify/…`. `None` for what no API claims.
    pub fn owner(method: &Method, path: &str, headers: &HeaderMap) -> Option<Protocol> {
        if let Some(protocol) = Protocol::recognize(method, path, headers) {
            return Some(protocol);
        }
        let route = path.split('?').next().unwrap_or(path);
        Protocol::ALL
            .into_iter()
            .find(|protocol| protocol.api().owns(method, route, headers))
    }

    /// Proxy side: the image slots of a client's request, in request order.
    ///
    /// Slots that hold no inline image (URLs, S3 objects, broken base64) are listed too, as
    /// not replaceable; an `Err` means the request is not one of this API at all.
    pub fn extract_images(self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        self.api().extract_images(req)
    }

    /// Proxy side: the request body with the images of the given slots (by [`ImageSlot::index`])
    /// replaced by new bytes; every other field is kept as it was, with the headers that must
    /// change with the body (KServe's `inference-header-content-length`).
    ///
    /// If a slot index appears twice, the later bytes win. The form, multipart and raw-body
    /// APIs keep every other byte; the JSON APIs (Google, Rekognition, KServe's JSON header)
    /// keep every field: see [`google::replace_images`] for what that means for key order and
    /// number formatting.
    pub fn replace_images(
        self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        self.api().replace_images(req, replacements)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|protocol| protocol.name() == s)
            .ok_or_else(|| ProtocolError::UnknownProtocol { name: s.to_owned() })
    }
}

/// A client's request as the proxy's adapters see it.
#[derive(Debug, Clone, Copy)]
pub struct ProxyRequest<'a> {
    /// Path and query as received, e.g. `/v1/images:annotate?key=…`.
    pub path_and_query: &'a str,
    /// The request's headers (content type, multipart boundary, binary-data lengths).
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// A request body with images replaced, and the headers that must change with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new body.
    pub body: Vec<u8>,
    /// Headers to set (replacing any of the same name), lower-case names: e.g. KServe's
    /// `inference-header-content-length` when the JSON header's length changed. The proxy
    /// sets `content-length` itself.
    pub headers: Vec<(String, String)>,
}

impl Rewritten {
    /// A new body that needs no header change.
    pub fn body(body: Vec<u8>) -> Rewritten {
        Rewritten {
            body,
            headers: Vec::new(),
        }
    }
}

/// What a client sends for one image; every request of these APIs is a `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// Path and query to append to the service's base URL, e.g. `/v1/images:annotate`.
    pub path_and_query: String,
    /// Headers the API needs (content type, operation); credentials are added by the caller.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The images of a request received by the local backend.
#[derive(Debug)]
pub struct BackendRequest {
    /// One entry per image, in request order. An `Err` entry is an image the backend cannot
    /// classify (bad base64, a URL it will not fetch); render it back in its slot.
    pub images: Vec<Result<BackendImage, ImageProblem>>,
    /// What the renderer needs from the request; hand it to
    /// [`Protocol::render_backend_response`].
    pub reply: Reply,
}

impl BackendRequest {
    /// A request whose answer needs nothing from it but the results.
    pub fn plain(images: Vec<Result<BackendImage, ImageProblem>>) -> BackendRequest {
        BackendRequest {
            images,
            reply: Reply::Plain,
        }
    }

    /// What the backend computes for the images: labels, or faces for Face++ detect.
    pub fn task(&self) -> Task {
        match &self.reply {
            Reply::FacePlusPlus(reply) if reply.operation == facepp::Operation::Detect => {
                Task::Faces
            }
            _ => Task::Labels,
        }
    }
}

/// What the backend computes for the images of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// Classify: [`Answer::labels`] (every API but Face++ detect).
    #[default]
    Labels,
    /// Detect faces: [`Answer::regions`] (Face++ detect).
    Faces,
}

/// What a renderer must remember from the request it answers, per API.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Reply {
    /// Nothing (Google, Rekognition, TorchServe).
    #[default]
    Plain,
    /// Baidu: how many results carry `baike_info`.
    Baidu(baidu::Reply),
    /// Face++: which operation, and the image's id.
    FacePlusPlus(facepp::Reply),
    /// Azure: the image's size for `metadata`.
    Azure(azure::Reply),
    /// KServe: model name and version, request id, requested outputs.
    KServe(kserve::Reply),
}

/// One image the backend should classify, with the limits its request asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendImage {
    /// The encoded image (JPEG, PNG, ...), base64-decoded.
    pub bytes: Vec<u8>,
    /// The most labels to answer with; 0 means the request asked for no labels at all.
    pub max_labels: usize,
    /// Labels scoring below this (in `0..=1`) are left out of the answer.
    pub min_score: f32,
}

impl BackendImage {
    /// Applies this image's `max_labels` and `min_score` to an answer, ready to render.
    pub fn limit(&self, answer: Answer) -> Answer {
        answer.limited(self.max_labels, self.min_score)
    }
}

/// Why the backend has no answer for one image of a request.
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    /// The request's entry for this image was unusable (bad base64, no image, a URL or S3
    /// object the backend does not fetch, too large).
    #[error(transparent)]
    Request(#[from] ProtocolError),
    /// The bytes are not an image the backend can decode; the string says why.
    #[error("image could not be decoded: {0}")]
    Undecodable(String),
    /// The backend failed on its side (model error); the string says why. Rendered as a
    /// server error, not as the client's fault.
    #[error("image could not be classified: {0}")]
    Internal(String),
}

/// A response rendered by the backend in an API's shape; implements axum's `IntoResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendResponse {
    /// HTTP status the real API would use.
    pub status: StatusCode,
    /// Headers, at least the content type (and Rekognition's `x-amzn-ErrorType` on errors).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl BackendResponse {
    /// The response as a `(status, headers, body)` tuple.
    pub fn into_parts(self) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }

    /// Builds a JSON response with the given content type first, then `extra` headers.
    fn json(
        status: StatusCode,
        content_type: &str,
        extra: Vec<(String, String)>,
        body: &Value,
    ) -> Self {
        let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
        headers.extend(extra);
        BackendResponse {
            status,
            headers,
            // Writing a `Value` to a string cannot fail, unlike `serde_json::to_vec`.
            body: body.to_string().into_bytes(),
        }
    }
}

impl IntoResponse for BackendResponse {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            match (
                axum::http::HeaderName::try_from(name.as_str()),
                axum::http::HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => tracing::error!(%name, "backend rendered an invalid header; dropped"),
            }
        }
        response
    }
}

/// One image position in a client's request, as the proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSlot {
    /// Position in request order; the key [`Protocol::replace_images`] takes.
    pub index: usize,
    /// Where the image lives in the JSON, e.g. `requests[1].image`, for logs.
    pub path: String,
    /// What the slot holds.
    pub image: SlotImage,
}

impl ImageSlot {
    /// The inline image bytes, if the slot has any (then it is replaceable).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.image {
            SlotImage::Inline(bytes) => Some(bytes),
            SlotImage::Remote(_) | SlotImage::Unusable(_) => None,
        }
    }

    /// Whether [`Protocol::replace_images`] accepts this slot.
    pub fn is_replaceable(&self) -> bool {
        self.bytes().is_some()
    }
}

/// What an [`ImageSlot`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotImage {
    /// Inline base64 content, decoded: the proxy may re-encode it.
    Inline(Vec<u8>),
    /// An image named by reference (`source.imageUri`, `gcsImageUri`, `s3://bucket/key`): the
    /// proxy never fetches it and leaves it untouched.
    Remote(String),
    /// Nothing usable (no image, broken base64): left untouched for the service to reject.
    Unusable(String),
}

/// Why a request or answer could not be handled; messages name the field and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// A protocol name that is none of [`PROTOCOL_NAMES`].
    #[error("unknown protocol `{name}` (expected one of: {PROTOCOL_NAMES})")]
    UnknownProtocol {
        /// The name given.
        name: String,
    },
    /// A body that does not parse as JSON.
    #[error("{what} is not valid JSON: {detail}")]
    NotJson {
        /// `request body` or `answer body`.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A body that is not in the framing its API uses (form, multipart, binary tensors).
    #[error("{what} is not valid {format}: {detail}")]
    Malformed {
        /// `request body` or `answer body`.
        what: &'static str,
        /// The framing, e.g. `multipart/form-data`.
        format: &'static str,
        /// What is wrong, naming the part or offset.
        detail: String,
    },
    /// A body with more values than the proxy will build a structure for: parsing it
    /// would cost many times the body's size in memory.
    #[error("{what} has over {count} {unit}, over the limit of {limit}")]
    TooComplex {
        /// `request body` or `answer body`.
        what: &'static str,
        /// `JSON values` or `form fields`.
        unit: &'static str,
        count: usize,
        limit: usize,
    },
    /// A required field is absent.
    #[error("missing field {path}")]
    MissingField {
        /// JSON path of the field, e.g. `requests` or `Image`.
        path: String,
    },
    /// A field has the wrong type or an out-of-range value.
    #[error("{path} must be {expected}, got {got}")]
    InvalidValue {
        /// JSON path of the field, e.g. `MaxLabels`.
        path: String,
        /// What the API accepts, e.g. `a number between 0 and 100`.
        expected: &'static str,
        /// The value found, as short JSON.
        got: String,
    },
    /// An image entry without any image in it.
    #[error("{path} has neither {fields}")]
    NoImage {
        /// JSON path of the image object, e.g. `requests[2].image`.
        path: String,
        /// The fields that may hold an image, e.g. `content nor source`.
        fields: &'static str,
    },
    /// Inline image content that is not base64.
    #[error("image is not valid base64 at {path}: {detail}")]
    InvalidBase64 {
        /// JSON path of the string, e.g. `requests[0].image.content`.
        path: String,
        /// The decoder's message.
        detail: String,
    },
    /// An image named by URL or S3 object, which the backend does not fetch.
    #[error("{path} refers to {reference}; this backend does not fetch remote images")]
    RemoteImage {
        /// JSON path of the reference, e.g. `requests[0].image.source.imageUri`.
        path: String,
        /// The reference itself, e.g. a URL or `s3://bucket/key`.
        reference: String,
    },
    /// A decoded image over the API's size limit.
    #[error("image is {actual} bytes, over the limit of {limit} bytes")]
    ImageTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The decoded size in bytes.
        actual: usize,
    },
    /// A batch over the API's limit on images per request.
    #[error("request has {actual} images, over the limit of {limit} images per request")]
    TooManyImages {
        /// The most images a request may hold.
        limit: usize,
        /// How many it holds.
        actual: usize,
    },
    /// A request for an operation this crate does not serve (wrong target header or path).
    #[error("unsupported operation: {found}; expected {expected}")]
    UnsupportedOperation {
        /// What the request asked for, e.g. ``X-Amz-Target `RekognitionService.DetectFaces` ``.
        found: String,
        /// What is served, e.g. `X-Amz-Target: RekognitionService.DetectLabels`.
        expected: &'static str,
    },
    /// The backend cannot serve this request now, for a reason that is not the client's
    /// fault, e.g. Face++ detect with no face detector loaded.
    #[error("service unavailable: {reason}")]
    Unavailable {
        /// Why, for the client.
        reason: String,
    },
    /// An error answer in the API's own error shape (non-2xx, or Baidu's HTTP 200).
    #[error("upstream answered HTTP {status} {kind}: {message}")]
    Service {
        /// The HTTP status.
        status: u16,
        /// The API's error kind (Rekognition `__type`, Google `status` or `code`, Baidu
        /// `error_code N`, Face++'s message code, TorchServe `type`, Azure's inner code).
        kind: String,
        /// The API's message.
        message: String,
    },
    /// A non-2xx answer that is not in the API's error shape.
    #[error("upstream answered HTTP {status}: {excerpt}")]
    Upstream {
        /// The HTTP status.
        status: u16,
        /// The start of the body, whitespace collapsed.
        excerpt: String,
    },
    /// A per-image error inside a successful batch answer (Google `responses[i].error`).
    #[error("upstream could not process {path} (code {code}): {message}")]
    ImageError {
        /// JSON path of the failed response, e.g. `responses[0]`.
        path: String,
        /// The `google.rpc.Code` number, e.g. 3 for `INVALID_ARGUMENT`.
        code: i64,
        /// The service's message.
        message: String,
    },
    /// A 2xx answer that does not have the expected shape.
    #[error("answer does not have the expected shape: {detail}")]
    UnexpectedAnswer {
        /// What is wrong, naming the field.
        detail: String,
    },
    /// A replacement for a slot index the request does not have.
    #[error("no image slot {index}: the request has {count} slots")]
    NoSuchSlot {
        /// The index asked for.
        index: usize,
        /// How many slots there are.
        count: usize,
    },
    /// A replacement for a slot without inline content (URL, S3 object, broken base64).
    #[error("image slot {index} ({path}) cannot be replaced: {reason}")]
    NotReplaceable {
        /// The index asked for.
        index: usize,
        /// JSON path of the slot.
        path: String,
        /// What the slot holds instead.
        reason: String,
    },
}

/// The field name of an [`ProtocolError::InvalidValue`] about the request's content type: an
/// error with it is [`BadRequest::UnsupportedMediaType`].
pub const CONTENT_TYPE_FIELD: &str = "Content-Type header";

/// What kind of request-level error a [`ProtocolError`] is, and who caused it, as far as any
/// API's error table tells errors apart ([`ProtocolError::class`]). Each adapter maps a class
/// to its own status, kind and message ([`Emulated::error_kind`]) and
/// [`shape::backend_error`] renders it, for every API alike.
///
/// Two variants are in the same class when every API answers them the same way; a class
/// exists for each distinction some API makes (Rekognition tells a body it cannot read from a
/// bad field, Baidu a missing field from a bad one, Azure no image from a missing field,
/// TorchServe a too-large image from other bad requests, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Client: a request the API refuses, of the kind given.
    BadRequest(BadRequest),
    /// Client: an operation or path the API does not serve (`UnsupportedOperation`).
    UnsupportedOperation,
    /// Service: the backend cannot serve the request now, through no fault of the client's
    /// (`Unavailable`).
    Unavailable,
    /// Ours: errors that come from answers, the proxy's slots or the CLI (`UnknownProtocol`,
    /// `Service`, `Upstream`, `ImageError`, `UnexpectedAnswer`, `NoSuchSlot`,
    /// `NotReplaceable`). Answered with the API's generic server error; the detail goes to
    /// the log only.
    Internal,
}

/// The kinds of [`ErrorClass::BadRequest`], the client's fault, that some API tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRequest {
    /// A body not in the API's framing: not JSON, a broken form or multipart (`NotJson`,
    /// `Malformed`).
    Unreadable,
    /// A required field is absent (`MissingField`).
    MissingField,
    /// A field of the wrong type or value, a body with more values than the parsers build,
    /// more images than the API takes (`InvalidValue`, `TooComplex`, `TooManyImages`).
    InvalidArgument,
    /// A body in a content type the API does not take (`InvalidValue` of the
    /// [`CONTENT_TYPE_FIELD`]).
    UnsupportedMediaType,
    /// An analysis the API does not offer (`InvalidValue` of Azure's
    /// [`azure::FEATURES_FIELD`]).
    UnsupportedFeature,
    /// An image entry without an image (`NoImage`).
    NoImage,
    /// Inline image content that is not base64 (`InvalidBase64`).
    BadEncoding,
    /// An image by URL or S3 object, which the backend does not fetch (`RemoteImage`).
    RemoteImage,
    /// An image over the API's size limit (`ImageTooLarge`).
    ImageTooLarge,
}

impl ProtocolError {
    /// This error's [`ErrorClass`]: who caused it and which of each API's error kinds it
    /// gets.
    pub fn class(&self) -> ErrorClass {
        let bad = match self {
            ProtocolError::UnsupportedOperation { .. } => return ErrorClass::UnsupportedOperation,
            ProtocolError::Unavailable { .. } => return ErrorClass::Unavailable,
            ProtocolError::UnknownProtocol { .. }
            | ProtocolError::Service { .. }
            | ProtocolError::Upstream { .. }
            | ProtocolError::ImageError { .. }
            | ProtocolError::UnexpectedAnswer { .. }
            | ProtocolError::NoSuchSlot { .. }
            | ProtocolError::NotReplaceable { .. } => return ErrorClass::Internal,
            ProtocolError::NotJson { .. } | ProtocolError::Malformed { .. } => {
                BadRequest::Unreadable
            }
            ProtocolError::MissingField { .. } => BadRequest::MissingField,
            ProtocolError::InvalidValue { path, .. } if path == CONTENT_TYPE_FIELD => {
                BadRequest::UnsupportedMediaType
            }
            ProtocolError::InvalidValue { path, .. } if path == azure::FEATURES_FIELD => {
                BadRequest::UnsupportedFeature
            }
            ProtocolError::InvalidValue { .. }
            | ProtocolError::TooComplex { .. }
            | ProtocolError::TooManyImages { .. } => BadRequest::InvalidArgument,
            ProtocolError::NoImage { .. } => BadRequest::NoImage,
            ProtocolError::InvalidBase64 { .. } => BadRequest::BadEncoding,
            ProtocolError::RemoteImage { .. } => BadRequest::RemoteImage,
            ProtocolError::ImageTooLarge { .. } => BadRequest::ImageTooLarge,
        };
        ErrorClass::BadRequest(bad)
    }

    /// Whether this is the service saying "too many requests, retry later", in any API's
    /// shape and at any status: HTTP 429, Rekognition `ThrottlingException`, Google
    /// `RESOURCE_EXHAUSTED`, Baidu `error_code` 4 / 18 (cluster and QPS limits, in an HTTP
    /// 200), Face++ `CONCURRENCY_LIMIT_EXCEEDED` (HTTP 403). Clients retry these with backoff
    /// instead of counting them as refusals.
    pub fn is_throttling(&self) -> bool {
        let (status, kind) = match self {
            ProtocolError::Service { status, kind, .. } => (*status, kind.as_str()),
            ProtocolError::Upstream { status, .. } => (*status, ""),
            _ => return false,
        };
        status == 429
            || matches!(
                kind,
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RESOURCE_EXHAUSTED"
                    | "CONCURRENCY_LIMIT_EXCEEDED"
            )
            || baidu::is_throttling_kind(kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the protocol files.

/// How many characters of an unexpected body go into an error message.
const EXCERPT_CHARS: usize = 200;

/// Encodes image bytes as the APIs send them: standard alphabet, padded.
fn encode_base64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Decodes an image string at `path`, accepting the standard and the URL-safe alphabet with or
/// without padding, as protobuf's JSON mapping (Google) does; Rekognition's standard padded
/// base64 is a subset.
fn decode_base64(text: &str, path: impl FnOnce() -> String) -> Result<Vec<u8>, ProtocolError> {
    let url_safe = text.bytes().any(|b| b == b'-' || b == b'_');
    let engine = if url_safe {
        general_purpose::URL_SAFE_PAD_INDIFFERENT
    } else {
        general_purpose::STANDARD_PAD_INDIFFERENT
    };
    engine
        .decode(text)
        .map_err(|err| ProtocolError::InvalidBase64 {
            path: path(),
            detail: err.to_string(),
        })
}

/// Default of `limits.max_json_values`: most JSON values in one parsed body. A parsed value
/// costs ~32–64 bytes while `[]` costs 2 bytes of input: without a bound a 20 MB body of
/// empty arrays becomes gigabytes. One million covers a 512×512×3 tensor sent as JSON
/// numbers and every API's real requests.
pub const MAX_JSON_VALUES: usize = 1_000_000;

/// Default of `limits.max_form_fields`: most fields in one form body (real forms have a
/// handful).
pub const MAX_FORM_FIELDS: usize = 10_000;

/// How much structure the parsers build from one body: every adapter, the answer parsers
/// and the local backend read these, so they are process-wide, set once from `[limits]`
/// when the proxy starts ([`set_parse_limits`]) and at their defaults until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// `limits.max_json_values`.
    pub max_json_values: usize,
    /// `limits.max_form_fields`.
    pub max_form_fields: usize,
    /// `limits.max_tensor_elements`: KServe `BYTES` elements per request.
    pub max_tensor_elements: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_json_values: MAX_JSON_VALUES,
            max_form_fields: MAX_FORM_FIELDS,
            max_tensor_elements: kserve::MAX_ELEMENTS,
        }
    }
}

static JSON_VALUES: AtomicUsize = AtomicUsize::new(MAX_JSON_VALUES);
static FORM_FIELDS: AtomicUsize = AtomicUsize::new(MAX_FORM_FIELDS);
static TENSOR_ELEMENTS: AtomicUsize = AtomicUsize::new(kserve::MAX_ELEMENTS);

/// Sets the parsers' limits for the whole process (zero is taken as one).
pub fn set_parse_limits(limits: ParseLimits) {
    JSON_VALUES.store(limits.max_json_values.max(1), Ordering::Relaxed);
    FORM_FIELDS.store(limits.max_form_fields.max(1), Ordering::Relaxed);
    TENSOR_ELEMENTS.store(limits.max_tensor_elements.max(1), Ordering::Relaxed);
}

/// The parsers' limits now in force.
pub fn parse_limits() -> ParseLimits {
    ParseLimits {
        max_json_values: JSON_VALUES.load(Ordering::Relaxed),
        max_form_fields: FORM_FIELDS.load(Ordering::Relaxed),
        max_tensor_elements: TENSOR_ELEMENTS.load(Ordering::Relaxed),
    }
}

/// Refuses JSON with more than `limits.max_json_values` values, counted in one pass over
/// the bytes (commas and openings outside strings), before anything is allocated.
fn check_json_size(body: &[u8], what: &'static str) -> Result<(), ProtocolError> {
    let max = parse_limits().max_json_values;
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => {
                values += 1;
                if values > max {
                    return Err(ProtocolError::TooComplex {
                        what,
                        unit: "JSON values",
                        count: max,
                        limit: max,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a body as JSON; `what` names it in the error (`request body`, `answer body`).
/// Bodies with more than `limits.max_json_values` values are refused unparsed.
fn parse_json(body: &[u8], what: &'static str) -> Result<Value, ProtocolError> {
    check_json_size(body, what)?;
    serde_json::from_slice(body).map_err(|err| ProtocolError::NotJson {
        what,
        detail: err.to_string(),
    })
}

/// The start of a body for an error message: lossy UTF-8, whitespace collapsed, shortened.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut chars = collapsed.chars();
    let short: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

/// A value as short JSON for error messages (long strings and containers are shortened).
fn describe(value: &Value) -> String {
    let text = value.to_string();
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(60).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

/// A score or confidence as a JSON number with the digits the `f32` prints (`0.97`, not the
/// `0.9700000286102295` a plain widening to `f64` would give).
fn wire_number(value: f32) -> Value {
    let widened = value
        .to_string()
        .parse::<f64>()
        .unwrap_or_else(|_| f64::from(value));
    serde_json::Number::from_f64(widened).map_or(Value::from(0), Value::Number)
}

/// Whether `status` is a 2xx code.
fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// One label object of an answer's wire struct, e.g. Rekognition's `{"Name", "Confidence"}`:
/// its name and its score as read from the wire, `None` when missing or of the wrong type.
trait WireLabel {
    fn name(&self) -> Option<&str>;
    fn score(&self) -> Option<f64>;
}

/// Labels from an answer's array of label objects, e.g. Rekognition's
/// `Labels[].Name/.Confidence`. `path` names the array and `(name_key, score_key)` the fields
/// in errors; `scale` is the score's full scale (100 for percentages). An element that is not
/// an object has neither field.
fn labels_from<L: WireLabel>(
    items: &[wire::Field<L>],
    path: &str,
    (name_key, score_key): (&str, &str),
    scale: f64,
) -> Result<Vec<Label>, ProtocolError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item.ok();
            let name = item
                .and_then(L::name)
                .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                    detail: format!("{path}[{i}].{name_key} is missing or not a string"),
                })?;
            let value = item
                .and_then(L::score)
                .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                    detail: format!("{path}[{i}].{score_key} is missing or not a number"),
                })?;
            Ok(Label {
                name: name.to_owned(),
                score: normalise_score(value, scale),
            })
        })
        .collect()
}

/// Reads a request document as its wire struct `T`; a document that is not a JSON object is
/// refused as `request body must be a JSON object`.
fn read_request<'a, T: wire::Expect<'a>>(doc: &'a Value) -> Result<T, ProtocolError> {
    match wire::read(doc) {
        wire::Field::Is(request) => Ok(request),
        _ => Err(ProtocolError::InvalidValue {
            path: "request body".to_owned(),
            expected: "a JSON object",
            got: describe(doc),
        }),
    }
}

/// Reads an answer document as its wire struct `T`, `None` when it is not a JSON object.
fn read_answer<'a, T: wire::Expect<'a>>(doc: &'a Value) -> Option<T> {
    match wire::read(doc) {
        wire::Field::Is(answer) => Some(answer),
        _ => None,
    }
}

/// Turns a label score from the wire into `0..=1`; `scale` is the wire's maximum (1 or 100).
/// A score that is not a number (NaN, as KServe's binary FP32 data can carry) counts as 0:
/// it must neither pass the range nor break the ordering of labels.
fn normalise_score(value: f64, scale: f64) -> f32 {
    let unit = value / scale;
    if unit.is_nan() {
        return 0.0;
    }
    // Narrowing to f32 is the point: scores are compared, never accumulated.
    (unit.clamp(0.0, 1.0)) as f32
}

/// The media type of a `Content-Type` header, lower-cased, without parameters
/// (`multipart/form-data`); `None` when the header is absent or not text.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("content-type")?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// The whole `Content-Type` header for error messages, `(none)` when absent.
fn content_type_text(headers: &HeaderMap) -> String {
    headers.get("content-type").map_or_else(
        || "(none)".to_owned(),
        |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
    )
}

/// Whether `bytes` start like an image the backend decodes (JPEG, PNG, WebP).
fn looks_like_image(bytes: &[u8]) -> bool {
    crate::codec::Format::sniff(bytes).is_some()
}

/// One `name=value` field of an `application/x-www-form-urlencoded` body.
#[derive(Debug, Clone, PartialEq)]
struct FormField {
    /// The decoded name.
    name: String,
    /// The decoded value (`+` is a space, `%XX` a byte, invalid UTF-8 replaced).
    value: String,
    /// Where the raw (still encoded) value sits in the body; empty at the end of a field
    /// without `=`.
    value_range: Range<usize>,
}

/// The fields of a form body, in order, each with the span of its raw value so a rewrite can
/// change one value and keep every other byte. Empty segments (`a=1&&b=2`) are skipped.
/// More than `limits.max_form_fields` separators are refused before anything is built.
///
/// Hand-written rather than `form_urlencoded::parse` (which decodes values but gives no
/// spans) or `serde_urlencoded` (which builds a map): the Baidu rewrite must replace one
/// value and keep every other byte, including the client's own percent-encoding.
fn form_fields(body: &[u8]) -> Result<Vec<FormField>, ProtocolError> {
    let max = parse_limits().max_form_fields;
    let separators = body.iter().filter(|&&b| b == b'&').count();
    if separators >= max {
        return Err(ProtocolError::TooComplex {
            what: "request body",
            unit: "form fields",
            count: separators + 1,
            limit: max,
        });
    }
    let mut fields = Vec::new();
    let mut start = 0;
    for segment in body.split(|&b| b == b'&') {
        let end = start + segment.len();
        if !segment.is_empty() {
            let (raw_name, value_range) = match segment.iter().position(|&b| b == b'=') {
                Some(eq) => (&segment[..eq], start + eq + 1..end),
                None => (segment, end..end),
            };
            fields.push(FormField {
                name: form_decode(raw_name),
                value: form_decode(&body[value_range.clone()]),
                value_range,
            });
        }
        start = end + 1;
    }
    Ok(fields)
}

/// Decodes one form component: `+` is a space, `%XX` a byte; a `%` not followed by two hex
/// digits stays as it is (as browsers and `form_urlencoded` do).
fn form_decode(raw: &[u8]) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
            (b'+', _, _) => bytes.push(b' '),
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make one byte: 16 * high + low < 256.
                bytes.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 2;
            }
            (other, _, _) => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Encodes a form value: everything but `*-._` and alphanumerics is `%XX`, space is `+`
/// (so base64's `+`, `/` and `=` become `%2B`, `%2F`, `%3D`).
fn form_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The body with the bytes at `range` replaced by `value`.
fn splice(body: &[u8], range: Range<usize>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() - range.len() + value.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(value);
    out.extend_from_slice(&body[range.end..]);
    out
}

/// Decodes base64 that travelled in a form value: a client that did not urlencode it lost its
/// `+` to spaces on the way (base64 never holds a space), so spaces are read as `+`.
fn decode_form_base64(
    value: &str,
    path: impl FnOnce() -> String,
) -> Result<Vec<u8>, ProtocolError> {
    if value.contains(' ') {
        decode_base64(&value.replace(' ', "+"), path)
    } else {
        decode_base64(value, path)
    }
}

/// A fresh id for answers that carry one (request ids, face tokens): 32 hex digits.
fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An [`ImageSlot`] plus where its inline content sits in the request JSON.
struct LocatedSlot {
    /// The slot as reported to the proxy.
    slot: ImageSlot,
    /// JSON pointer (RFC 6901) of the base64 string, for inline slots only.
    content_pointer: Option<String>,
}

/// Writes the replacement bytes into the located content strings of `doc` and serialises it.
///
/// Only the targeted strings change; `serde_json::Value` keeps every other field, including
/// ones this crate does not know. Key order follows serde_json's map (sorted unless the crate is
/// built with serde_json's `preserve_order`), which JSON does not give meaning to.
fn apply_replacements(
    mut doc: Value,
    slots: &[LocatedSlot],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    for (index, bytes) in replacements {
        let located = slots.get(*index).ok_or(ProtocolError::NoSuchSlot {
            index: *index,
            count: slots.len(),
        })?;
        let not_replaceable = |reason: String| ProtocolError::NotReplaceable {
            index: *index,
            path: located.slot.path.clone(),
            reason,
        };
        let pointer = match (&located.content_pointer, &located.slot.image) {
            (Some(pointer), SlotImage::Inline(_)) => pointer,
            (_, SlotImage::Remote(reference)) => {
                return Err(not_replaceable(format!("it refers to {reference}")));
            }
            (_, SlotImage::Unusable(why)) => return Err(not_replaceable(why.clone())),
            (None, SlotImage::Inline(_)) => {
                return Err(not_replaceable("its content was not located".to_owned()));
            }
        };
        let target = doc
            .pointer_mut(pointer)
            .ok_or_else(|| not_replaceable(format!("no value at {pointer}")))?;
        *target = Value::String(encode_base64(bytes));
    }
    Ok(doc.to_string().into_bytes())
}

/// One row of the `parse_answer` tables: name, body, HTTP status, and either
/// `Ok((top-1 label, label count))` or `Err(fragment of the error message)`.
#[cfg(test)]
type AnswerCase = (
    &'static str,
    Vec<u8>,
    u16,
    Result<(Option<&'static str>, usize), &'static str>,
);

/// Runs table-driven answer cases through a protocol's answer parser.
#[cfg(test)]
fn check_answer_cases(
    cases: Vec<AnswerCase>,
    parse: impl Fn(u16, &[u8]) -> Result<Answer, ProtocolError>,
) {
    for (name, body, status, expected) in cases {
        match (expected, parse(status, &body)) {
            (Ok((top1, count)), Ok(answer)) => {
                assert_eq!(answer.top1(), top1, "{name}");
                assert_eq!(answer.labels.len(), count, "{name}");
            }
            (Err(fragment), Err(err)) => {
                let message = err.to_string();
                assert!(message.contains(fragment), "{name}: {message}");
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
    }
}

/// Reads a fixture from `tests/fixtures/protocol/`.
#[cfg(test)]
fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/protocol")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()))
}

/// A JSON body as a value (tests only: panics on anything else).
#[cfg(test)]
fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

/// Headers with just this content type (tests only).
#[cfg(test)]
fn typed(content_type: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_str(content_type).expect("a header value"),
    );
    headers
}

/// A header map from a client request's headers (tests only).
#[cfg(test)]
fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            axum::http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, score: f32) -> Label {
        Label {
            name: name.to_owned(),
            score,
        }
    }

    #[test]
    fn answer_new_sorts_by_descending_score() {
        let answer = Answer::new(vec![label("a", 0.2), label("b", 0.9), label("c", 0.5)]);
        let names: Vec<_> = answer.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert_eq!(answer.top1(), Some("b"));
        assert_eq!(Answer::default().top1(), None);
    }

    #[test]
    fn top_k_contains_respects_k() {
        let answer = Answer::new(vec![
            label("dog", 0.9),
            label("cat", 0.5),
            label("car", 0.1),
        ]);
        let cases = [
            ("dog", 1, true),
            ("cat", 1, false),
            ("cat", 2, true),
            ("car", 2, false),
            ("car", 5, true),
            ("Dog", 5, false),
            ("dog", 0, false),
        ];
        for (name, k, expected) in cases {
            assert_eq!(
                answer.top_k_contains(name, k),
                expected,
                "{name} in top {k}"
            );
        }
    }

    #[test]
    fn limited_filters_then_truncates() {
        let answer = Answer::new(vec![label("a", 0.9), label("b", 0.6), label("c", 0.3)]);
        assert_eq!(answer.clone().limited(10, 0.5).labels.len(), 2);
        assert_eq!(answer.clone().limited(1, 0.0).top1(), Some("a"));
        assert!(answer.limited(0, 0.0).labels.is_empty());
    }

    #[test]
    fn protocol_names_round_trip() {
        for protocol in Protocol::ALL {
            let name = protocol.to_string();
            assert_eq!(name.parse::<Protocol>(), Ok(protocol));
            assert_eq!(
                serde_json::to_string(&protocol).ok(),
                Some(format!("\"{name}\""))
            );
            let back: Protocol = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(back, protocol);
        }
        let err = "clarifai".parse::<Protocol>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown protocol `clarifai` (expected one of: google, rekognition, baidu, facepp, \
             azure, kserve, torchserve)"
        );
        let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.join(", "), PROTOCOL_NAMES);
    }

    #[test]
    fn recognize_by_method_path_and_headers() {
        let amz = header_map(&[(
            "X-Amz-Target".to_owned(),
            "RekognitionService.DetectLabels".to_owned(),
        )]);
        let none = HeaderMap::new();
        // (method, path, headers, expected)
        let cases: Vec<(Method, &str, &HeaderMap, Option<Protocol>)> = vec![
            (
                Method::POST,
                "/v1/images:annotate?key=k",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (Method::POST, "/", &amz, Some(Protocol::Rekognition)),
            (Method::POST, "/", &none, None),
            (
                Method::POST,
                "/rest/2.0/image-classify/v2/advanced_general?access_token=24.x",
                &none,
                Some(Protocol::Baidu),
            ),
            (
                Method::POST,
                "/rest/2.0/image-classify/v1/animal",
                &none,
                None,
            ),
            (
                Method::POST,
                "/facepp/v3/detect",
                &none,
                Some(Protocol::FacePlusPlus),
            ),
            (
                Method::POST,
                "/imagepp/beta/detectsceneandobject",
                &none,
                Some(Protocol::FacePlusPlus),
            ),
            (Method::POST, "/facepp/v3/compare", &none, None),
            (
                Method::POST,
                "/computervision/imageanalysis:analyze?features=tags&api-version=2024-02-01",
                &none,
                Some(Protocol::Azure),
            ),
            (
                Method::POST,
                "/v2/models/resnet/infer",
                &none,
                Some(Protocol::KServe),
            ),
            (
                Method::POST,
                "/v2/models/resnet/versions/2/infer",
                &none,
                Some(Protocol::KServe),
            ),
            (Method::GET, "/v2/models/resnet", &none, None),
            (
                Method::POST,
                "/predictions/densenet",
                &none,
                Some(Protocol::TorchServe),
            ),
            (
                Method::POST,
                "/predictions/densenet/1.0",
                &none,
                Some(Protocol::TorchServe),
            ),
            (Method::GET, "/predictions/densenet", &none, None),
            (Method::POST, "/ping", &none, None),
        ];
        for (method, path, headers, expected) in cases {
            assert_eq!(
                Protocol::recognize(&method, path, headers),
                expected,
                "{method} {path}"
            );
        }
    }

    /// The API a request belongs to when it is not one the proxy compresses: its upstream
    /// gets it untouched (issue 9: health and metadata went to the first upstream).
    #[test]
    fn owner_of_requests_the_proxy_does_not_compress() {
        let faces = header_map(&[(
            "X-Amz-Target".to_owned(),
            "RekognitionService.DetectFaces".to_owned(),
        )]);
        let other = header_map(&[(
            "X-Amz-Target".to_owned(),
            "DynamoDB_20120810.GetItem".to_owned(),
        )]);
        let none = HeaderMap::new();
        // (method, path, headers, expected)
        let cases: Vec<(Method, &str, &HeaderMap, Option<Protocol>)> = vec![
            // Compressed ones keep their API.
            (
                Method::POST,
                "/v1/images:annotate?$alt=json;enum-encoding=int",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (
                Method::POST,
                "/v2/models/m/infer",
                &none,
                Some(Protocol::KServe),
            ),
            // Other Rekognition operations.
            (Method::POST, "/", &faces, Some(Protocol::Rekognition)),
            (Method::POST, "/", &other, None),
            (Method::GET, "/", &faces, None),
            // KServe v2 / Triton health, metadata, repository.
            (
                Method::GET,
                "/v2/health/live",
                &none,
                Some(Protocol::KServe),
            ),
            (
                Method::GET,
                "/v2/health/ready",
                &none,
                Some(Protocol::KServe),
            ),
            (Method::GET, "/v2", &none, Some(Protocol::KServe)),
            (
                Method::GET,
                "/v2/models/resnet",
                &none,
                Some(Protocol::KServe),
            ),
            (
                Method::GET,
                "/v2/models/resnet/ready",
                &none,
                Some(Protocol::KServe),
            ),
            (
                Method::GET,
                "/v2/models/resnet/versions/2/ready?x=1",
                &none,
                Some(Protocol::KServe),
            ),
            (
                Method::POST,
                "/v2/repository/index",
                &none,
                Some(Protocol::KServe),
            ),
            (Method::GET, "/v2models", &none, None),
            // TorchServe.
            (Method::GET, "/ping", &none, Some(Protocol::TorchServe)),
            (Method::POST, "/ping", &none, Some(Protocol::TorchServe)),
            (
                Method::GET,
                "/predictions/densenet",
                &none,
                Some(Protocol::TorchServe),
            ),
            (
                Method::POST,
                "/explanations/densenet",
                &none,
                Some(Protocol::TorchServe),
            ),
            (Method::GET, "/pingx", &none, None),
            // Google Vision's other endpoints and beta versions, any method.
            (
                Method::GET,
                "/v1/images:annotate",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (
                Method::POST,
                "/v1/images:asyncBatchAnnotate?key=k",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (
                Method::POST,
                "/v1/files:annotate",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (
                Method::POST,
                "/v1p4beta1/images:annotate",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (
                Method::POST,
                "/v1p1beta1/files:asyncBatchAnnotate",
                &none,
                Some(Protocol::GoogleVision),
            ),
            (Method::POST, "/v1p/images:annotate", &none, None),
            (Method::POST, "/v1p4beta1/", &none, None),
            (Method::POST, "/v1/models/m:predict", &none, None),
            // Azure AI Vision 4.0 and 3.x.
            (
                Method::POST,
                "/computervision/imageanalysis:segment?api-version=2023-02-01-preview",
                &none,
                Some(Protocol::Azure),
            ),
            (
                Method::GET,
                "/computervision/models",
                &none,
                Some(Protocol::Azure),
            ),
            (
                Method::POST,
                "/vision/v3.2/analyze?visualFeatures=Tags",
                &none,
                Some(Protocol::Azure),
            ),
            (Method::POST, "/vision/v3.2", &none, None),
            (Method::POST, "/vision/vx/analyze", &none, None),
            (Method::POST, "/computervision", &none, None),
            // Face++.
            (
                Method::POST,
                "/facepp/v3/compare",
                &none,
                Some(Protocol::FacePlusPlus),
            ),
            (
                Method::POST,
                "/imagepp/v1/recognizetext",
                &none,
                Some(Protocol::FacePlusPlus),
            ),
            (Method::POST, "/faceppx/v3/detect", &none, None),
            // Baidu image-classify.
            (
                Method::POST,
                "/rest/2.0/image-classify/v1/animal?access_token=t",
                &none,
                Some(Protocol::Baidu),
            ),
            (Method::POST, "/rest/2.0/ocr/v1/general_basic", &none, None),
            // Nobody's.
            (Method::GET, "/healthz", &none, None),
            (Method::POST, "/some/other/api", &none, None),
            (Method::GET, "/v1/images", &none, None),
        ];
        for (method, path, headers, expected) in cases {
            assert_eq!(
                Protocol::owner(&method, path, headers),
                expected,
                "{method} {path}"
            );
        }
    }

    /// Every protocol, proxy side and backend side, on the request its own client sends:
    /// recognised, parsed, extracted, replaced, and still parsed after the replacement.
    #[test]
    fn every_protocol_round_trips_its_client_request() {
        let image: Vec<u8> = b"\xff\xd8\xff\xe0"
            .iter()
            .copied()
            .chain((0..=255u8).cycle().take(3000))
            .collect();
        let smaller = b"\xff\xd8\xff\xdb smaller".to_vec();
        for protocol in Protocol::ALL {
            let request = protocol.client_request(&image, 5);
            let headers = header_map(&request.headers);
            assert!(headers.contains_key("content-type"), "{protocol}");
            let path = request.path_and_query.as_str();
            assert_eq!(
                Protocol::recognize(&Method::POST, path, &headers),
                Some(protocol)
            );
            let parsed = protocol
                .parse_backend_request(path, &headers, &request.body)
                .unwrap();
            assert_eq!(parsed.images.len(), 1, "{protocol}");
            assert_eq!(
                parsed.images[0].as_ref().unwrap().bytes,
                image,
                "{protocol}"
            );
            assert_eq!(parsed.task(), Task::Labels, "{protocol}");

            let req = ProxyRequest {
                path_and_query: path,
                headers: &headers,
                body: &request.body,
            };
            let slots = protocol.extract_images(&req).unwrap();
            assert_eq!(slots.len(), 1, "{protocol}");
            assert_eq!(slots[0].bytes(), Some(&image[..]), "{protocol}");
            let unchanged = protocol.replace_images(&req, &[]).unwrap();
            assert!(unchanged.headers.is_empty(), "{protocol}");

            let rewritten = protocol
                .replace_images(&req, &[(0, smaller.clone())])
                .unwrap();
            let mut new_headers = headers.clone();
            for (name, value) in &rewritten.headers {
                assert_eq!(name, &name.to_ascii_lowercase(), "{protocol}");
                new_headers.insert(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_str(value).unwrap(),
                );
            }
            let req = ProxyRequest {
                path_and_query: path,
                headers: &new_headers,
                body: &rewritten.body,
            };
            let slots = protocol.extract_images(&req).unwrap();
            assert_eq!(slots[0].bytes(), Some(&smaller[..]), "{protocol}");
            let parsed = protocol
                .parse_backend_request(path, &new_headers, &rewritten.body)
                .unwrap();
            assert_eq!(
                parsed.images[0].as_ref().unwrap().bytes,
                smaller,
                "{protocol}"
            );
            assert_eq!(
                protocol.replace_images(&req, &[(1, smaller.clone())]),
                Err(ProtocolError::NoSuchSlot { index: 1, count: 1 }),
                "{protocol}"
            );
        }
    }

    #[test]
    fn every_protocol_renders_throttling_that_its_parser_recognises() {
        for protocol in Protocol::ALL {
            let rendered = protocol.render_throttled();
            assert_eq!(rendered.status, StatusCode::TOO_MANY_REQUESTS, "{protocol}");
            let err = protocol.parse_answer(429, &rendered.body).unwrap_err();
            assert!(err.is_throttling(), "{protocol}: {err}");
        }
        let refusal = ProtocolError::Service {
            status: 400,
            kind: "InvalidImageFormatException".to_owned(),
            message: String::new(),
        };
        assert!(!refusal.is_throttling());
    }

    #[test]
    fn excerpt_collapses_and_shortens() {
        assert_eq!(
            excerpt(b"  <html>\n  <body>oops</body> "),
            "<html> <body>oops</body>"
        );
        assert_eq!(excerpt(b""), "(empty body)");
        let long = "x".repeat(500);
        let short = excerpt(long.as_bytes());
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 1);
        assert!(short.ends_with('…'));
    }

    #[test]
    fn base64_accepts_both_alphabets_and_optional_padding() {
        let bytes: Vec<u8> = (0..=255).collect();
        let standard = general_purpose::STANDARD.encode(&bytes);
        let url_safe_no_pad = general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        for text in [&standard, &url_safe_no_pad, standard.trim_end_matches('=')] {
            assert_eq!(decode_base64(text, String::new).unwrap(), bytes);
        }
        let err = decode_base64("not base64!", || "requests[0].image.content".into()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image is not valid base64 at requests[0].image.content: "),
            "{err}"
        );
    }

    #[test]
    fn a_score_that_is_not_a_number_is_zero() {
        assert_eq!(normalise_score(f64::NAN, 1.0), 0.0);
        assert_eq!(normalise_score(f64::INFINITY, 100.0), 1.0);
        assert_eq!(normalise_score(f64::NEG_INFINITY, 1.0), 0.0);
        assert_eq!(normalise_score(0.0, 0.0), 0.0, "0/0 is NaN");
    }

    #[test]
    fn scores_are_clamped_into_unit_range() {
        assert_eq!(normalise_score(97.5, 100.0), 0.975);
        assert_eq!(normalise_score(0.42, 1.0), 0.42);
        assert_eq!(normalise_score(120.0, 100.0), 1.0);
        assert_eq!(normalise_score(-3.0, 1.0), 0.0);
    }

    #[test]
    fn backend_response_becomes_an_axum_response() {
        let rendered = BackendResponse::json(
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.1",
            vec![(
                "x-amzn-ErrorType".to_owned(),
                "ImageTooLargeException".to_owned(),
            )],
            &serde_json::json!({"__type": "ImageTooLargeException"}),
        );
        let response = rendered.clone().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let headers = response.headers();
        assert_eq!(
            headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/x-amz-json-1.1"[..])
        );
        assert_eq!(
            headers.get("x-amzn-errortype").map(|v| v.as_bytes()),
            Some(&b"ImageTooLargeException"[..])
        );
        let (status, headers, body) = rendered.into_parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers.len(), 2);
        assert_eq!(body, br#"{"__type":"ImageTooLargeException"}"#);
    }

    #[test]
    fn wire_numbers_keep_the_f32_digits() {
        assert_eq!(wire_number(0.97).to_string(), "0.97");
        assert_eq!(wire_number(97.5).to_string(), "97.5");
        assert_eq!(wire_number(f32::NAN).to_string(), "0");
    }
}
