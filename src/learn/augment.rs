//! Training-set augmentation: random variants of a photo that look like other
//! photos a client could send — another framing, size, exposure, camera quality.
//!
//! A small photo set is multiplied for training (DESIGN §5); evaluation always runs
//! on whole, unseen photos. Variants are seeded by the photo's hash, so the same
//! photo always yields the same variants and the answer cache keeps working.

use image::RgbImage;
use image::imageops::FilterType;
use rand::{RngExt, SeedableRng};

/// `n` variants of `image` with the JPEG quality each should be encoded at.
pub fn variants(image: &RgbImage, seed_hex: &str, n: usize) -> Vec<(RgbImage, u8)> {
    let seed = u64::from_str_radix(&seed_hex[..seed_hex.len().min(16)], 16).unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| variant(image, &mut rng)).collect()
}

fn variant(image: &RgbImage, rng: &mut impl RngExt) -> (RgbImage, u8) {
    let (w, h) = image.dimensions();
    // Crop: 35–100 % of the area, aspect within 3:4…4:3 of the original's.
    let area = rng.random_range(0.35f64..=1.0);
    let aspect = rng.random_range(0.75f64..=1.333);
    let cw = ((f64::from(w) * (area * aspect).sqrt()).round() as u32).clamp(16.min(w), w);
    let ch = ((f64::from(h) * (area / aspect).sqrt()).round() as u32).clamp(16.min(h), h);
    let x = rng.random_range(0..=w - cw);
    let y = rng.random_range(0..=h - ch);
    let mut out = image::imageops::crop_imm(image, x, y, cw, ch).to_image();
    // Rescale: the longest side ends between 55 % and 100 % of the crop's.
    let scale = rng.random_range(0.55f64..=1.0);
    let (nw, nh) = (
        ((f64::from(cw) * scale).round() as u32).max(16),
        ((f64::from(ch) * scale).round() as u32).max(16),
    );
    if (nw, nh) != (cw, ch) {
        out = image::imageops::resize(&out, nw, nh, FilterType::Triangle);
    }
    if rng.random::<bool>() {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    // Exposure and contrast: ×0.7–1.2 gain, ±20 % contrast around mid-grey.
    let gain = rng.random_range(0.7f32..=1.2);
    let contrast = rng.random_range(0.8f32..=1.2);
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            let v = (f32::from(*c) * gain - 128.0) * contrast + 128.0;
            *c = v.clamp(0.0, 255.0) as u8;
        }
    }
    // Another camera: qualities a phone or a web app would use.
    let quality = [70u8, 80, 85, 90, 95][rng.random_range(0..5)];
    (out, quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_deterministic_and_different() {
        let img = RgbImage::from_fn(200, 150, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
        });
        let a = variants(&img, "00ff00ff00ff00ff", 3);
        let b = variants(&img, "00ff00ff00ff00ff", 3);
        assert_eq!(a.len(), 3);
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1 == y.1));
        assert_ne!(a[0].0, a[1].0);
        for (v, q) in &a {
            assert!(v.width() >= 16 && v.width() <= 200 && v.height() <= 150);
            assert!((70..=95).contains(q));
        }
        assert!(variants(&img, "abc", 0).is_empty());
    }
}
