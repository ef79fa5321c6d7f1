//! What the agent looks at before it decides.
//!
//! Two kinds of state, recorded in every checkpoint:
//!
//! * [`StateKind::Embedding`] (checkpoints before the `uploads` action set): the
//!   backbone's 1280 pooled features plus four scalars — the paper's state.
//! * [`StateKind::Compact`]: ten numbers that say how far *this* upload can be
//!   squeezed and that mean the same thing on every workload — its size and bytes, the
//!   quality and chroma subsampling it was saved with (read from its JPEG header), and
//!   how sure the local backbone is of what it shows (top-1 probability, top-1 − top-2
//!   margin, entropy). A 1280-d embedding learned from a few hundred photos describes
//!   *those* photos; these describe robustness, and transfer between sources.

use serde::{Deserialize, Serialize};

use crate::action::Source;
use crate::codec::Inspected;
use crate::model::{ImageModel, ModelError, Output, softmax};

/// Why an image's state could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The state of kind `kind` of an upload given as a [`Source`]. For the compact state
/// the backbone sees a DCT-scaled decode (the smallest whose shorter side still covers
/// its input); for the embedding, a full decode.
pub fn observe(
    backbone: &ImageModel,
    kind: StateKind,
    source: &mut Source<'_>,
) -> Result<Vec<f32>, StateError> {
    let bytes = source.original().len();
    match kind {
        StateKind::Compact => {
            let side = backbone.side();
            let (long, short) = (source.long_side(), source.width.min(source.height).max(1));
            let need = (u64::from(side) * u64::from(long)).div_ceil(u64::from(short));
            let image = source.pixels(u32::try_from(need).unwrap_or(u32::MAX))?;
            let out = backbone.run(image)?;
            Ok(compact(&out, &source.info, bytes))
        }
        StateKind::Embedding => {
            let image = source.pixels(u32::MAX)?;
            let out = backbone.run(image)?;
            Ok(super::state_vector(
                &out,
                bytes,
                image.width(),
                image.height(),
            ))
        }
    }
}

/// Which state a checkpoint's head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// 1280 backbone features + 4 scalars ([`super::state_vector`]).
    #[default]
    Embedding,
    /// [`COMPACT_DIM`] scalars ([`compact`]).
    Compact,
}

/// Width of the compact state.
pub const COMPACT_DIM: usize = 10;

/// Positions in the compact state.
pub mod idx {
    /// ln of the upright longest side, pixels.
    pub const LN_LONG: usize = 0;
    /// ln of the upright shortest side, pixels.
    pub const LN_SHORT: usize = 1;
    /// ln of the original's size, bytes.
    pub const LN_BYTES: usize = 2;
    /// Bits per pixel of the original.
    pub const BPP: usize = 3;
    /// Estimated JPEG quality / 100 (1 for PNG and WebP).
    pub const QUALITY: usize = 4;
    /// 1 when the chroma is subsampled (4:2:0 …).
    pub const SUBSAMPLED: usize = 5;
    /// The backbone's top-1 probability.
    pub const P1: usize = 6;
    /// Its top-1 − top-2 probability margin.
    pub const MARGIN: usize = 7;
    /// Its entropy over the classes, normalised to 0–1.
    pub const ENTROPY: usize = 8;
    /// 1 for a JPEG original.
    pub const JPEG: usize = 9;
}

/// Top-1 probability, top-1 − top-2 margin and normalised entropy of logits.
pub fn confidence(logits: &[f32]) -> (f32, f32, f32) {
    let p = softmax(logits);
    let (mut first, mut second) = (0f32, 0f32);
    for &v in &p {
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    let entropy: f32 = -p
        .iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f32>();
    (
        first,
        first - second,
        entropy / (p.len().max(2) as f32).ln(),
    )
}

/// The compact state of an upload: `info` from its header, `bytes` its size, `out` the
/// backbone's answer on its (scaled-down) pixels.
pub fn compact(out: &Output, info: &Inspected, bytes: usize) -> Vec<f32> {
    let (p1, margin, entropy) = confidence(&out.logits);
    let long = info.width.max(info.height).max(1) as f32;
    let short = info.width.min(info.height).max(1) as f32;
    let mut s = vec![0f32; COMPACT_DIM];
    s[idx::LN_LONG] = long.ln();
    s[idx::LN_SHORT] = short.ln();
    s[idx::LN_BYTES] = (bytes.max(1) as f32).ln();
    s[idx::BPP] = bytes as f32 * 8.0 / (long * short);
    s[idx::QUALITY] = info.jpeg.map_or(1.0, |j| j.quality / 100.0);
    s[idx::SUBSAMPLED] = f32::from(u8::from(info.jpeg.is_some_and(|j| j.chroma_subsampled)));
    s[idx::P1] = p1;
    s[idx::MARGIN] = margin;
    s[idx::ENTROPY] = entropy;
    s[idx::JPEG] = f32::from(u8::from(info.jpeg.is_some()));
    s
}

/// Size facts the policy needs back from a compact state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub long: u32,
    pub short: u32,
    pub bytes: f64,
}

/// Reads the geometry out of a compact state (`None` for another width).
pub fn geometry(state: &[f32]) -> Option<Geometry> {
    if state.len() != COMPACT_DIM {
        return None;
    }
    Some(Geometry {
        long: state[idx::LN_LONG].exp().round() as u32,
        short: state[idx::LN_SHORT].exp().round() as u32,
        bytes: f64::from(state[idx::LN_BYTES]).exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Format, JpegHeader};

    #[test]
    fn compact_state_round_trips_geometry_and_reads_the_header() {
        let mut logits = vec![0f32; 1000];
        logits[3] = 12.0;
        logits[5] = 6.0;
        let out = Output {
            logits,
            features: vec![0.0; 1280],
        };
        let info = Inspected {
            format: Format::Jpeg,
            width: 4032,
            height: 3024,
            orientation: 6,
            jpeg: Some(JpegHeader {
                quality: 92.0,
                chroma_subsampled: true,
                progressive: false,
            }),
        };
        let s = compact(&out, &info, 3_000_000);
        assert_eq!(s.len(), COMPACT_DIM);
        let g = geometry(&s).unwrap();
        assert_eq!((g.long, g.short), (4032, 3024));
        assert!((g.bytes - 3e6).abs() / 3e6 < 1e-5, "{}", g.bytes);
        assert!((s[idx::QUALITY] - 0.92).abs() < 1e-6);
        assert_eq!(s[idx::SUBSAMPLED], 1.0);
        assert!(s[idx::P1] > 0.8 && s[idx::MARGIN] > 0.7 && s[idx::ENTROPY] < 0.1);
        assert!((s[idx::BPP] - 3e6 * 8.0 / (4032.0 * 3024.0)).abs() < 1e-4);
        assert_eq!(geometry(&[0.0; 3]), None);
    }
}
