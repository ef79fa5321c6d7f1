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

use crate::codec::{self, CodecError, EncoderMode};

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

    /// A built-in set by name.
    pub fn builtin(name: &str) -> Option<ActionSet> {
        match name {
            "paper" => Some(ActionSet::paper()),
            "scaled" => Some(ActionSet::scaled()),
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
}
