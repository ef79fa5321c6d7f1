//! The committed EfficientNet-Lite0 ONNX is a real ImageNet classifier through tract:
//! photos of known content get the right top-1 class.

mod common;

use adacompress::codec::{self, Limits};
use adacompress::model::{ClassNames, ImageModel, softmax};

/// (photo, expected top-1 class) from the ai-benchmark objects set; each is
/// confident (p > 0.6) in the converted model under onnxruntime.
const KNOWN: [(&str, &str); 10] = [
    ("2.jpg", "African elephant"),
    ("3.jpg", "lesser panda"),
    ("4.jpg", "giant panda"),
    ("5.jpg", "anemone fish"),
    ("8.jpg", "indigo bunting"),
    ("23.jpg", "axolotl"),
    ("30.jpg", "fountain pen"),
    ("64.jpg", "fiddler crab"),
    ("83.jpg", "lynx"),
    ("95.jpg", "Arabian camel"),
];

#[test]
fn lite0_recognises_known_photos() {
    let model = ImageModel::load(&common::lite0(), 224).unwrap();
    let classes = ClassNames::load(&common::root().join("models/imagenet_classes.txt")).unwrap();
    for (file, expected) in KNOWN {
        let img = codec::decode(&common::photo("objects", file), &Limits::default()).unwrap();
        let out = model.run(&img.image).unwrap();
        let top = classes.top_k(&out.logits, 5);
        assert_eq!(top[0].0, expected, "{file}: top-5 {top:?}");
        assert!(
            top[0].1 > 0.4,
            "{file}: {expected} only at p = {}",
            top[0].1
        );
        assert_eq!(out.features.len(), 1280);
    }
}

#[test]
fn features_are_informative_and_side_is_a_knob() {
    let a = codec::decode(&common::photo("objects", "3.jpg"), &Limits::default())
        .unwrap()
        .image;
    let b = codec::decode(&common::photo("objects", "35.jpg"), &Limits::default())
        .unwrap()
        .image;
    for side in [128, 160, 224] {
        let model = ImageModel::load(&common::lite0(), side).unwrap();
        let fa = model.run(&a).unwrap().features;
        let fb = model.run(&b).unwrap().features;
        // Pooled post-activation features: non-negative, not constant, different per photo.
        assert!(
            fa.iter().all(|v| v.is_finite() && *v >= -1e-3),
            "side {side}"
        );
        let diff: f32 = fa.iter().zip(&fb).map(|(x, y)| (x - y).abs()).sum::<f32>() / 1280.0;
        assert!(diff > 0.05, "side {side}: features barely differ ({diff})");
        let p = softmax(&model.run(&a).unwrap().logits);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
}

#[test]
fn wrong_model_path_names_the_file() {
    let err = ImageModel::load(std::path::Path::new("models/nope.onnx"), 224).unwrap_err();
    assert!(err.to_string().contains("models/nope.onnx"), "{err}");
}
