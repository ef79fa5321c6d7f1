//! Face++ (Megvii) `facepp/v3/detect` (face rectangles) and
//! `imagepp/beta/detectsceneandobject` (scene and object labels).
//!
//! Request: `POST /facepp/v3/detect` or `POST /imagepp/beta/detectsceneandobject`, a form —
//! `multipart/form-data` or `application/x-www-form-urlencoded` — with `api_key`, `api_secret`
//! and one image: a file part `image_file`, a field `image_base64`, or a field `image_url`.
//!
//! Answers:
//!
//! ```json
//! {"request_id": "1563508595,a168b2bb-…", "time_used": 271, "image_id": "J6SxH10JZSNG…",
//!  "face_num": 1, "faces": [{"face_token": "706e…",
//!                            "face_rectangle": {"top": 204, "left": 130, "width": 214, "height": 214}}]}
//! {"request_id": "…", "time_used": 120, "image_id": "…",
//!  "scenes": [{"value": "beach", "confidence": 88.2}], "objects": [{"value": "dog", "confidence": 95.1}]}
//! ```
//!
//! Quirks this file handles:
//! - One image per request; when several are given, `image_file` wins over `image_base64`,
//!   which wins over `image_url` (Face++'s documented order). `image_url` is remote: the
//!   backend does not fetch it, the proxy leaves it untouched.
//! - At most [`MAX_IMAGE_BYTES`] (2 MB) of image, decoded.
//! - Errors are `{"error_message": "CODE: detail", "request_id", "time_used"}` with HTTP 400
//!   (`MISSING_ARGUMENTS`, `BAD_ARGUMENTS`, `INVALID_IMAGE_URL`, `IMAGE_FILE_TOO_LARGE`,
//!   `IMAGE_ERROR_UNSUPPORTED_FORMAT`), 401/403 (`AUTHENTICATION_ERROR`,
//!   `CONCURRENCY_LIMIT_EXCEEDED`), 404 (`API_NOT_FOUND`), 413, 500 (`INTERNAL_ERROR`).
//!   [`FacePlusPlus::parse_answer`] splits the code (the kind) from the detail (the message).
//! - `confidence` is a percentage; detect's faces carry no confidence ([`Region::score`] is 1).
//! - The multipart form is rewritten by [`super::multipart`], every byte but the image's kept;
//!   in a urlencoded form only the `image_base64` value changes.
//! - The backend does not check `api_key`/`api_secret` (the client side's
//!   [`super::Protocol::client_request`] carries none); it answers the scene operation with
//!   ImageNet labels as `objects` ([`MAX_OBJECTS`] of them) and no `scenes`, and detect with the
//!   face detector it was given, if any.

use std::borrow::Cow;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Number, Value, json};
use sha2::Digest as _;

use super::api::{Api, Emulated};
use super::multipart::{self, Multipart, NewPart};
use super::one_image::{Found, only_result, single_replacement, slot_not_replaceable};
use super::shape::{ApiError, ErrorKind, Kind};
use super::{
    Answer, BackendImage, BackendRequest, BackendResponse, ClientRequest, FormField, ImageProblem,
    ImageSlot, ProtocolError, Region, SlotImage, content_type_text, decode_form_base64,
    encode_base64, excerpt, form_encode, form_fields, fresh_id, is_success, labels_from,
    media_type, parse_json, read_answer, splice, wire_number,
};
use super::{BadRequest, ErrorClass};
use super::{ProxyRequest, Rewritten};
use super::{WireLabel, wire::Field, wire::wire_object};

/// A Face++ answer: detect's `faces`, the scene operation's `objects` and `scenes`, or
/// `error_message` (`CODE: detail`) at any status.
#[derive(Debug, Deserialize)]
struct WireAnswer<'a> {
    #[serde(default, borrow)]
    error_message: Field<Cow<'a, str>>,
    #[serde(default)]
    faces: Field<Vec<Field<Face>>>,
    #[serde(default, borrow)]
    objects: Field<Vec<Field<Thing<'a>>>>,
    #[serde(default, borrow)]
    scenes: Field<Vec<Field<Thing<'a>>>>,
}

/// One of `faces`; only the rectangle is read.
#[derive(Debug, Deserialize)]
struct Face {
    #[serde(default)]
    face_rectangle: Field<Rectangle>,
}

/// `face_rectangle`, in pixels.
#[derive(Debug, Deserialize)]
struct Rectangle {
    #[serde(default)]
    left: Field<Number>,
    #[serde(default)]
    top: Field<Number>,
    #[serde(default)]
    width: Field<Number>,
    #[serde(default)]
    height: Field<Number>,
}

/// One of `objects` or `scenes`: `{"value", "confidence"}` (percent).
#[derive(Debug, Deserialize)]
struct Thing<'a> {
    #[serde(default, borrow)]
    value: Field<Cow<'a, str>>,
    #[serde(default)]
    confidence: Field<Number>,
}

impl WireLabel for Thing<'_> {
    fn name(&self) -> Option<&str> {
        self.value.text()
    }

    fn score(&self) -> Option<f64> {
        self.confidence.ok().and_then(Number::as_f64)
    }
}

wire_object!(Face, Rectangle);
wire_object!('a, WireAnswer, Thing);

/// The path of face detection.
pub const DETECT_PATH: &str = "/facepp/v3/detect";

/// The path of scene and object detection.
pub const SCENE_PATH: &str = "/imagepp/beta/detectsceneandobject";

/// The largest image accepted, decoded (2 MiB).
pub const MAX_IMAGE_BYTES: usize = 2 * 1024 * 1024;

/// Object labels the backend answers a scene request with.
pub const MAX_OBJECTS: usize = 5;

/// The content type of answers.
pub(crate) const CONTENT_TYPE: &str = "application/json";

/// `confidence` is a percentage.
const CONFIDENCE_SCALE: f64 = 100.0;

/// The form fields that may hold the image, in Face++'s order of precedence.
const IMAGE_FIELDS: &str = "image_url, image_file, image_base64";

/// Which Face++ operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// `facepp/v3/detect`: face rectangles.
    Detect,
    /// `imagepp/beta/detectsceneandobject`: labels.
    #[default]
    Scene,
}

impl Operation {
    /// The operation served at `path` (query ignored).
    pub fn of_path(path: &str) -> Option<Operation> {
        match path.split('?').next().unwrap_or_default() {
            DETECT_PATH => Some(Operation::Detect),
            SCENE_PATH => Some(Operation::Scene),
            _ => None,
        }
    }

    /// The path of the operation.
    pub fn path(self) -> &'static str {
        match self {
            Operation::Detect => DETECT_PATH,
            Operation::Scene => SCENE_PATH,
        }
    }
}

/// What the renderer needs from the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The operation asked for: it decides the answer's shape.
    pub operation: Operation,
    /// `image_id`: a digest of the image bytes.
    pub image_id: String,
    /// When the request was read, for `time_used`.
    pub received: Option<Instant>,
}

/// The scene-and-object request for one image: see [`super::Protocol::client_request`].
/// `credentials` are `(api_key, api_secret)`, sent as form fields before the image.
pub fn scene_request(image: &[u8], credentials: Option<(&str, &str)>) -> ClientRequest {
    form_request(Operation::Scene, image, credentials)
}

/// The face-detection request for one image; `credentials` as for [`scene_request`].
pub fn detect_request(image: &[u8], credentials: Option<(&str, &str)>) -> ClientRequest {
    form_request(Operation::Detect, image, credentials)
}

/// A multipart request with the image as the `image_file` part.
fn form_request(
    operation: Operation,
    image: &[u8],
    credentials: Option<(&str, &str)>,
) -> ClientRequest {
    let mut parts = Vec::new();
    if let Some((key, secret)) = credentials {
        for (name, value) in [("api_key", key), ("api_secret", secret)] {
            parts.push(NewPart {
                name,
                filename: None,
                content_type: None,
                body: value.as_bytes(),
            });
        }
    }
    parts.push(NewPart {
        name: "image_file",
        filename: Some("image.jpg"),
        content_type: Some("application/octet-stream"),
        body: image,
    });
    let bodies: Vec<&[u8]> = parts.iter().map(|part| part.body).collect();
    let boundary = multipart::fresh_boundary(&bodies);
    ClientRequest {
        path_and_query: operation.path().to_owned(),
        headers: vec![(
            "Content-Type".to_owned(),
            format!("{}; boundary={boundary}", multipart::FORM_DATA),
        )],
        body: multipart::encode(&boundary, &parts),
    }
}

/// The `faces` array of a detect answer.
fn parse_faces(faces: &[Field<Face>]) -> Result<Vec<Region>, ProtocolError> {
    faces
        .iter()
        .enumerate()
        .map(|(i, face)| {
            let rectangle = face.ok().and_then(|face| face.face_rectangle.ok());
            let number = |name: &str, pick: fn(&Rectangle) -> &Field<Number>| {
                rectangle
                    .and_then(|rect| pick(rect).ok())
                    .and_then(Number::as_f64)
                    .ok_or_else(|| ProtocolError::UnexpectedAnswer {
                        detail: format!(
                            "faces[{i}].face_rectangle.{name} is missing or not a number"
                        ),
                    })
            };
            // Pixel coordinates fit an f32 exactly up to 2^24.
            Ok(Region {
                left: number("left", |r| &r.left)? as f32,
                top: number("top", |r| &r.top)? as f32,
                width: number("width", |r| &r.width)? as f32,
                height: number("height", |r| &r.height)? as f32,
                score: 1.0,
            })
        })
        .collect()
}

/// Renders the answer for the request's single image in the shape of `reply.operation`.
///
/// Detect renders [`Answer::regions`] as `faces` (pixels rounded, a fresh `face_token` each);
/// scene renders the labels as `objects` (confidence × 100) and no `scenes`. An undecodable
/// image is `IMAGE_ERROR_UNSUPPORTED_FORMAT`; anything but one result is our bug (500).
pub fn render_backend_response(
    reply: &Reply,
    results: Vec<Result<Answer, ImageProblem>>,
) -> BackendResponse {
    let Some(result) = only_result("Face++", results) else {
        return internal_error();
    };
    let answer = match result {
        Ok(answer) => answer,
        Err(ImageProblem::Request(err)) => {
            return super::Protocol::FacePlusPlus.render_backend_error(&err);
        }
        Err(problem @ ImageProblem::Undecodable(_)) => {
            tracing::debug!(%problem, "image rejected");
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("IMAGE_ERROR_UNSUPPORTED_FORMAT: {problem}"),
            );
        }
        Err(problem @ ImageProblem::Internal(_)) => {
            tracing::error!(%problem, "image failed");
            return internal_error();
        }
    };
    let time_used = reply
        .received
        .map_or(0, |received| received.elapsed().as_millis());
    let body = match reply.operation {
        Operation::Detect => {
            let faces: Vec<Value> = answer
                .regions
                .iter()
                .map(|region| {
                    json!({
                        "face_token": fresh_id(),
                        "face_rectangle": {
                            "top": pixels(region.top),
                            "left": pixels(region.left),
                            "width": pixels(region.width),
                            "height": pixels(region.height),
                        },
                    })
                })
                .collect();
            json!({
                "request_id": request_id(),
                "time_used": time_used,
                "faces": faces,
                "image_id": reply.image_id,
                "face_num": faces.len(),
            })
        }
        Operation::Scene => {
            let objects: Vec<Value> = answer
                .labels
                .iter()
                .map(|label| {
                    json!({
                        "value": label.name,
                        "confidence": wire_number(label.score * CONFIDENCE_SCALE as f32),
                    })
                })
                .collect();
            json!({
                "request_id": request_id(),
                "time_used": time_used,
                "scenes": [],
                "objects": objects,
                "image_id": reply.image_id,
            })
        }
    };
    BackendResponse::json(StatusCode::OK, CONTENT_TYPE, Vec::new(), &body)
}

/// A coordinate as Face++ writes them: whole pixels.
fn pixels(value: f32) -> i64 {
    // Saturating float-to-int conversion: coordinates are far inside i64.
    value.round() as i64
}

/// An error answer with `message` as `error_message`.
fn error_response(status: StatusCode, message: &str) -> BackendResponse {
    super::shape::render(
        super::Protocol::FacePlusPlus,
        &ApiError::new(status, Kind::Name(message), ""),
    )
}

/// The generic 500 answer; the cause goes to the log, not to the client.
fn internal_error() -> BackendResponse {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
}

/// A request id as Face++ writes them: `unix seconds,uuid`.
fn request_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{seconds},{}", uuid::Uuid::new_v4().hyphenated())
}

/// The request's single image slot (index 0) at `image_file`, `image_base64` or `image_url`.
///
/// Errors when the body is neither form (another content type, broken multipart); no image
/// or bad base64 is an unusable slot, left for the service to reject.
pub fn extract_images(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
    let form = Form::read(headers, body)?;
    Ok(vec![slot_of(&form.find_image())])
}

/// The slot for what [`Form::find_image`] found.
fn slot_of(found: &Found<Image<'_>>) -> ImageSlot {
    found.slot("image_url", "image_file", |image| match image {
        Image::File { bytes, .. } => ("image_file", SlotImage::Inline(bytes.to_vec())),
        Image::Base64 { text, .. } => (
            "image_base64",
            match decode_form_base64(text, || "image_base64".to_owned()) {
                Ok(bytes) => SlotImage::Inline(bytes),
                Err(err) => SlotImage::Unusable(err.to_string()),
            },
        ),
    })
}

/// The body with the image replaced (slot 0 is the only slot): see
/// [`super::Protocol::replace_images`]. An `image_file` part gets the new bytes, an
/// `image_base64` part or field their base64; every other byte is kept.
pub fn replace_images(
    headers: &HeaderMap,
    body: &[u8],
    replacements: &[(usize, Vec<u8>)],
) -> Result<Vec<u8>, ProtocolError> {
    let Some(bytes) = single_replacement(replacements)? else {
        return Ok(body.to_vec());
    };
    let form = Form::read(headers, body)?;
    let found = form.find_image();
    let slot = slot_of(&found);
    if let Some(err) = slot_not_replaceable(&slot) {
        return Err(err);
    }
    let not_replaceable = |reason: String| ProtocolError::NotReplaceable {
        index: 0,
        path: slot.path.clone(),
        reason,
    };
    match (&form, &found) {
        (Form::Multipart(parts), Found::Inline(Image::File { part, .. })) => parts
            .replace(&[(*part, bytes)])
            .map_err(|err| not_replaceable(err.to_string())),
        (
            Form::Multipart(parts),
            Found::Inline(Image::Base64 {
                at: At::Part(part), ..
            }),
        ) => parts
            .replace(&[(*part, encode_base64(bytes).as_bytes())])
            .map_err(|err| not_replaceable(err.to_string())),
        (
            Form::Urlencoded(_),
            Found::Inline(Image::Base64 {
                at: At::Value(range),
                ..
            }),
        ) => {
            let value = form_encode(&encode_base64(bytes));
            Ok(splice(body, range.clone(), value.as_bytes()))
        }
        _ => Err(not_replaceable("its field was not located".to_owned())),
    }
}

/// A request body as one of the two form encodings.
enum Form<'a> {
    /// `multipart/form-data`.
    Multipart(Multipart<'a>),
    /// `application/x-www-form-urlencoded` (also assumed without a content type).
    Urlencoded(Vec<FormField>),
}

/// Where a field's value sits.
enum At {
    /// The body of the multipart part with this index.
    Part(usize),
    /// These bytes of a urlencoded body.
    Value(std::ops::Range<usize>),
}

/// The request's inline image.
enum Image<'a> {
    /// A multipart `image_file` part.
    File {
        /// Index of the part.
        part: usize,
        /// Its body.
        bytes: &'a [u8],
    },
    /// An `image_base64` part or field.
    Base64 {
        /// Where it sits.
        at: At,
        /// Its text.
        text: String,
    },
}

impl<'a> Form<'a> {
    /// Reads the body as the form its content type says.
    fn read(headers: &HeaderMap, body: &'a [u8]) -> Result<Form<'a>, ProtocolError> {
        match media_type(headers).as_deref() {
            Some(multipart::FORM_DATA) => {
                let boundary = multipart::boundary(&content_type_text(headers))?;
                Ok(Form::Multipart(multipart::parse(body, &boundary)?))
            }
            Some(super::baidu::FORM_CONTENT_TYPE) | None => {
                Ok(Form::Urlencoded(form_fields(body)?))
            }
            Some(_) => Err(ProtocolError::InvalidValue {
                path: super::CONTENT_TYPE_FIELD.to_owned(),
                expected: "multipart/form-data or application/x-www-form-urlencoded",
                got: content_type_text(headers),
            }),
        }
    }

    /// The first non-empty value of field `name`: where it is and its bytes.
    fn field(&self, name: &str) -> Option<(At, &[u8])> {
        match self {
            Form::Multipart(form) => form
                .parts
                .iter()
                .enumerate()
                .find(|(_, part)| part.name.as_deref() == Some(name) && !part.body.is_empty())
                .map(|(i, part)| (At::Part(i), part.body)),
            Form::Urlencoded(fields) => fields
                .iter()
                .find(|field| field.name == name && !field.value.is_empty())
                .map(|field| (At::Value(field.value_range.clone()), field.value.as_bytes())),
        }
    }

    /// The image by Face++'s precedence: `image_file`, `image_base64`, `image_url`.
    fn find_image(&self) -> Found<Image<'_>> {
        if let (Form::Multipart(_), Some((At::Part(part), bytes))) =
            (self, self.field("image_file"))
        {
            return Found::Inline(Image::File { part, bytes });
        }
        if let Some((at, text)) = self.field("image_base64") {
            return Found::Inline(Image::Base64 {
                at,
                text: String::from_utf8_lossy(text).trim().to_owned(),
            });
        }
        if let Some((_, url)) = self.field("image_url") {
            return Found::Remote {
                path: "image_url".to_owned(),
                reference: String::from_utf8_lossy(url).into_owned(),
            };
        }
        Found::Missing(ProtocolError::NoImage {
            path: "request body".to_owned(),
            fields: "image_file, image_base64 nor image_url",
        })
    }
}

/// The Face++ adapter: [`Api`] and [`Emulated`], forwarding to this file's functions;
/// registered as [`super::Protocol::FacePlusPlus`].
#[derive(Debug, Clone, Copy)]
pub struct FacePlusPlus;

impl Api for FacePlusPlus {
    fn name(&self) -> &'static str {
        "facepp"
    }

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn error_body(&self, err: &ApiError<'_>) -> (Value, Vec<(String, String)>) {
        let body = json!({
            "time_used": 0,
            "error_message": err.with_detail(err.kind.name()),
            "request_id": err.request_id.map_or_else(request_id, str::to_owned),
        });
        (body, Vec::new())
    }

    fn proxy_kind(&self, status: StatusCode) -> Kind<'static> {
        Kind::Name(match status.as_u16() {
            400 | 408 => "BAD_ARGUMENTS",
            403 => "AUTHORIZATION_ERROR",
            404 | 405 => "API_NOT_FOUND",
            413 => "Request Entity Too Large",
            429 | 503 => "CONCURRENCY_LIMIT_EXCEEDED",
            _ => "INTERNAL_ERROR",
        })
    }

    fn max_image_bytes(&self) -> Option<usize> {
        Some(MAX_IMAGE_BYTES)
    }

    fn recognizes(&self, route: &str, _headers: &HeaderMap) -> bool {
        route == DETECT_PATH || route == SCENE_PATH
    }

    /// Whether a path (query ignored) is one of Face++'s endpoints: anything under `/facepp/`
    /// or `/imagepp/`.
    fn owns(&self, _method: &Method, route: &str, _headers: &HeaderMap) -> bool {
        let route = route.split('?').next().unwrap_or_default();
        route.starts_with("/facepp/") || route.starts_with("/imagepp/")
    }

    fn client_request(&self, image: &[u8], _max_labels: usize) -> ClientRequest {
        scene_request(image, None)
    }

    /// A detect answer's faces as [`Answer::regions`], or a scene answer's objects and scenes as
    /// labels (confidence divided by 100).
    ///
    /// `error_message` (at any status) becomes [`ProtocolError::Service`] with the code before
    /// the colon as kind; a non-2xx answer in no known shape [`ProtocolError::Upstream`] (Face++
    /// answers 413 in plain text).
    fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Answer, ProtocolError> {
        let doc = super::parse_json(body, "answer body").ok();
        let answer = doc.as_ref().and_then(read_answer::<WireAnswer>);
        if let Some(message) = answer.as_ref().and_then(|a| a.error_message.text()) {
            let (kind, detail) = message.split_once(':').unwrap_or((message, ""));
            return Err(ProtocolError::Service {
                status,
                kind: kind.trim().to_owned(),
                message: detail.trim().to_owned(),
            });
        }
        if !is_success(status) {
            return Err(ProtocolError::Upstream {
                status,
                excerpt: excerpt(body),
            });
        }
        let Some(answer) = answer else {
            if doc.is_none() {
                // Not JSON: the parser's own error.
                parse_json(body, "answer body")?;
            }
            return Err(ProtocolError::UnexpectedAnswer {
                detail: "no `faces`, `objects` or `scenes`".to_owned(),
            });
        };
        match &answer.faces {
            Field::Absent => {}
            Field::Is(faces) => return parse_faces(faces).map(Answer::detections),
            Field::Wrong(_) => {
                return Err(ProtocolError::UnexpectedAnswer {
                    detail: "`faces` is not an array".to_owned(),
                });
            }
        }
        if matches!(answer.objects, Field::Absent) && matches!(answer.scenes, Field::Absent) {
            return Err(ProtocolError::UnexpectedAnswer {
                detail: "no `faces`, `objects` or `scenes`".to_owned(),
            });
        }
        let mut labels = Vec::new();
        for (key, items) in [("objects", &answer.objects), ("scenes", &answer.scenes)] {
            let items = match items {
                Field::Absent | Field::Wrong(Value::Null) => continue,
                Field::Is(items) => items,
                Field::Wrong(_) => {
                    return Err(ProtocolError::UnexpectedAnswer {
                        detail: format!("`{key}` is not an array"),
                    });
                }
            };
            labels.extend(labels_from(
                items,
                key,
                ("value", "confidence"),
                CONFIDENCE_SCALE,
            )?);
        }
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

impl Emulated for FacePlusPlus {
    /// Reads a detect or scene request: see [`super::Protocol::parse_backend_request`].
    ///
    /// One image, so every problem is a request-level `Err`: another path, a body that is neither
    /// form, no image, bad base64, an `image_url`, an image over [`MAX_IMAGE_BYTES`].
    /// [`BackendRequest::task`] tells detect (faces) from scene (labels).
    fn parse_backend_request(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<BackendRequest, ProtocolError> {
        let operation =
            Operation::of_path(path).ok_or_else(|| ProtocolError::UnsupportedOperation {
                found: format!("path `{}`", path.split('?').next().unwrap_or_default()),
                expected: "`POST /facepp/v3/detect` or `POST /imagepp/beta/detectsceneandobject`",
            })?;
        let form = Form::read(headers, body)?;
        let bytes = match form.find_image().inline()? {
            Image::File { bytes, .. } => bytes.to_vec(),
            Image::Base64 { text, .. } => decode_form_base64(&text, || "image_base64".to_owned())?,
        };
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(ProtocolError::ImageTooLarge {
                limit: MAX_IMAGE_BYTES,
                actual: bytes.len(),
            });
        }
        let digest = sha2::Sha256::digest(&bytes);
        let image_id = base64::engine::general_purpose::STANDARD.encode(&digest[..16]);
        let max_labels = match operation {
            Operation::Detect => 0,
            Operation::Scene => MAX_OBJECTS,
        };
        Ok(BackendRequest {
            images: vec![Ok(BackendImage {
                bytes,
                max_labels,
                min_score: 0.0,
            })],
            reply: super::Reply::FacePlusPlus(Reply {
                operation,
                image_id,
                received: Some(Instant::now()),
            }),
        })
    }

    fn render_backend_response(
        &self,
        reply: &super::Reply,
        results: Vec<Result<Answer, ImageProblem>>,
    ) -> BackendResponse {
        match reply {
            super::Reply::FacePlusPlus(reply) => render_backend_response(reply, results),
            _ => render_backend_response(&Reply::default(), results),
        }
    }

    /// `CODE: detail`: 404 `API_NOT_FOUND`; 400 `MISSING_ARGUMENTS` (no image, naming the
    /// image fields), `BAD_ARGUMENTS` (bad form or fields), `IMAGE_ERROR_UNSUPPORTED_FORMAT`
    /// (bad base64), `INVALID_IMAGE_URL` (a URL the backend does not fetch),
    /// `IMAGE_FILE_TOO_LARGE`; 503 `SERVICE_UNAVAILABLE` (e.g. no face detector loaded); ours a
    /// generic 500 `INTERNAL_ERROR`.
    fn error_kind(&self, class: ErrorClass) -> ErrorKind {
        let (status, code) = match class {
            ErrorClass::BadRequest(bad) => match bad {
                BadRequest::MissingField | BadRequest::NoImage => {
                    return ErrorKind::new(
                        StatusCode::BAD_REQUEST,
                        Kind::Name("MISSING_ARGUMENTS"),
                    )
                    .saying(IMAGE_FIELDS);
                }
                BadRequest::Unreadable
                | BadRequest::InvalidArgument
                | BadRequest::UnsupportedMediaType
                | BadRequest::UnsupportedFeature => (StatusCode::BAD_REQUEST, "BAD_ARGUMENTS"),
                BadRequest::BadEncoding => {
                    (StatusCode::BAD_REQUEST, "IMAGE_ERROR_UNSUPPORTED_FORMAT")
                }
                BadRequest::RemoteImage => (StatusCode::BAD_REQUEST, "INVALID_IMAGE_URL"),
                BadRequest::ImageTooLarge => (StatusCode::BAD_REQUEST, "IMAGE_FILE_TOO_LARGE"),
            },
            ErrorClass::UnsupportedOperation => (StatusCode::NOT_FOUND, "API_NOT_FOUND"),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            ErrorClass::Internal => {
                return ErrorKind::server_error(Kind::Name("INTERNAL_ERROR"), "");
            }
        };
        ErrorKind::new(status, Kind::Name(code))
    }

    /// The error's message, but an unavailable service gives its reason alone (the code
    /// already says unavailable).
    fn error_detail(&self, err: &ProtocolError) -> String {
        match err {
            ProtocolError::Unavailable { reason } => reason.clone(),
            _ => err.to_string(),
        }
    }

    /// Face++'s concurrency-limit error with status 429 (Face++ itself uses 403): see
    /// [`super::Protocol::render_throttled`].
    fn render_throttled(&self) -> BackendResponse {
        error_response(StatusCode::TOO_MANY_REQUESTS, "CONCURRENCY_LIMIT_EXCEEDED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Label;
    use crate::protocol::{
        AnswerCase, Protocol, ProxyRequest, Task, check_answer_cases, fixture, header_map, json_of,
        typed,
    };

    /// The multipart fixture and its headers (boundary `----WebKitFormBoundary7MA4YWxkTrZu0gW`).
    fn multipart_fixture() -> (HeaderMap, Vec<u8>) {
        let body = fixture("facepp_detect_request.multipart");
        let headers = typed("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW");
        (headers, body)
    }

    #[test]
    fn parse_answer_on_fixtures() {
        // (name, body, status, Ok((top1, label count)) or Err(message fragment))
        let cases: Vec<AnswerCase> = vec![
            (
                "scene",
                fixture("facepp_scene_answer.json"),
                200,
                Ok((Some("dog"), 4)),
            ),
            (
                "detect has no labels",
                fixture("facepp_detect_answer.json"),
                200,
                Ok((None, 0)),
            ),
            (
                "image size",
                fixture("facepp_error_image_size.json"),
                400,
                Err("upstream answered HTTP 400 INVALID_IMAGE_SIZE: image_file"),
            ),
            (
                "concurrency",
                br#"{"time_used": 0, "error_message": "CONCURRENCY_LIMIT_EXCEEDED", "request_id": "1,a"}"#
                    .to_vec(),
                403,
                Err("upstream answered HTTP 403 CONCURRENCY_LIMIT_EXCEEDED: "),
            ),
            (
                "413 in plain text",
                b"<html><title>413 Request Entity Too Large</title></html>".to_vec(),
                413,
                Err("upstream answered HTTP 413: <html><title>413 Request Entity Too Large"),
            ),
            (
                "neither shape",
                br#"{"request_id": "1,a", "time_used": 3}"#.to_vec(),
                200,
                Err("no `faces`, `objects` or `scenes`"),
            ),
            (
                "confidence missing",
                br#"{"objects": [{"value": "dog"}]}"#.to_vec(),
                200,
                Err("objects[0].confidence is missing or not a number"),
            ),
            (
                "not JSON",
                b"{\"objects\": [".to_vec(),
                200,
                Err("answer body is not valid JSON"),
            ),
        ];
        check_answer_cases(cases, |status, body| {
            FacePlusPlus.parse_answer(status, body)
        });

        let scene = FacePlusPlus
            .parse_answer(200, &fixture("facepp_scene_answer.json"))
            .unwrap();
        let names: Vec<&str> = scene.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["dog", "grass", "park", "ball"]);
        assert!((scene.labels[0].score - 0.95127).abs() < 1e-6);

        let detect = FacePlusPlus
            .parse_answer(200, &fixture("facepp_detect_answer.json"))
            .unwrap();
        assert_eq!(detect.regions.len(), 2);
        assert_eq!(
            detect.regions[0],
            Region {
                left: 130.0,
                top: 204.0,
                width: 214.0,
                height: 214.0,
                score: 1.0
            }
        );
        let err =
            FacePlusPlus.parse_answer(403, br#"{"error_message": "CONCURRENCY_LIMIT_EXCEEDED"}"#);
        assert!(err.unwrap_err().is_throttling());
    }

    #[test]
    fn client_requests_round_trip_through_the_backend_parser() {
        let image: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for (request, task) in [
            (
                Protocol::FacePlusPlus.client_request(&image, 10),
                Task::Labels,
            ),
            (detect_request(&image, Some(("key", "secret"))), Task::Faces),
        ] {
            let headers = header_map(&request.headers);
            let content_type = headers["content-type"].to_str().unwrap();
            assert!(content_type.starts_with("multipart/form-data; boundary=adacompress-"));
            let parsed = FacePlusPlus
                .parse_backend_request(&request.path_and_query, &headers, &request.body)
                .unwrap();
            assert_eq!(parsed.task(), task);
            let got = parsed.images[0].as_ref().unwrap();
            assert_eq!(got.bytes, image);
            let slots = extract_images(&headers, &request.body).unwrap();
            assert_eq!(slots[0].bytes(), Some(&image[..]));
        }
        let with_keys = scene_request(b"img", Some(("k", "s")));
        let headers = header_map(&with_keys.headers);
        let boundary = multipart::boundary(headers["content-type"].to_str().unwrap()).unwrap();
        let form = multipart::parse(&with_keys.body, &boundary).unwrap();
        let names: Vec<_> = form.parts.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("api_key"), Some("api_secret"), Some("image_file")]
        );
        assert_eq!(with_keys.path_and_query, SCENE_PATH);
    }

    /// (headers, body, path, the image's first bytes or an error fragment)
    type BodyCase = (
        HeaderMap,
        Vec<u8>,
        &'static str,
        Result<&'static [u8], &'static str>,
    );

    #[test]
    fn backend_reads_every_image_field() {
        let b64 = encode_base64(b"\xff\xd8\xff\xd9");
        let (headers, body) = multipart_fixture();
        let cases: Vec<BodyCase> = vec![
            (
                headers.clone(),
                body.clone(),
                DETECT_PATH,
                Ok(b"\xff\xd8\xff\xe0"),
            ),
            (
                typed("application/x-www-form-urlencoded"),
                format!("api_key=k&api_secret=s&image_base64={}", form_encode(&b64)).into_bytes(),
                SCENE_PATH,
                Ok(b"\xff\xd8\xff\xd9"),
            ),
            (
                HeaderMap::new(),
                format!("image_url=https%3A%2F%2Fx%2Fa.jpg&image_base64={b64}").into_bytes(),
                SCENE_PATH,
                Ok(b"\xff\xd8\xff\xd9"),
            ),
            (
                HeaderMap::new(),
                b"image_url=https%3A%2F%2Fx%2Fa.jpg".to_vec(),
                DETECT_PATH,
                Err("image_url refers to https://x/a.jpg; this backend does not fetch"),
            ),
            (
                HeaderMap::new(),
                b"api_key=k".to_vec(),
                DETECT_PATH,
                Err("request body has neither image_file, image_base64 nor image_url"),
            ),
            (
                typed("application/json"),
                b"{}".to_vec(),
                DETECT_PATH,
                Err("Content-Type header must be multipart/form-data or \
                     application/x-www-form-urlencoded, got application/json"),
            ),
            (
                typed("multipart/form-data"),
                body.clone(),
                DETECT_PATH,
                Err("has no boundary parameter"),
            ),
            (
                headers.clone(),
                body.clone(),
                "/facepp/v3/compare",
                Err("unsupported operation: path `/facepp/v3/compare`"),
            ),
            (
                HeaderMap::new(),
                format!("image_base64={}", "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 4)).into_bytes(),
                DETECT_PATH,
                Err("image is 2097153 bytes, over the limit of 2097152 bytes"),
            ),
        ];
        for (headers, body, path, expected) in cases {
            match (
                FacePlusPlus.parse_backend_request(path, &headers, &body),
                expected,
            ) {
                (Ok(parsed), Ok(start)) => {
                    let bytes = &parsed.images[0].as_ref().unwrap().bytes;
                    assert!(bytes.starts_with(start), "{path}");
                }
                (Err(err), Err(fragment)) => {
                    assert!(err.to_string().contains(fragment), "{err}");
                }
                (got, expected) => panic!("{path}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rendered_answers_parse_back() {
        let regions = vec![
            Region {
                left: 10.4,
                top: 20.6,
                width: 50.0,
                height: 60.2,
                score: 0.93,
            },
            Region {
                left: 100.0,
                top: 30.0,
                width: 40.0,
                height: 44.0,
                score: 0.81,
            },
        ];
        let reply = Reply {
            operation: Operation::Detect,
            image_id: "abc==".to_owned(),
            received: Some(Instant::now()),
        };
        let rendered =
            render_backend_response(&reply, vec![Ok(Answer::detections(regions.clone()))]);
        assert_eq!(rendered.status, StatusCode::OK);
        let doc = json_of(&rendered.body);
        assert_eq!(doc["face_num"], 2);
        assert_eq!(doc["image_id"], "abc==");
        assert_eq!(
            doc["faces"][0]["face_rectangle"],
            json!({"top": 21, "left": 10, "width": 50, "height": 60})
        );
        assert_eq!(doc["faces"][0]["face_token"].as_str().unwrap().len(), 32);
        assert!(doc["request_id"].as_str().unwrap().contains(','));
        let back = FacePlusPlus.parse_answer(200, &rendered.body).unwrap();
        assert!(back.regions_match(&Answer::detections(regions), 0.9));

        let scene = Reply {
            operation: Operation::Scene,
            ..reply
        };
        let labels = Answer::new(vec![Label {
            name: "golden retriever".to_owned(),
            score: 0.8713,
        }]);
        let rendered = render_backend_response(&scene, vec![Ok(labels)]);
        let doc = json_of(&rendered.body);
        assert_eq!(doc["scenes"], json!([]));
        assert_eq!(
            doc["objects"][0],
            json!({"value": "golden retriever", "confidence": 87.13})
        );
        let back = FacePlusPlus.parse_answer(200, &rendered.body).unwrap();
        assert_eq!(back.top1(), Some("golden retriever"));
        assert!((back.labels[0].score - 0.8713).abs() < 1e-6);
    }

    #[test]
    fn errors_render_in_face_plus_plus_shape() {
        // (error, status, error_message prefix)
        let cases: Vec<(ProtocolError, StatusCode, &str)> = vec![
            (
                ProtocolError::NoImage {
                    path: "request body".to_owned(),
                    fields: "x",
                },
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENTS: image_url, image_file, image_base64",
            ),
            (
                ProtocolError::ImageTooLarge {
                    limit: MAX_IMAGE_BYTES,
                    actual: MAX_IMAGE_BYTES + 1,
                },
                StatusCode::BAD_REQUEST,
                "IMAGE_FILE_TOO_LARGE: image is 2097153 bytes, over the limit of 2097152 bytes",
            ),
            (
                ProtocolError::UnsupportedOperation {
                    found: "path `/x`".to_owned(),
                    expected: "y",
                },
                StatusCode::NOT_FOUND,
                "API_NOT_FOUND: ",
            ),
            (
                ProtocolError::Unavailable {
                    reason: "no face detector is loaded".to_owned(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE: no face detector is loaded",
            ),
            (
                ProtocolError::Upstream {
                    status: 500,
                    excerpt: "secret".to_owned(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
            ),
        ];
        for (err, status, prefix) in cases {
            let rendered = crate::protocol::Protocol::FacePlusPlus.render_backend_error(&err);
            assert_eq!(rendered.status, status, "{err}");
            let doc = json_of(&rendered.body);
            let message = doc["error_message"].as_str().unwrap();
            assert!(message.starts_with(prefix), "{message}");
            assert!(!message.contains("secret"));
            let back = FacePlusPlus
                .parse_answer(status.as_u16(), &rendered.body)
                .unwrap_err();
            let code = prefix.split(':').next().unwrap();
            assert!(
                matches!(&back, ProtocolError::Service { kind, .. } if kind == code),
                "{back:?}"
            );
        }
        let undecodable = render_backend_response(
            &Reply::default(),
            vec![Err(ImageProblem::Undecodable("garbage".to_owned()))],
        );
        assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
        assert!(
            json_of(&undecodable.body)["error_message"]
                .as_str()
                .unwrap()
                .starts_with("IMAGE_ERROR_UNSUPPORTED_FORMAT: image could not be decoded")
        );
        let throttled = FacePlusPlus.render_throttled();
        assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            FacePlusPlus
                .parse_answer(429, &throttled.body)
                .unwrap_err()
                .is_throttling()
        );
    }

    #[test]
    fn replace_in_multipart_keeps_every_other_byte() {
        let (headers, body) = multipart_fixture();
        let slots = extract_images(&headers, &body).unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].path, "image_file");
        let original = slots[0].bytes().unwrap().to_vec();
        let req = ProxyRequest {
            path_and_query: DETECT_PATH,
            headers: &headers,
            body: &body,
        };
        let new_image = b"\xff\xd8\xff smaller \xff\xd9".to_vec();
        let rewritten = Protocol::FacePlusPlus
            .replace_images(&req, &[(0, new_image.clone())])
            .unwrap();
        assert!(rewritten.headers.is_empty());
        let at = body
            .windows(original.len())
            .position(|w| w == original)
            .unwrap();
        let expected = [&body[..at], &new_image[..], &body[at + original.len()..]].concat();
        assert_eq!(rewritten.body, expected);
        assert_eq!(
            extract_images(&headers, &rewritten.body).unwrap()[0].bytes(),
            Some(&new_image[..])
        );
        // Unknown fields survive: the return_attributes part is untouched.
        assert!(String::from_utf8_lossy(&rewritten.body).contains("gender,age,smiling"));
        assert_eq!(replace_images(&headers, &body, &[]).unwrap(), body);
    }

    #[test]
    fn replace_base64_in_both_encodings() {
        let old = encode_base64(b"\xff\xd8\xff old");
        let new = b"\xff\xd8\xff new".to_vec();
        // urlencoded: only the value's bytes change.
        let body = format!(
            "api_key=k&image_base64={}&return_landmark=1",
            form_encode(&old)
        );
        let out = replace_images(&HeaderMap::new(), body.as_bytes(), &[(0, new.clone())]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "api_key=k&image_base64={}&return_landmark=1",
                form_encode(&encode_base64(&new))
            )
        );
        // multipart: the part body becomes the new base64.
        let boundary = "b0undary";
        let body = multipart::encode(
            boundary,
            &[NewPart {
                name: "image_base64",
                filename: None,
                content_type: None,
                body: old.as_bytes(),
            }],
        );
        let headers = typed("multipart/form-data; boundary=b0undary");
        let out = replace_images(&headers, &body, &[(0, new.clone())]).unwrap();
        let slots = extract_images(&headers, &out).unwrap();
        assert_eq!(slots[0].path, "image_base64");
        assert_eq!(slots[0].bytes(), Some(&new[..]));
    }

    #[test]
    fn remote_and_broken_images_are_left_alone() {
        let body = b"api_key=k&image_url=https%3A%2F%2Fexample.com%2Fface.jpg";
        let slots = extract_images(&HeaderMap::new(), body).unwrap();
        assert_eq!(
            slots[0].image,
            SlotImage::Remote("https://example.com/face.jpg".to_owned())
        );
        let err = replace_images(&HeaderMap::new(), body, &[(0, b"x".to_vec())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image slot 0 (image_url) cannot be replaced: it refers to \
             https://example.com/face.jpg"
        );
        let broken = extract_images(&HeaderMap::new(), b"image_base64=%%%").unwrap();
        assert!(matches!(&broken[0].image, SlotImage::Unusable(why) if why.contains("base64")));
        assert_eq!(
            replace_images(&HeaderMap::new(), body, &[(2, b"x".to_vec())]).unwrap_err(),
            ProtocolError::NoSuchSlot { index: 2, count: 1 }
        );
        assert!(extract_images(&typed("application/json"), b"{}").is_err());
    }

    #[test]
    fn a_new_image_holding_the_boundary_is_refused() {
        let (headers, body) = multipart_fixture();
        let evil = b"\xff\xd8\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n".to_vec();
        let err = replace_images(&headers, &body, &[(0, evil)]).unwrap_err();
        assert!(
            err.to_string().contains("contains the boundary delimiter"),
            "{err}"
        );
    }
}
