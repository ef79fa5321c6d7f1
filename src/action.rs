//! Actions: what the agent can do to an image before it is uploaded.
//!
//! An action is a (longest side, JPEG quality) pair, or "keep": upload the original
//! bytes untouched. Keep is an action like any other (DESIGN §3): some photos are so
//! fragile that any re-encode changes the cloud's answer, and a policy that cannot
//! say "leave this one alone" cannot promise high agreement.
//!
//! Applying an action follows the proxy's rule: if the re-encoded image is not
//! smaller than the original, the original is uploaded instead. Training, eval and
//! the proxy therefore measure the same bytes.

use std::fmt;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, EncoderMode, Limits};

/// One thing the agent can do to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Action {
    /// Longest side after downscaling; `None` keeps the size. Never enlarges.
    pub max_side: Option<u32>,
    /// JPEG quality 1–100; `None` means keep the original bytes.
    pub quality: Option<u8>,
}

impl Action {
    /// Upload the original untouched.
    pub const KEEP: Action = Action {
        max_side: None,
        quality: None,
    };

    /// Re-encode at full size with `quality`.
    pub const fn quality(q: u8) -> Action {
        Action {
            max_side: None,
            quality: Some(q),
        }
    }

    /// The same action as it acts on an image whose longest side is `long`: a
    /// "downscale" to a side the image does not exceed is a full-size re-encode, so the
    /// two share one answer.
    pub fn effective(&self, long: u32) -> Action {
        match self.max_side {
            Some(side) if side >= long => Action {
                max_side: None,
                quality: self.quality,
            },
            _ => *self,
        }
    }

    /// Pixels of the upload for an upright `width × height` image (the original's for keep).
    pub fn output_pixels(&self, width: u32, height: u32) -> f64 {
        let (w, h) = (f64::from(width), f64::from(height));
        match (self.quality, self.max_side) {
            (Some(_), Some(side)) if f64::from(side) < w.max(h) => {
                let s = f64::from(side) / w.max(h);
                (w * s).round().max(1.0) * (h * s).round().max(1.0)
            }
            _ => w * h,
        }
    }

    /// Stable short name: `keep`, `q75`, `q75@512`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Parses a name written by [`Action::name`].
    pub fn parse(s: &str) -> Option<Action> {
        if s == "keep" {
            return Some(Action::KEEP);
        }
        let rest = s.strip_prefix('q')?;
        let (q, side) = match rest.split_once('@') {
            Some((q, side)) => (q, Some(side.parse().ok()?)),
            None => (rest, None),
        };
        let q: u8 = q.parse().ok()?;
        (1..=100).contains(&q).then_some(Action {
            max_side: side,
            quality: Some(q),
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.quality, self.max_side) {
            (None, _) => write!(f, "keep"),
            (Some(q), None) => write!(f, "q{q}"),
            (Some(q), Some(s)) => write!(f, "q{q}@{s}"),
        }
    }
}

/// The paper's ten qualities, 5, 15, …, 95.
pub const PAPER_QUALITIES: [u8; 10] = [5, 15, 25, 35, 45, 55, 65, 75, 85, 95];

/// Longest sides of the `uploads` action set (`None` = full size).
pub const UPLOAD_SIDES: [Option<u32>; 8] = [
    None,
    Some(1280),
    Some(960),
    Some(768),
    Some(640),
    Some(512),
    Some(384),
    Some(288),
];

/// JPEG qualities of the `uploads` action set.
pub const UPLOAD_QUALITIES: [u8; 5] = [30, 50, 70, 85, 95];

/// A named, ordered list of actions; the Q-head has one output per action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSet {
    /// `paper` or `scaled` (or a custom name from a checkpoint).
    pub name: String,
    /// Encoder mode every quality in this set means.
    pub encoder: EncoderMode,
    /// The actions, in Q-head output order.
    pub actions: Vec<Action>,
}

impl ActionSet {
    /// The paper's ten qualities at full size, plus keep.
    pub fn paper() -> ActionSet {
        let mut actions = vec![Action::KEEP];
        actions.extend(PAPER_QUALITIES.iter().map(|&q| Action::quality(q)));
        ActionSet {
            name: "paper".into(),
            encoder: EncoderMode::default(),
            actions,
        }
    }

    /// Downscales × qualities, plus keep: cloud models look at ~224–640 px, so
    /// pixels beyond that are often bytes the answer never used.
    pub fn scaled() -> ActionSet {
        let mut actions = vec![Action::KEEP];
        for side in [None, Some(1024), Some(768), Some(512), Some(384)] {
            for q in [15u8, 35, 55, 75, 95] {
                actions.push(Action {
                    max_side: side,
                    quality: Some(q),
                });
            }
        }
        ActionSet {
            name: "scaled".into(),
            encoder: EncoderMode::default(),
            actions,
        }
    }

    /// What real uploads need: keep, plus every longest side in [`UPLOAD_SIDES`] ×
    /// every quality in [`UPLOAD_QUALITIES`]. A cloud shrinks an image to a few hundred
    /// pixels before its model sees it, so on a 3–12 MP phone photo the side is the
    /// largest lever; the qualities then trade the rest.
    pub fn uploads() -> ActionSet {
        let mut actions = vec![Action::KEEP];
        for side in UPLOAD_SIDES {
            for q in UPLOAD_QUALITIES {
                actions.push(Action {
                    max_side: side,
                    quality: Some(q),
                });
            }
        }
        ActionSet {
            name: "uploads".into(),
            encoder: EncoderMode::default(),
            actions,
        }
    }

    /// A built-in set by name.
    pub fn builtin(name: &str) -> Option<ActionSet> {
        match name {
            "paper" => Some(ActionSet::paper()),
            "scaled" => Some(ActionSet::scaled()),
            "uploads" => Some(ActionSet::uploads()),
            _ => None,
        }
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether the set is empty (never for built-in sets).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Index of `action` in the set.
    pub fn index_of(&self, action: &Action) -> Option<usize> {
        self.actions.iter().position(|a| a == action)
    }
}

/// What applying an action produced.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The bytes to upload.
    pub bytes: Vec<u8>,
    /// True when these are the original bytes (keep, or the re-encode was not smaller).
    pub original: bool,
}

/// Applies `action` to an upright decoded image whose encoded form is `original`.
///
/// Falls back to the original bytes when the result would not be smaller.
pub fn apply(
    action: &Action,
    image: &RgbImage,
    original: &[u8],
    encoder: EncoderMode,
) -> Result<Applied, CodecError> {
    let Some(quality) = action.quality else {
        return Ok(Applied {
            bytes: original.to_vec(),
            original: true,
        });
    };
    let resized = action
        .max_side
        .and_then(|side| codec::fit_longest_side(image, side));
    let bytes = codec::encode_jpeg(resized.as_ref().unwrap_or(image), quality, encoder)?;
    if bytes.len() >= original.len() {
        Ok(Applied {
            bytes: original.to_vec(),
            original: true,
        })
    } else {
        Ok(Applied {
            bytes,
            original: false,
        })
    }
}

/// One client image, ready to have actions applied to it the way the proxy does:
/// a downscale decodes the JPEG with DCT scaling at the smallest scale still at least
/// the target side, then resizes; a full-size re-encode decodes it whole. Decodes are
/// kept per scale, so applying a whole action set costs one decode per side.
pub struct Source<'a> {
    original: &'a [u8],
    limits: Limits,
    /// Upright full-resolution size, format and header facts.
    pub info: codec::Inspected,
    pub width: u32,
    pub height: u32,
    decodes: Vec<(u8, RgbImage)>,
}

impl<'a> Source<'a> {
    /// Checks the header against `limits` (nothing is decoded yet).
    pub fn new(original: &'a [u8], limits: &Limits) -> Result<Source<'a>, CodecError> {
        let info = codec::inspect(original, limits)?;
        Ok(Source {
            original,
            limits: *limits,
            info,
            width: info.width,
            height: info.height,
            decodes: Vec::new(),
        })
    }

    /// The original bytes.
    pub fn original(&self) -> &'a [u8] {
        self.original
    }

    /// Longest side of the upright image.
    pub fn long_side(&self) -> u32 {
        self.width.max(self.height)
    }

    /// The upright image decoded at the smallest DCT scale whose longest side is at
    /// least `min_long` (full size for `u32::MAX`). Always exactly that scale, never a
    /// larger decode made earlier: the bytes of an action must not depend on what else
    /// was asked of the same image (training, eval and the proxy ask in other orders).
    pub fn pixels(&mut self, min_long: u32) -> Result<&RgbImage, CodecError> {
        let scale = codec::dct_scale_for(self.long_side(), min_long);
        let at = match self.decodes.iter().position(|(s, _)| *s == scale) {
            Some(i) => i,
            None => {
                let d = codec::decode_scaled(self.original, &self.limits, min_long)?;
                self.decodes.push((scale, d.image));
                self.decodes.len() - 1
            }
        };
        Ok(&self.decodes[at].1)
    }

    /// Applies `action` with the proxy's rule: the original goes up when the result
    /// would not be smaller.
    pub fn apply(&mut self, action: &Action, encoder: EncoderMode) -> Result<Applied, CodecError> {
        let action = action.effective(self.long_side());
        let Some(quality) = action.quality else {
            return Ok(Applied {
                bytes: self.original.to_vec(),
                original: true,
            });
        };
        let bytes = match action.max_side {
            None => codec::encode_jpeg(self.pixels(u32::MAX)?, quality, encoder)?,
            Some(side) => {
                let scaled = self.pixels(side)?;
                match codec::fit_longest_side(scaled, side) {
                    Some(resized) => codec::encode_jpeg(&resized, quality, encoder)?,
                    None => codec::encode_jpeg(scaled, quality, encoder)?,
                }
            }
        };
        if bytes.len() >= self.original.len() {
            Ok(Applied {
                bytes: self.original.to_vec(),
                original: true,
            })
        } else {
            Ok(Applied {
                bytes,
                original: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for set in [ActionSet::paper(), ActionSet::scaled()] {
            for a in &set.actions {
                assert_eq!(Action::parse(&a.name()), Some(*a), "{a}");
            }
        }
        assert_eq!(Action::parse("q0"), None);
        assert_eq!(Action::parse("q101"), None);
        assert_eq!(Action::parse("x75"), None);
        assert_eq!(Action::quality(75).name(), "q75");
    }

    #[test]
    fn paper_set_is_keep_plus_ten_qualities() {
        let set = ActionSet::paper();
        assert_eq!(set.len(), 11);
        assert_eq!(set.actions[0], Action::KEEP);
        assert_eq!(set.actions[10], Action::quality(95));
        assert_eq!(ActionSet::scaled().len(), 26);
    }

    #[test]
    fn apply_falls_back_to_the_original_when_not_smaller() {
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 9]));
        let tiny_original = codec::encode_jpeg(&img, 5, EncoderMode::Fastest).unwrap();
        let a = apply(
            &Action::quality(95),
            &img,
            &tiny_original,
            EncoderMode::Fastest,
        )
        .unwrap();
        assert!(a.original);
        assert_eq!(a.bytes, tiny_original);

        let big_original = codec::encode_jpeg(&img, 100, EncoderMode::Fastest).unwrap();
        let b = apply(
            &Action::quality(30),
            &img,
            &big_original,
            EncoderMode::Fastest,
        )
        .unwrap();
        assert!(!b.original);
        assert!(b.bytes.len() < big_original.len());

        let k = apply(&Action::KEEP, &img, &big_original, EncoderMode::Fastest).unwrap();
        assert!(k.original && k.bytes == big_original);
    }

    #[test]
    fn downscale_action_shrinks_the_image() {
        let img = RgbImage::from_fn(800, 600, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 0])
        });
        let original = codec::encode_jpeg(&img, 100, EncoderMode::Fastest).unwrap();
        let a = Action {
            max_side: Some(400),
            quality: Some(75),
        };
        let out = apply(&a, &img, &original, EncoderMode::Fastest).unwrap();
        let d = codec::decode(&out.bytes, &codec::Limits::default()).unwrap();
        assert_eq!(d.image.dimensions(), (400, 300));
    }

    #[test]
    fn effective_action_folds_sides_the_image_does_not_exceed() {
        let a = Action {
            max_side: Some(768),
            quality: Some(85),
        };
        assert_eq!(a.effective(512), Action::quality(85));
        assert_eq!(a.effective(1024), a);
        assert_eq!(Action::KEEP.effective(100), Action::KEEP);
        assert_eq!(a.output_pixels(1536, 1024), 768.0 * 512.0);
        assert_eq!(a.output_pixels(640, 480), 640.0 * 480.0);
        let set = ActionSet::uploads();
        assert_eq!(set.len(), 1 + UPLOAD_SIDES.len() * UPLOAD_QUALITIES.len());
        for a in &set.actions {
            assert_eq!(Action::parse(&a.name()), Some(*a), "{a}");
        }
    }

    #[test]
    fn source_downscales_from_a_dct_scaled_decode() {
        let img = RgbImage::from_fn(1600, 1200, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8])
        });
        let original = codec::encode_jpeg(&img, 95, EncoderMode::Fastest).unwrap();
        let mut src = Source::new(&original, &Limits::default()).unwrap();
        assert_eq!((src.width, src.height), (1600, 1200));
        // 1600 → 1/2 scale (800) is the smallest decode still ≥ 700.
        assert_eq!(src.pixels(700).unwrap().dimensions(), (800, 600));
        let a = Action {
            max_side: Some(700),
            quality: Some(70),
        };
        let out = src.apply(&a, EncoderMode::Fastest).unwrap();
        assert!(!out.original);
        let back = codec::decode(&out.bytes, &Limits::default()).unwrap();
        assert_eq!(back.image.dimensions(), (700, 525));
        // A side above the image's own is a full-size re-encode.
        let full = src
            .apply(
                &Action {
                    max_side: Some(4000),
                    quality: Some(70),
                },
                EncoderMode::Fastest,
            )
            .unwrap();
        let back = codec::decode(&full.bytes, &Limits::default()).unwrap();
        assert_eq!(back.image.dimensions(), (1600, 1200));
        assert!(
            src.apply(&Action::KEEP, EncoderMode::Fastest)
                .unwrap()
                .original
        );
    }
}
