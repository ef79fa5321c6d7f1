//! The committed BlazeFace model is a real face detector through tract: it finds
//! the face of a portrait where it is, in pixels of the image it was given, finds
//! none on photos without people, and its answer survives ordinary JPEG
//! re-encoding but not the most extreme compression or downscaling.
//!
//! The sample photos in data/photos hold no face the front model can see (people
//! in the street scenes are a few pixels tall; the indoor set is cats), so the
//! face photo is tests/fixtures/faces/astronaut.jpg: NASA's public-domain portrait
//! of Eileen Collins as shipped by scikit-image (see models/NOTICE). Where she is,
//! by eye: face centre about (225, 125), face about 95 px wide.

mod common;

use std::sync::{Arc, OnceLock};

use adacompress::backend::faces::{DEFAULT_THRESHOLD, DetectFaces, FaceDetector};
use adacompress::codec::{self, EncoderMode, Limits};
use adacompress::protocol::Region;
use image::RgbImage;
use image::imageops::{self, FilterType};

/// One detector for all tests of this file (loading optimises the graph).
fn detector() -> &'static FaceDetector {
    static DETECTOR: OnceLock<FaceDetector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        FaceDetector::load(&common::root().join("models/blazeface-front-128.onnx"))
            .expect("load models/blazeface-front-128.onnx")
    })
}

fn decode(bytes: &[u8]) -> RgbImage {
    codec::decode(bytes, &Limits::default())
        .expect("decode")
        .image
}

fn astronaut() -> RgbImage {
    decode(
        &std::fs::read(common::root().join("tests/fixtures/faces/astronaut.jpg"))
            .expect("tests/fixtures/faces/astronaut.jpg"),
    )
}

fn centre(r: &Region) -> (f32, f32) {
    (r.left + r.width / 2.0, r.top + r.height / 2.0)
}

/// Asserts that `r`'s centre is within `tol` pixels of `(x, y)` on both axes.
fn assert_centre(r: &Region, (x, y): (f32, f32), tol: f32, what: &str) {
    let (cx, cy) = centre(r);
    assert!(
        (cx - x).abs() <= tol && (cy - y).abs() <= tol,
        "{what}: face centre ({cx:.1}, {cy:.1}), expected ({x}, {y}) ± {tol}; {r:?}"
    );
}

/// The only face in `faces`.
fn one_face<'a>(faces: &'a [Region], what: &str) -> &'a Region {
    assert_eq!(faces.len(), 1, "{what}: expected one face, got {faces:?}");
    &faces[0]
}

#[test]
fn finds_the_face_of_a_portrait_where_it_is() {
    let img = astronaut();
    let faces = detector().detect(&img).unwrap();
    let face = one_face(&faces, "astronaut");
    assert_centre(face, (225.0, 125.0), 8.0, "astronaut");
    assert!(
        (80.0..=115.0).contains(&face.width) && (80.0..=115.0).contains(&face.height),
        "face size {face:?}"
    );
    assert!(face.score > 0.85 && face.score <= 1.0, "score {face:?}");

    // The same answer through the trait the backend holds.
    let service: Arc<dyn DetectFaces> = Arc::new(detector().clone());
    assert_eq!(service.detect(&img).unwrap(), faces);
}

#[test]
fn boxes_are_in_pixels_of_non_square_images() {
    let img = astronaut();
    let full = *one_face(&detector().detect(&img).unwrap(), "astronaut");
    let (fx, fy) = centre(&full);
    // A landscape crop (rows 0..320) and a portrait one (columns 60..460): the
    // letterbox pads different sides, the face must stay where it is in each.
    for (x, y, w, h) in [(0, 0, 512, 320), (60, 0, 400, 512)] {
        let crop = imageops::crop_imm(&img, x, y, w, h).to_image();
        let what = format!("crop {w}×{h} at ({x}, {y})");
        let faces = detector().detect(&crop).unwrap();
        let face = one_face(&faces, &what);
        assert_centre(face, (fx - x as f32, fy - y as f32), 3.0, &what);
        assert!(
            (face.width / full.width - 1.0).abs() < 0.05,
            "{what}: {face:?} vs {full:?}"
        );
        assert!(face.left >= 0.0 && face.left + face.width <= w as f32);
        assert!(face.top >= 0.0 && face.top + face.height <= h as f32);
    }
}

#[test]
fn finds_two_faces_side_by_side_in_a_wide_image() {
    // 600×300: the head and shoulders (columns 75..375, rows 0..300) twice.
    let head = imageops::crop_imm(&astronaut(), 75, 0, 300, 300).to_image();
    let mut two = RgbImage::new(600, 300);
    imageops::replace(&mut two, &head, 0, 0);
    imageops::replace(&mut two, &head, 300, 0);
    let mut faces = detector().detect(&two).unwrap();
    assert_eq!(faces.len(), 2, "{faces:?}");
    faces.sort_by(|a, b| a.left.total_cmp(&b.left));
    assert_centre(&faces[0], (150.0, 125.0), 8.0, "left face");
    assert_centre(&faces[1], (450.0, 125.0), 8.0, "right face");
    assert!(faces.iter().all(|f| (80.0..=115.0).contains(&f.width)));
}

#[test]
fn finds_no_face_on_photos_without_people() {
    // Elephants, a red panda, a piano, a cat looking into the camera, a street.
    for (set, name) in [
        ("objects", "2.jpg"),
        ("objects", "3.jpg"),
        ("objects", "36.jpg"),
        ("indoor", "21.jpg"),
        ("street", "0.jpg"),
    ] {
        let faces = detector()
            .detect(&decode(&common::photo(set, name)))
            .unwrap();
        assert!(faces.is_empty(), "{set}/{name}: {faces:?}");
    }
}

#[test]
fn the_answer_survives_q75_and_even_q5_but_not_q2() {
    let img = astronaut();
    let original = *one_face(&detector().detect(&img).unwrap(), "original");
    let at = |quality: u8| -> Vec<Region> {
        let bytes = codec::encode_jpeg(&img, quality, EncoderMode::FastOptimized).unwrap();
        detector().detect(&decode(&bytes)).unwrap()
    };
    // Measured (fast-optimized encoder): IoU ≈ 0.98 at Q75, ≈ 0.9 at Q5; at Q2
    // the best score falls below 0.5 and at Q1 nothing is left.
    for quality in [75, 5] {
        let faces = at(quality);
        let face = one_face(&faces, &format!("Q{quality}"));
        let iou = face.iou(&original);
        assert!(
            iou >= 0.5,
            "Q{quality}: IoU {iou} ({face:?} vs {original:?})"
        );
    }
    for quality in [2, 1] {
        assert!(at(quality).is_empty(), "Q{quality} should lose the face");
    }
}

#[test]
fn heavy_downscaling_loses_the_face() {
    let img = astronaut();
    // At 96×96 the face (≈ 18 px) is still found, at the same relative place.
    let small = imageops::resize(&img, 96, 96, FilterType::Triangle);
    let faces = detector().detect(&small).unwrap();
    let face = one_face(&faces, "96×96");
    assert_centre(
        face,
        (225.0 * 96.0 / 512.0, 125.0 * 96.0 / 512.0),
        2.0,
        "96×96",
    );
    // At 48×48 and 32×32 (a face of 6–9 px) it is gone.
    for side in [48, 32] {
        let tiny = imageops::resize(&img, side, side, FilterType::Triangle);
        let faces = detector().detect(&tiny).unwrap();
        assert!(faces.is_empty(), "{side}×{side}: {faces:?}");
    }
}

#[test]
fn committed_model_is_the_one_the_fetch_script_pins() {
    let script = std::fs::read_to_string(common::root().join("scripts/fetch_blazeface.sh"))
        .expect("scripts/fetch_blazeface.sh");
    let pinned = script
        .lines()
        .find_map(|l| l.strip_prefix("MODEL_SHA256=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("MODEL_SHA256 in the script");
    assert_eq!(detector().sha256(), pinned);
    assert_eq!(detector().threshold(), DEFAULT_THRESHOLD);
}

#[test]
fn empty_and_tiny_images_are_not_errors() {
    assert!(detector().detect(&RgbImage::new(0, 0)).unwrap().is_empty());
    assert!(detector().detect(&RgbImage::new(1, 1)).unwrap().is_empty());
    assert!(
        detector()
            .detect(&RgbImage::new(4000, 3))
            .unwrap()
            .is_empty()
    );
}
