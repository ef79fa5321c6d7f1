//! Seeded mutation fuzzing on stable Rust (issue 8, "a reliability suite the project keeps"):
//! the seven protocol adapters (request parsing, extract → replace → extract round trips, the
//! backend's request parser and renderer against our own answer parsers), the answer parsers,
//! the multipart and form parsers, and the codec (`inspect`, `decode_scaled`, `jpeg_header`).
//!
//! No coverage feedback (that needs nightly): every input is a valid seed with 1–16 random
//! mutations (bit flips, byte inserts and deletes, chunk duplication, splicing between seeds,
//! integer-boundary bytes and numbers, truncation, length-field inflation, dictionary tokens
//! taken from the seeds), with structure fix-ups (PNG CRCs, RIFF sizes) so that mutations get
//! past the first checksum. Input `n` of a target depends only on the master seed, the
//! target's name and `n`, so any input can be replayed alone.
//!
//! Every input runs under `catch_unwind`; a panic or a broken invariant is a failure: its
//! input goes to `target/fuzz-failures/<target>-<n>.bin` (with a `.txt` saying what failed
//! and how to replay it) and the test fails at the end. Panics caught *inside* the crate
//! (`codec` turns libjpeg's unwinding into errors) are counted and reported, not failed.
//!
//! Environment:
//! - `ADACOMPRESS_FUZZ_ITERS`: inputs in total over all targets (default [`DEFAULT_ITERS`]).
//! - `ADACOMPRESS_FUZZ_SEED`: master seed, decimal or `0x…` (default [`DEFAULT_SEED`]).
//! - `ADACOMPRESS_FUZZ_PROGRESS`: print a progress line every this many inputs per target.
//! - `ADACOMPRESS_FUZZ_TARGETS`: comma-separated target names to run (default all).
//! - `ADACOMPRESS_FUZZ_REPLAY`: `target:n`, runs only input `n` of `target` and prints it.
//! - `ADACOMPRESS_FUZZ_JOURNAL`: when set, each input is written to
//!   `target/fuzz-failures/<target>-current.bin` before it runs (to catch inputs that abort
//!   the process, which no `catch_unwind` can).
//! - `ADACOMPRESS_FUZZ_THREADS`: worker threads (default: available parallelism).
//! - `ADACOMPRESS_FUZZ_SUMMARY`: path stem; writes `<stem>.json` and `<stem>.md`.
//! - `ADACOMPRESS_HOSTILE_HEAVY`: also run the full-strength bombs in the corpus test.
//! - `ADACOMPRESS_HOSTILE_REPORT`: path stem; the corpus test writes `<stem>.json`/`.md`.
//! - `ADACOMPRESS_HOSTILE_WRITE`: a folder; the corpus test writes every image there
//!   (`scripts/hostile_corpus.sh`).

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::{b64, fixture};

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use adacompress::codec::{self, EncoderMode, Format, Limits};
use adacompress::protocol::{
    Answer, BackendRequest, ClientRequest, ImageProblem, ImageSlot, Label, Protocol, ProtocolError,
    ProxyRequest, Region, SlotImage, Task, kserve, multipart, torchserve,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine as _;
use image::{DynamicImage, ImageFormat};
use serde_json::{Value, json};

/// Inputs over all targets when `ADACOMPRESS_FUZZ_ITERS` is not set: CI's share.
const DEFAULT_ITERS: u64 = 60_000;

/// The master seed when `ADACOMPRESS_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0xADAC_0F22_5EED_0008;

/// The most inputs of one failure signature whose bytes are saved.
const SAVED_PER_SIGNATURE: usize = 3;

/// Mutated inputs are cut to this many bytes.
const MAX_INPUT_BYTES: usize = 1 << 20;

// =============================================================================================
// Randomness: xorshift64*, seeded through splitmix64.

#[derive(Debug, Clone)]
struct Rng(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

impl Rng {
    /// The generator of input `n` of `target` under `seed`.
    fn for_input(seed: u64, target: &str, n: u64) -> Rng {
        let state = splitmix(seed ^ splitmix(fnv1a(target) ^ splitmix(n)));
        Rng(state | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length in `1..=max`, small lengths much more likely.
    fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let cap = match self.below(4) {
            0 => 4,
            1 => 16,
            2 => 256,
            _ => max,
        };
        1 + self.below(cap.min(max))
    }
}

// =============================================================================================
// Mutations.

/// Integer values at type boundaries.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    7,
    8,
    16,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x3FFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Numbers as text at the edges of what parsers accept.
const INTERESTING_TEXT: [&str; 20] = [
    "0",
    "-0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e308",
    "1e309",
    "-1e-400",
    "0.5",
];

/// Tokens every text target gets, on top of the ones taken from its seeds.
const COMMON_TOKENS: [&str; 34] = [
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "[[[[[[[[[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":",
    "&",
    "=",
    "&&",
    "%",
    "%2",
    "%zz",
    "%00",
    "%2B",
    "%3D",
    "+",
    "\r\n",
    "\n",
    "\r\n\r\n",
    "--",
    ";",
    "\t",
    " ",
    "==",
    "\u{FEFF}",
];

/// Marker and chunk names for the image targets.
const IMAGE_TOKENS: [&[u8]; 30] = [
    b"\xFF\xD8",
    b"\xFF\xD9",
    b"\xFF\xDA\x00\x08\x01\x01\x00\x00\x3F\x00",
    b"\xFF\xC0",
    b"\xFF\xC2",
    b"\xFF\xC4",
    b"\xFF\xDB",
    b"\xFF\xDD\x00\x04\x00\x01",
    b"\xFF\xE1\x00\x10Exif\x00\x00MM\x00\x2a",
    b"\xFF\xEE\x00\x0EAdobe",
    b"\xFF\xFE",
    b"\xFF\x00",
    b"\xFF\xD0",
    b"\xFF\xFF\xFF\xFF",
    b"\x00\x00\x00\x00",
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"zTXt",
    b"iCCP",
    b"acTL",
    b"fcTL",
    b"VP8 ",
    b"VP8L",
    b"VP8X",
    b"ALPH",
    b"ANMF",
    b"EXIF",
];

/// Applies 1–16 random mutations to `data`; `others` are the target's seeds (for splicing),
/// `dict` its tokens.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[&[u8]], dict: &[Vec<u8>]) {
    let rounds = if rng.one_in(4) {
        1 + rng.below(16)
    } else {
        1 + rng.below(3)
    };
    for _ in 0..rounds {
        mutate_once(rng, data, others, dict);
        if data.len() > MAX_INPUT_BYTES {
            data.truncate(MAX_INPUT_BYTES);
        }
    }
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[&[u8]], dict: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(14) {
        // Bit flip.
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        // Random byte.
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next() as u8;
        }
        // Insert random bytes.
        2 => {
            let at = rng.below(len + 1);
            let n = rng.small_len(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            data.drain(at..at + n);
        }
        // Duplicate a chunk, once or many times.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len((len - at).min(4096));
            let chunk = data[at..at + n].to_vec();
            let times = if rng.one_in(8) {
                1 + rng.below(256)
            } else {
                1 + rng.below(3)
            };
            let to = rng.below(len + 1);
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
            data.splice(to..to, repeated);
        }
        // Splice with another seed: its tail after our head, or one of its chunks inserted.
        5 if !others.is_empty() => {
            let other = *rng.pick(others);
            if other.is_empty() {
                return;
            }
            if rng.one_in(2) {
                let head = rng.below(len + 1);
                let tail = rng.below(other.len());
                data.truncate(head);
                data.extend_from_slice(&other[tail..]);
            } else {
                let from = rng.below(other.len());
                let n = rng.small_len(other.len() - from);
                let to = rng.below(len + 1);
                data.splice(to..to, other[from..from + n].iter().copied());
            }
        }
        // An integer-boundary value, 1/2/4/8 bytes, either endianness.
        6 if len > 0 => {
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let value = *rng.pick(&INTERESTING);
            let bytes = if rng.one_in(2) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let bytes = if rng.one_in(2) {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let at = rng.below(len);
            let end = (at + width).min(len);
            data[at..end].copy_from_slice(&bytes[..end - at]);
        }
        // A run of ASCII digits replaced by a boundary number.
        7 => {
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return;
            }
            let start = *rng.pick(&digits);
            let end = (start..len)
                .find(|&i| !data[i].is_ascii_digit())
                .unwrap_or(len);
            let text = rng.pick(&INTERESTING_TEXT).as_bytes().to_vec();
            data.splice(start..end, text);
        }
        // Truncation.
        8 if len > 0 => {
            let at = rng.below(len);
            data.truncate(at);
        }
        // Length-field inflation, format-aware where the format is known.
        9 => inflate_length(rng, data),
        // A dictionary token, inserted or written over.
        10 | 11 if !dict.is_empty() => {
            let token = rng.pick(dict).clone();
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                data.splice(at..at, token);
            } else {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token);
            }
        }
        // Copy a chunk over another place.
        12 if len > 1 => {
            let from = rng.below(len);
            let n = rng.small_len(len - from);
            let chunk = data[from..from + n].to_vec();
            let to = rng.below(len);
            let end = (to + n).min(len);
            data[to..end].copy_from_slice(&chunk[..end - to]);
        }
        // Swap the halves around a point (reorders fields and parts).
        13 if len > 1 => {
            let at = rng.below(len);
            data.rotate_left(at);
        }
        _ => {}
    }
}

/// Makes a length field claim more (or less) than there is: JPEG segment lengths and frame
/// sizes, PNG chunk lengths and IHDR sizes, RIFF sizes, else any 2- or 4-byte field.
fn inflate_length(rng: &mut Rng, data: &mut [u8]) {
    let sizes = [
        0u64,
        1,
        2,
        3,
        0x7F,
        0xFF,
        0x7FFF,
        0xFFFF,
        0x7FFF_FFFF,
        0xFFFF_FFFF,
    ];
    let len = data.len();
    match Format::sniff(data) {
        Some(Format::Jpeg) => {
            let segments = hostile::jpeg_segments(data);
            let Some((marker, start, end)) = (!segments.is_empty()).then(|| *rng.pick(&segments))
            else {
                return;
            };
            if end <= start + 4 {
                return;
            }
            let is_frame = matches!(marker, 0xC0..=0xCF) && ![0xC4, 0xC8, 0xCC].contains(&marker);
            let field = if is_frame && end >= start + 9 && rng.one_in(2) {
                start + 5 + 2 * rng.below(2) // height or width
            } else {
                start + 2
            };
            let old = u16::from_be_bytes([data[field], data[field + 1]]);
            let new = match rng.below(3) {
                0 => *rng.pick(&sizes) as u16,
                1 => old.saturating_mul(2).max(1),
                _ => old.wrapping_add(1 + rng.below(16) as u16),
            };
            data[field..field + 2].copy_from_slice(&new.to_be_bytes());
        }
        Some(Format::Png) => {
            let chunks = png_chunks(data);
            if chunks.is_empty() {
                return;
            }
            let (start, chunk_len) = *rng.pick(&chunks);
            // A chunk list read from a mutated file may end past the data.
            let is_ihdr = data.get(start + 4..start + 8) == Some(&b"IHDR"[..]) && chunk_len >= 8;
            let field = if is_ihdr && rng.one_in(2) {
                start + 8 + 4 * rng.below(2) // width or height
            } else {
                start
            };
            let Some(bytes) = data.get(field..field + 4) else {
                return;
            };
            let old = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
            let new = match rng.below(3) {
                0 => *rng.pick(&sizes) as u32,
                1 => old.saturating_mul(2).max(1),
                _ => old.wrapping_add(1 + rng.below(1024) as u32),
            };
            data[field..field + 4].copy_from_slice(&new.to_be_bytes());
        }
        _ if len >= 4 => {
            let at = rng.below(len - 3);
            let big_endian = rng.one_in(2);
            let width = if rng.one_in(2) { 2 } else { 4 };
            let read = |d: &[u8]| -> u64 {
                let b = &d[at..at + width];
                let mut v = 0u64;
                for k in 0..width {
                    let byte = if big_endian { b[k] } else { b[width - 1 - k] };
                    v = v << 8 | u64::from(byte);
                }
                v
            };
            let old = read(data);
            let new = match rng.below(3) {
                0 => *rng.pick(&sizes),
                1 => old.saturating_mul(2).max(1),
                _ => old + 1 + rng.below(64) as u64,
            };
            let bytes = new.to_be_bytes();
            let bytes = &bytes[8 - width..];
            for k in 0..width {
                data[at + k] = if big_endian {
                    bytes[k]
                } else {
                    bytes[width - 1 - k]
                };
            }
        }
        _ => {}
    }
}

/// The chunks of a PNG: `(start, data length)` while they fit in the bytes.
fn png_chunks(data: &[u8]) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= data.len() {
        let n = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        chunks.push((at, n));
        match at.checked_add(12 + n) {
            Some(next) if next <= data.len() => at = next,
            _ => break,
        }
    }
    chunks
}

/// Recomputes every PNG chunk CRC (so that mutations reach the decoder) and the RIFF size of
/// a WebP; other formats are left alone.
fn fix_checksums(data: &mut [u8]) {
    match Format::sniff(data) {
        Some(Format::Png) => {
            for (start, n) in png_chunks(data) {
                let end = start + 8 + n;
                if end + 4 <= data.len() {
                    let crc = hostile::crc32(&data[start + 4..end]);
                    data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
                }
            }
        }
        Some(Format::Webp) => {
            let size = u32::try_from(data.len() - 8).unwrap_or(u32::MAX);
            data[4..8].copy_from_slice(&size.to_le_bytes());
        }
        _ => {}
    }
}

/// The quoted strings (up to 40 characters) of text seeds, and other tokens, as a dictionary.
fn dictionary(seeds: &[&[u8]], extra: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut dict: Vec<Vec<u8>> = COMMON_TOKENS
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
    dict.extend(extra.iter().map(|t| t.to_vec()));
    for seed in seeds {
        let mut start = None;
        for (i, &b) in seed.iter().enumerate() {
            match (b, start) {
                (b'"', None) => start = Some(i),
                (b'"', Some(s)) => {
                    if i - s <= 41 {
                        dict.push(seed[s..=i].to_vec());
                    }
                    start = None;
                }
                (b'\n' | b'\r', _) => start = None,
                _ => {}
            }
        }
    }
    dict.sort();
    dict.dedup();
    dict
}

// =============================================================================================
// Seeds.

/// A small JPEG, the bytes every "fresh" replacement puts in.
fn fresh_jpeg() -> &'static [u8] {
    static FRESH: OnceLock<Vec<u8>> = OnceLock::new();
    FRESH.get_or_init(|| {
        hostile::jpeg_rgb(&hostile::gradient(24, 16), 60, EncoderMode::FastOptimized)
    })
}

/// A handful of small valid images: JPEG (baseline, optimised, progressive, grayscale,
/// CMYK, EXIF-rotated), PNG (RGB, RGBA, 16-bit, gray+alpha), lossless WebP.
fn seed_images() -> Vec<(String, Vec<u8>)> {
    let gradient = hostile::gradient(48, 32);
    let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(24, 16, |x, y| {
        image::Rgba([x as u8 * 10, y as u8 * 15, 99, (x * y) as u8])
    }));
    let baseline = hostile::jpeg_rgb(&gradient, 80, EncoderMode::Fastest);
    vec![
        ("baseline.jpg".to_owned(), baseline.clone()),
        (
            "optimized.jpg".to_owned(),
            hostile::jpeg_rgb(&gradient, 50, EncoderMode::FastOptimized),
        ),
        (
            "progressive.jpg".to_owned(),
            hostile::jpeg_rgb(&gradient, 70, EncoderMode::Mozjpeg),
        ),
        ("gray.jpg".to_owned(), hostile::jpeg_gray(40, 24)),
        ("cmyk.jpg".to_owned(), hostile::jpeg_cmyk(24, 16)),
        (
            "exif6.jpg".to_owned(),
            hostile::with_exif_orientation(&baseline, 6),
        ),
        (
            "rgb.png".to_owned(),
            hostile::encode(&DynamicImage::ImageRgb8(gradient.clone()), ImageFormat::Png),
        ),
        (
            "rgba.png".to_owned(),
            hostile::encode(&rgba, ImageFormat::Png),
        ),
        (
            "rgb16.png".to_owned(),
            hostile::encode(
                &DynamicImage::ImageRgb16(hostile::gradient16(20, 12)),
                ImageFormat::Png,
            ),
        ),
        (
            "gray-alpha.png".to_owned(),
            hostile::encode(&hostile::gray_alpha(20, 12), ImageFormat::Png),
        ),
        (
            "lossless.webp".to_owned(),
            hostile::encode(&DynamicImage::ImageRgb8(gradient), ImageFormat::WebP),
        ),
        (
            "rgba.webp".to_owned(),
            hostile::encode(&rgba, ImageFormat::WebP),
        ),
    ]
}

/// The image seeds of the codec targets: [`seed_images`] and the cheap hostile images.
fn codec_seeds() -> Vec<Vec<u8>> {
    // Bombs that cost a second or more per decode would slow every mutation of them.
    let expensive = [
        "scan-bomb",
        "deflate-bomb",
        "ztxt-bomb",
        "7071x7071.png",
        "7000x7000",
    ];
    let mut seeds: Vec<Vec<u8>> = seed_images().into_iter().map(|(_, b)| b).collect();
    seeds.extend(
        hostile::corpus()
            .into_iter()
            .filter(|(name, bytes)| {
                bytes.len() <= 64 * 1024 && !expensive.iter().any(|e| name.contains(e))
            })
            .map(|(_, bytes)| bytes),
    );
    seeds
}

/// One request of a protocol target.
#[derive(Debug, Clone)]
struct RequestSeed {
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RequestSeed {
    fn new(path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        RequestSeed {
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: body.into(),
        }
    }

    /// A client request, its random multipart boundary replaced by a fixed one so that
    /// seeds (and so replays) are the same on every run.
    fn from_client(request: ClientRequest) -> Self {
        const FIXED: &str = "adacompress-0123456789abcdef0123456789abcdef";
        let mut body = request.body;
        let mut headers = Vec::new();
        for (name, value) in request.headers {
            let mut value = value;
            if let Some(at) = value.find("boundary=") {
                let boundary = value[at + "boundary=".len()..].to_owned();
                body = replace_all(&body, boundary.as_bytes(), FIXED.as_bytes());
                value = format!("{}{FIXED}", &value[..at + "boundary=".len()]);
            }
            headers.push((name, value.into_bytes()));
        }
        RequestSeed {
            path: request.path_and_query,
            headers,
            body,
        }
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if !from.is_empty() && haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A multipart body of `(name, filename, body)` parts with `boundary`.
fn form_data(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let parts: Vec<multipart::NewPart<'_>> = parts
        .iter()
        .map(|(name, filename, body)| multipart::NewPart {
            name,
            filename: *filename,
            content_type: filename.map(|_| "image/jpeg"),
            body,
        })
        .collect();
    multipart::encode(boundary, &parts)
}

/// Valid requests of `protocol`: what our clients send, the fixtures, and the other shapes
/// each API accepts (batches, remote images, base64 variants, other encodings).
fn request_seeds(protocol: Protocol) -> Vec<RequestSeed> {
    let jpeg = fresh_jpeg();
    let png = hostile::small_png();
    let (j64, p64) = (b64(jpeg), b64(&png));
    let form = |b: &str| form_urlencoded::byte_serialize(b.as_bytes()).collect::<String>();
    let mut seeds = vec![RequestSeed::from_client(protocol.client_request(jpeg, 5))];
    match protocol {
        Protocol::GoogleVision => {
            let path = "/v1/images:annotate?key=k";
            let json_type = [("content-type", "application/json")];
            seeds.push(RequestSeed::new(
                path,
                &json_type,
                fixture("google_batch_request.json"),
            ));
            let batch = json!({"requests": [
                {"image": {"content": j64}, "features": [{"type": "LABEL_DETECTION", "maxResults": 3}]},
                {"image": {"content": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&png)}},
                {"image": {"source": {"gcsImageUri": "gs://bucket/a.jpg"}}},
                {"image": {"content": "!!not base64!!"}},
                {"image": {}},
                {"features": [{"type": "LABEL_DETECTION"}]},
            ]});
            seeds.push(RequestSeed::new(path, &json_type, batch.to_string()));
        }
        Protocol::Rekognition => {
            let headers = [
                ("x-amz-target", "RekognitionService.DetectLabels"),
                ("content-type", "application/x-amz-json-1.1"),
            ];
            seeds.push(RequestSeed::new(
                "/",
                &headers,
                fixture("rekognition_request.json"),
            ));
            seeds.push(RequestSeed::new(
                "/",
                &headers,
                fixture("rekognition_request_s3.json"),
            ));
            let both = json!({"Image": {"Bytes": p64, "S3Object": {"Bucket": "b", "Name": "n"}},
                              "MaxLabels": 3, "MinConfidence": 55});
            seeds.push(RequestSeed::new("/", &headers, both.to_string()));
        }
        Protocol::Baidu => {
            let path = "/rest/2.0/image-classify/v2/advanced_general?access_token=24.x";
            let headers = [("content-type", "application/x-www-form-urlencoded")];
            seeds.push(RequestSeed::new(
                path,
                &headers,
                fixture("baidu_request.txt"),
            ));
            seeds.push(RequestSeed::new(
                path,
                &headers,
                format!("image={}&baike_num=1", p64.replace('+', " ")),
            ));
            seeds.push(RequestSeed::new(
                path,
                &headers,
                format!(
                    "image=&url={}&image={}",
                    form("https://x/y.jpg"),
                    form(&j64)
                ),
            ));
        }
        Protocol::FacePlusPlus => {
            seeds.push(RequestSeed::from_client(
                adacompress::protocol::facepp::detect_request(jpeg, Some(("key", "secret"))),
            ));
            seeds.push(RequestSeed::new(
                "/facepp/v3/detect",
                &[(
                    "content-type",
                    "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                )],
                fixture("facepp_detect_request.multipart"),
            ));
            seeds.push(RequestSeed::new(
                "/facepp/v3/detect",
                &[("content-type", "application/x-www-form-urlencoded")],
                format!(
                    "api_key=k&api_secret=s&image_base64={}&return_attributes=none",
                    form(&j64)
                ),
            ));
            let boundary = "x y;z";
            let mut body = b"preamble\r\n".to_vec();
            body.extend(form_data(
                boundary,
                &[
                    ("api_key", None, b"k"),
                    ("image_base64", None, p64.as_bytes()),
                    ("image_url", None, b"https://example.com/a.jpg"),
                ],
            ));
            body.extend_from_slice(b"epilogue");
            seeds.push(RequestSeed::new(
                "/imagepp/beta/detectsceneandobject",
                &[("content-type", "multipart/form-data; boundary=\"x y;z\"")],
                body,
            ));
            seeds.push(RequestSeed::new(
                "/facepp/v3/detect",
                &[("content-type", "application/x-www-form-urlencoded")],
                "image_url=https%3A%2F%2Fexample.com%2Fa.jpg&api_key=k",
            ));
        }
        Protocol::Azure => {
            let path = "/computervision/imageanalysis:analyze?features=tags&api-version=2024-02-01";
            seeds.push(RequestSeed::new(
                path,
                &[("content-type", "image/png")],
                png.clone(),
            ));
            seeds.push(RequestSeed::new(
                path,
                &[("content-type", "application/json")],
                json!({"url": "https://example.com/a.jpg"}).to_string(),
            ));
        }
        Protocol::KServe => {
            let path = "/v2/models/resnet/versions/2/infer";
            seeds.push(RequestSeed::new(
                path,
                &[("content-type", "application/json")],
                fixture("kserve_request_json.json"),
            ));
            // Binary data: a text prompt, an FP32 tensor, two images (one as base64 text).
            let element = |b: &[u8]| [&(b.len() as u32).to_le_bytes()[..], b].concat();
            let prompt = element(b"a photo of");
            let floats: Vec<u8> = [0.5f32, -1.25]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect();
            let images = [element(jpeg), element(p64.as_bytes())].concat();
            let header = json!({
                "id": "req-42",
                "inputs": [
                    {"name": "prompt", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": prompt.len()}},
                    {"name": "threshold", "shape": [2], "datatype": "FP32",
                     "parameters": {"binary_data_size": floats.len()}},
                    {"name": "image", "shape": [2], "datatype": "BYTES",
                     "parameters": {"binary_data_size": images.len()}},
                ],
                "outputs": [{"name": "labels", "parameters": {"binary_data": true}},
                            {"name": "scores"}],
                "parameters": {"top_k": 3, "binary_data_output": false},
            })
            .to_string();
            let length = header.len().to_string();
            seeds.push(RequestSeed::new(
                path,
                &[
                    ("content-type", "application/octet-stream"),
                    ("inference-header-content-length", &length),
                ],
                [header.as_bytes(), &prompt, &floats, &images].concat(),
            ));
            let nested = json!({"inputs": [{"name": "image", "shape": [2, 1], "datatype": "BYTES",
                                            "data": [[j64], [{"b64": p64}]]}],
                                "parameters": {"binary_data_output": true}});
            seeds.push(RequestSeed::new(
                "/v2/models/m/infer",
                &[("content-type", "application/json")],
                nested.to_string(),
            ));
        }
        Protocol::TorchServe => {
            let path = "/predictions/densenet/1.0";
            for field in ["data", "file"] {
                let boundary = "tsBoundary";
                seeds.push(RequestSeed::new(
                    path,
                    &[("content-type", "multipart/form-data; boundary=tsBoundary")],
                    form_data(
                        boundary,
                        &[("meta", None, b"{}"), (field, Some("a.jpg"), jpeg)],
                    ),
                ));
            }
            seeds.push(RequestSeed::new(
                path,
                &[("content-type", "application/json")],
                "{\"data\": \"x\"}",
            ));
            seeds.push(RequestSeed::new(path, &[], png.clone()));
        }
    }
    seeds
}

/// What each protocol answers: fixtures, throttling, and the backend's renderings of good
/// and failed images.
fn answer_seeds() -> Vec<(Protocol, u16, Vec<u8>)> {
    let mut seeds = Vec::new();
    let fixtures =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol"))
            .expect("tests/fixtures/protocol");
    let mut names: Vec<String> = fixtures
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json") && !name.contains("request"))
        .collect();
    names.sort();
    for name in names {
        let Some(protocol) = Protocol::ALL
            .into_iter()
            .find(|p| name.starts_with(p.name()))
        else {
            continue;
        };
        let status = if name.contains("error") && protocol != Protocol::Baidu {
            400
        } else {
            200
        };
        seeds.push((protocol, status, fixture(&name)));
    }
    for protocol in Protocol::ALL {
        let throttled = protocol.render_throttled();
        seeds.push((protocol, throttled.status.as_u16(), throttled.body));
        for request in request_seeds(protocol) {
            let headers = header_map(&request.headers);
            let Ok(parsed) = protocol.parse_backend_request(&request.path, &headers, &request.body)
            else {
                continue;
            };
            let response = render(protocol, parsed);
            seeds.push((protocol, response.status.as_u16(), response.body));
        }
    }
    seeds
}

/// Multipart bodies with their content types: the protocol seeds' forms and odd shapes
/// (preamble and epilogue, folded and lower-case headers, padded delimiters, empty parts).
fn multipart_seeds() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seeds = Vec::new();
    for protocol in [Protocol::FacePlusPlus, Protocol::TorchServe] {
        for request in request_seeds(protocol) {
            for (name, value) in &request.headers {
                if name.eq_ignore_ascii_case("content-type") && value.starts_with(b"multipart/") {
                    seeds.push((value.clone(), request.body.clone()));
                }
            }
        }
    }
    let odd = [
        &b"This is the preamble.\r\n"[..],
        b"--XyZ\r\n",
        b"Content-Disposition: form-data; name=\"api_key\"\r\n",
        b"\r\n",
        b"key-123\r\n",
        b"--XyZ  \r\n",
        b"Content-Disposition: form-data; name=\"image_file\"; filename=\"a b.jpg\"\r\n",
        b"Content-Type: image/jpeg\r\n",
        b"\r\n",
        b"\xff\xd8\xff\xe0 jpeg \r\n bytes \xff\xd9\r\n",
        b"--XyZ\r\n",
        b"content-disposition:\r\n\tform-data; name=\"note\"\r\n",
        b"\r\n",
        b"text with --XyZ inside, and\r\n--XyZmore on a new line\r\n",
        b"--XyZ\r\n",
        b"\r\n",
        b"no headers\r\n",
        b"--XyZ--\r\n",
        b"epilogue",
    ]
    .concat();
    seeds.push((b"multipart/form-data; boundary=XyZ".to_vec(), odd));
    seeds.push((
        b"Multipart/Form-Data; charset=utf-8; BOUNDARY=\"esc\\\"aped\"".to_vec(),
        b"--esc\"aped\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--esc\"aped--"
            .to_vec(),
    ));
    seeds
}

// =============================================================================================
// Inputs and their checks.

/// One fuzz input.
#[derive(Debug, Clone)]
enum Input {
    /// A client request to the proxy; `pick` chooses which slot a fresh image goes into.
    Request {
        protocol: Protocol,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        pick: usize,
    },
    /// An upstream answer.
    Answer {
        protocol: Protocol,
        status: u16,
        body: Vec<u8>,
    },
    /// A multipart body and its `Content-Type`.
    Multipart {
        content_type: Vec<u8>,
        body: Vec<u8>,
        pick: usize,
    },
    /// Image bytes for the codec; `min_long_side` for `decode_scaled`.
    Image { bytes: Vec<u8>, min_long_side: u32 },
    /// Bytes for `codec::jpeg_header` alone.
    JpegHeader { bytes: Vec<u8> },
}

impl Input {
    /// The bytes saved for a failure: the body or the image.
    fn bytes(&self) -> &[u8] {
        match self {
            Input::Request { body, .. }
            | Input::Answer { body, .. }
            | Input::Multipart { body, .. } => body,
            Input::Image { bytes, .. } | Input::JpegHeader { bytes } => bytes,
        }
    }

    /// Everything but the bytes, for the failure's `.txt`.
    fn describe(&self) -> String {
        match self {
            Input::Request {
                protocol,
                path,
                headers,
                pick,
                ..
            } => {
                let mut text = format!("protocol: {protocol}\nrequest: POST {path}\n");
                for (name, value) in headers {
                    let _ = writeln!(text, "header: {name}: {}", String::from_utf8_lossy(value));
                }
                let _ = writeln!(
                    text,
                    "fresh image goes to inline slot number {pick} (mod count)"
                );
                text
            }
            Input::Answer {
                protocol, status, ..
            } => format!("protocol: {protocol}\nanswer status: {status}\n"),
            Input::Multipart {
                content_type, pick, ..
            } => format!(
                "content-type: {}\npart picked: {pick}\n",
                String::from_utf8_lossy(content_type)
            ),
            Input::Image { min_long_side, .. } => {
                format!("decode_scaled min_long_side: {min_long_side}\n")
            }
            Input::JpegHeader { .. } => String::new(),
        }
    }
}

/// A header map from `(name, value)` pairs; pairs that are not valid HTTP are dropped.
fn header_map(headers: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Fails with the message when the condition does not hold.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The backend's answer to a parsed request: every good image gets two labels (or a face for
/// Face++ detect), every bad image its problem.
fn render(protocol: Protocol, parsed: BackendRequest) -> adacompress::protocol::BackendResponse {
    let task = parsed.task();
    let BackendRequest { images, reply } = parsed;
    let results: Vec<Result<Answer, ImageProblem>> = images
        .into_iter()
        .map(|image| {
            image.map(|image| {
                let answer = match task {
                    Task::Labels => Answer::new(vec![
                        Label {
                            name: "fuzz".to_owned(),
                            score: 0.75,
                        },
                        Label {
                            name: "other".to_owned(),
                            score: 0.25,
                        },
                    ]),
                    Task::Faces => Answer::detections(vec![Region {
                        left: 1.0,
                        top: 2.0,
                        width: 3.0,
                        height: 4.0,
                        score: 0.5,
                    }]),
                };
                image.limit(answer)
            })
        })
        .collect();
    protocol.render_backend_response(&reply, results)
}

/// Extracts again after a rewrite, with the headers the rewrite asked for.
fn re_extract(
    protocol: Protocol,
    path: &str,
    headers: &HeaderMap,
    rewritten: &adacompress::protocol::Rewritten,
    what: &str,
) -> Result<Vec<ImageSlot>, String> {
    let mut headers = headers.clone();
    for (name, value) in &rewritten.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("{what}: rewrite asked for header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| format!("{what}: rewrite asked for header value {value:?}: {e}"))?;
        headers.insert(name, value);
    }
    let req = ProxyRequest {
        path_and_query: path,
        headers: &headers,
        body: &rewritten.body,
    };
    protocol
        .extract_images(&req)
        .map_err(|e| format!("{what}: the rewritten request no longer parses: {e}"))
}

fn slot_summary(slots: &[ImageSlot]) -> String {
    let items: Vec<String> = slots
        .iter()
        .map(|s| match &s.image {
            SlotImage::Inline(b) => format!("{}:{}:inline({} B)", s.index, s.path, b.len()),
            SlotImage::Remote(r) => format!("{}:{}:remote({r})", s.index, s.path),
            SlotImage::Unusable(why) => format!("{}:{}:unusable({why})", s.index, s.path),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The proxy side (recognise, extract, replace, extract again) and the backend side (parse,
/// render, and our client's parser on the rendering) of one request.
fn check_request(
    protocol: Protocol,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    pick: usize,
) -> Result<(), String> {
    let map = header_map(headers);
    let _ = Protocol::recognize(&Method::POST, path, &map);
    for (model, version) in [kserve::model_of(path), torchserve::model_of(path)]
        .into_iter()
        .flatten()
    {
        ensure!(
            !model.is_empty() && !model.contains('/') && version.is_none_or(|v| !v.is_empty()),
            "model_of({path:?}) = ({model:?}, {version:?})"
        );
    }
    let req = ProxyRequest {
        path_and_query: path,
        headers: &map,
        body,
    };
    let fresh = fresh_jpeg().to_vec();
    match protocol.extract_images(&req) {
        Err(err) => {
            let replaced = protocol.replace_images(&req, &[(0, fresh)]);
            ensure!(
                replaced.is_err(),
                "extract_images failed ({err}) but replace_images of slot 0 succeeded"
            );
        }
        Ok(slots) => {
            for (i, slot) in slots.iter().enumerate() {
                ensure!(slot.index == i, "slot {i} has index {}", slot.index);
            }
            // Nothing replaced: the same slots.
            let unchanged = protocol
                .replace_images(&req, &[])
                .map_err(|e| format!("replace_images(&[]) failed after extract: {e}"))?;
            let again = re_extract(protocol, path, &map, &unchanged, "replace(&[])")?;
            ensure!(
                again == slots,
                "replace(&[]) changed the slots: {} became {}",
                slot_summary(&slots),
                slot_summary(&again)
            );
            // Every inline slot replaced by its own bytes: the same slots.
            let same: Vec<(usize, Vec<u8>)> = slots
                .iter()
                .filter_map(|s| s.bytes().map(|b| (s.index, b.to_vec())))
                .collect();
            if !same.is_empty() {
                let rewritten = protocol.replace_images(&req, &same).map_err(|e| {
                    format!("replacing inline slots with their own bytes failed: {e}")
                })?;
                let again = re_extract(protocol, path, &map, &rewritten, "replace(same)")?;
                ensure!(
                    again == slots,
                    "replacing slots with their own bytes changed them: {} became {}",
                    slot_summary(&slots),
                    slot_summary(&again)
                );
            }
            // One inline slot replaced by a fresh JPEG: that slot has it, the others are kept.
            if !same.is_empty() {
                let k = same[pick % same.len()].0;
                match protocol.replace_images(&req, &[(k, fresh.clone())]) {
                    Ok(rewritten) => {
                        let again = re_extract(protocol, path, &map, &rewritten, "replace(fresh)")?;
                        ensure!(
                            again.len() == slots.len(),
                            "replacing slot {k}: {} slots became {}",
                            slots.len(),
                            again.len()
                        );
                        for (before, after) in slots.iter().zip(&again) {
                            if before.index == k {
                                ensure!(
                                    after.bytes() == Some(&fresh[..]) && after.path == before.path,
                                    "slot {k} replaced by {} B, reads back as {}",
                                    fresh.len(),
                                    slot_summary(std::slice::from_ref(after))
                                );
                            } else {
                                ensure!(
                                    after == before,
                                    "replacing slot {k} changed slot {}: {} became {}",
                                    before.index,
                                    slot_summary(std::slice::from_ref(before)),
                                    slot_summary(std::slice::from_ref(after))
                                );
                            }
                        }
                    }
                    Err(ProtocolError::NotReplaceable { .. }) => {}
                    Err(err) => {
                        return Err(format!(
                            "replacing inline slot {k} with a fresh JPEG failed: {err}"
                        ));
                    }
                }
            }
            // Remote and unusable slots refuse new bytes.
            for slot in slots.iter().filter(|s| !s.is_replaceable()) {
                ensure!(
                    protocol
                        .replace_images(&req, &[(slot.index, fresh.clone())])
                        .is_err(),
                    "slot {} ({}) is not replaceable, yet replace_images accepted new bytes",
                    slot.index,
                    slot_summary(std::slice::from_ref(slot))
                );
            }
            // A slot past the end is named as such.
            let n = slots.len();
            match protocol.replace_images(&req, &[(n, fresh.clone())]) {
                Err(ProtocolError::NoSuchSlot { index, count }) if index == n && count == n => {}
                other => {
                    return Err(format!(
                        "replacing slot {n} of {n}: expected NoSuchSlot, got {:?}",
                        other.map(|r| r.body.len())
                    ));
                }
            }
        }
    }
    // The backend reads the request; our client reads the backend's answer.
    if let Ok(parsed) = protocol.parse_backend_request(path, &map, body) {
        let count = parsed.images.len();
        let all_ok = parsed.images.iter().all(Result::is_ok);
        let response = render(protocol, parsed);
        let status = response.status.as_u16();
        let answers = protocol.parse_answers(status, &response.body);
        if all_ok && count > 0 && response.status.is_success() {
            let answers = answers.map_err(|e| {
                format!(
                    "the backend answered HTTP {status} to a request it accepted and our client \
                     cannot read it: {e}; body: {}",
                    String::from_utf8_lossy(&response.body[..response.body.len().min(300)])
                )
            })?;
            let batch = matches!(protocol, Protocol::GoogleVision | Protocol::KServe);
            let expected = if batch { count } else { 1 };
            ensure!(
                answers.len() == expected,
                "the backend answered {count} images, our client read {} answers",
                answers.len()
            );
            for (i, answer) in answers.iter().enumerate() {
                let answer = answer
                    .as_ref()
                    .map_err(|e| format!("answer {i} of a good image reads as an error: {e}"))?;
                check_answer_shape(answer)?;
            }
        }
    }
    Ok(())
}

/// What every parsed answer promises: scores in `0..=1`, labels best first.
fn check_answer_shape(answer: &Answer) -> Result<(), String> {
    for label in &answer.labels {
        ensure!(
            (0.0..=1.0).contains(&label.score),
            "label {:?} has score {} outside 0..=1",
            label.name,
            label.score
        );
    }
    ensure!(
        answer.labels.windows(2).all(|w| w[0].score >= w[1].score),
        "labels are not sorted by descending score: {:?}",
        answer.labels
    );
    for region in &answer.regions {
        ensure!(
            (0.0..=1.0).contains(&region.score),
            "region {region:?} has a score outside 0..=1"
        );
    }
    Ok(())
}

/// Both answer parsers; they must agree, and every answer must keep its promises.
fn check_answer(protocol: Protocol, status: u16, body: &[u8]) -> Result<(), String> {
    let one = protocol.parse_answer(status, body);
    let many = protocol.parse_answers(status, body);
    if let Ok(answer) = &one {
        check_answer_shape(answer)?;
    }
    if let Err(err) = &one {
        let _ = err.is_throttling();
    }
    if let Ok(answers) = &many {
        for answer in answers.iter().flatten() {
            check_answer_shape(answer)?;
        }
    }
    let consistent = match (&one, &many) {
        (_, Ok(answers)) if !answers.is_empty() => one == answers[0],
        (Err(_), Ok(_)) => true,
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    ensure!(
        consistent,
        "parse_answer and parse_answers disagree: {one:?} vs {many:?}"
    );
    Ok(())
}

/// The multipart parser's promises: parts lie in order inside the body; replacing nothing,
/// or every body by itself, gives the body back byte for byte; a new body without the
/// delimiter is read back, and one holding it is refused.
fn check_multipart(content_type: &[u8], body: &[u8], pick: usize) -> Result<(), String> {
    let content_type = String::from_utf8_lossy(content_type);
    let Ok(boundary) = multipart::boundary(&content_type) else {
        return Ok(());
    };
    let count = boundary.chars().count();
    ensure!(
        (1..=multipart::MAX_BOUNDARY_CHARS).contains(&count),
        "boundary {boundary:?} accepted with {count} characters"
    );
    let Ok(form) = multipart::parse(body, &boundary) else {
        return Ok(());
    };
    let base = body.as_ptr() as usize;
    let mut last_end = 0;
    for (i, part) in form.parts.iter().enumerate() {
        for (what, slice) in [("headers", part.raw_headers), ("body", part.body)] {
            let start = slice.as_ptr() as usize - base;
            ensure!(
                start >= last_end && start + slice.len() <= body.len(),
                "part {i}'s {what} at {start}..{} is out of order or outside the body",
                start + slice.len()
            );
            last_end = start + slice.len();
        }
    }
    let unchanged = form
        .replace(&[])
        .map_err(|e| format!("replace(&[]) failed: {e}"))?;
    ensure!(unchanged == body, "replace(&[]) changed the body");
    let same: Vec<(usize, &[u8])> = form.parts.iter().map(|p| p.body).enumerate().collect();
    let rewritten = form
        .replace(&same)
        .map_err(|e| format!("replacing every part by itself failed: {e}"))?;
    ensure!(
        rewritten == body,
        "replacing every part by itself changed the body"
    );
    if form.parts.is_empty() {
        return Ok(());
    }
    let k = pick % form.parts.len();
    let new = b"fuzz replacement without line breaks";
    let out = form
        .replace(&[(k, new)])
        .map_err(|e| format!("replacing part {k} with a plain body failed: {e}"))?;
    let again = multipart::parse(&out, &boundary)
        .map_err(|e| format!("the body with part {k} replaced does not parse: {e}"))?;
    ensure!(
        again.parts.len() == form.parts.len(),
        "replacing part {k}: {} parts became {}",
        form.parts.len(),
        again.parts.len()
    );
    for (i, (before, after)) in form.parts.iter().zip(&again.parts).enumerate() {
        ensure!(
            after.raw_headers == before.raw_headers && after.name == before.name,
            "replacing part {k} changed the headers of part {i}"
        );
        let expected: &[u8] = if i == k { new } else { before.body };
        ensure!(
            after.body == expected,
            "replacing part {k}: part {i} reads back as {:?}",
            String::from_utf8_lossy(&after.body[..after.body.len().min(80)])
        );
    }
    let evil = format!("x\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"y\"\r\n\r\ny");
    ensure!(
        form.replace(&[(k, evil.as_bytes())]).is_err(),
        "a new body holding the delimiter was accepted"
    );
    Ok(())
}

/// The codec's promises: limits hold, `inspect` and `decode_scaled` agree on format, size
/// and orientation, a scaled JPEG decode is the DCT scale `dct_scale_for` picks, and
/// `jpeg_header`'s quality is in `1..=100`.
fn check_image(bytes: &[u8], min_long_side: u32) -> Result<(), String> {
    let limits = Limits::default();
    let sniffed = Format::sniff(bytes);
    let header = codec::jpeg_header(bytes);
    if let Some(h) = header {
        ensure!(
            (1.0..=100.0).contains(&h.quality),
            "jpeg_header quality {} outside 1..=100",
            h.quality
        );
    }
    let inspected = codec::inspect(bytes, &limits);
    if let Ok(info) = &inspected {
        ensure!(
            Some(info.format) == sniffed,
            "inspect says {:?}, the magic bytes say {sniffed:?}",
            info.format
        );
        ensure!(
            info.width > 0
                && info.height > 0
                && u64::from(info.width) * u64::from(info.height) <= limits.max_pixels,
            "inspect accepted {}×{} over the limits",
            info.width,
            info.height
        );
        ensure!(
            (1..=8).contains(&info.orientation),
            "orientation {}",
            info.orientation
        );
        ensure!(
            info.jpeg
                == if info.format == Format::Jpeg {
                    header
                } else {
                    None
                },
            "inspect's JPEG facts {:?} differ from jpeg_header's {header:?}",
            info.jpeg
        );
    }
    // A full decode only where it is cheap: it is a 150 MB buffer at the pixel limit.
    let min_long_side = match &inspected {
        Ok(info)
            if min_long_side == u32::MAX
                && u64::from(info.width) * u64::from(info.height) > 4_000_000 =>
        {
            512
        }
        _ => min_long_side,
    };
    let Ok(decoded) = codec::decode_scaled(bytes, &limits, min_long_side) else {
        return Ok(());
    };
    let info = inspected
        .as_ref()
        .map_err(|e| format!("decode_scaled succeeded where inspect failed: {e}"))?;
    let (fw, fh) = (decoded.full_width, decoded.full_height);
    let (w, h) = decoded.image.dimensions();
    ensure!(
        Some(decoded.format) == sniffed,
        "decoded format {:?}, magic bytes {sniffed:?}",
        decoded.format
    );
    ensure!(
        (fw, fh, decoded.orientation) == (info.width, info.height, info.orientation),
        "decode_scaled says {fw}×{fh} orientation {}, inspect {}×{} orientation {}",
        decoded.orientation,
        info.width,
        info.height,
        info.orientation
    );
    ensure!(
        w > 0 && h > 0 && w <= fw && h <= fh,
        "decoded {w}×{h} from a {fw}×{fh} image"
    );
    ensure!(
        u64::from(fw) * u64::from(fh) <= limits.max_pixels,
        "decoded a {fw}×{fh} image over the pixel limit"
    );
    let expected = if decoded.format == Format::Jpeg {
        let n = u32::from(codec::dct_scale_for(fw.max(fh), min_long_side));
        ((fw * n).div_ceil(8), (fh * n).div_ceil(8))
    } else {
        (fw, fh)
    };
    ensure!(
        (w, h) == expected,
        "decode_scaled(…, {min_long_side}) of {fw}×{fh} gave {w}×{h}, expected {}×{}",
        expected.0,
        expected.1
    );
    Ok(())
}

// =============================================================================================
// Targets.

/// What a target fuzzes and with what.
enum Kind {
    Request(Protocol, Vec<RequestSeed>),
    Answer(Vec<(Protocol, u16, Vec<u8>)>),
    Multipart(Vec<(Vec<u8>, Vec<u8>)>),
    Codec(Vec<Vec<u8>>),
    JpegHeader(Vec<Vec<u8>>),
}

struct Target {
    name: String,
    /// Share of the inputs.
    weight: u64,
    kind: Kind,
    dict: Vec<Vec<u8>>,
}

fn targets() -> Vec<Target> {
    let mut targets = Vec::new();
    let images = codec_seeds();
    let image_tokens: Vec<&[u8]> = IMAGE_TOKENS.to_vec();
    targets.push(Target {
        name: "codec".to_owned(),
        weight: 5,
        dict: IMAGE_TOKENS.iter().map(|t| t.to_vec()).collect(),
        kind: Kind::Codec(images.clone()),
    });
    let jpegs: Vec<Vec<u8>> = images
        .into_iter()
        .filter(|b| Format::sniff(b) == Some(Format::Jpeg))
        .collect();
    targets.push(Target {
        name: "jpeg_header".to_owned(),
        weight: 2,
        dict: dictionary(&[], &image_tokens),
        kind: Kind::JpegHeader(jpegs),
    });
    for protocol in Protocol::ALL {
        let seeds = request_seeds(protocol);
        let bodies: Vec<&[u8]> = seeds.iter().map(|s| s.body.as_slice()).collect();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        for seed in &seeds {
            for (_, value) in &seed.headers {
                let text = String::from_utf8_lossy(value);
                if let Ok(boundary) = multipart::boundary(&text) {
                    extra.push(format!("--{boundary}").into_bytes());
                    extra.push(format!("\r\n--{boundary}\r\n").into_bytes());
                    extra.push(format!("\r\n--{boundary}--").into_bytes());
                }
            }
        }
        extra.extend(
            [
                "Content-Disposition: form-data; name=\"image_file\"; filename=\"a.jpg\"\r\n\r\n",
                "Content-Disposition: form-data; name=\"image_base64\"\r\n\r\n",
                "Content-Disposition: form-data; name=\"data\"\r\n\r\n",
                "image=",
                "url=",
                "image_base64=",
                "image_url=",
                "/9j/",
                "iVBORw0KGgo",
                "\x00\x00\x00\x00",
                "\u{7f}\u{7f}\u{7f}\u{7f}",
            ]
            .iter()
            .map(|t| t.as_bytes().to_vec()),
        );
        let extra_refs: Vec<&[u8]> = extra.iter().map(Vec::as_slice).collect();
        targets.push(Target {
            name: protocol.name().to_owned(),
            weight: 2,
            dict: dictionary(&bodies, &extra_refs),
            kind: Kind::Request(protocol, seeds),
        });
    }
    let answers = answer_seeds();
    let bodies: Vec<&[u8]> = answers.iter().map(|(_, _, b)| b.as_slice()).collect();
    targets.push(Target {
        name: "answers".to_owned(),
        weight: 3,
        dict: dictionary(&bodies, &[]),
        kind: Kind::Answer(answers.clone()),
    });
    let forms = multipart_seeds();
    let bodies: Vec<&[u8]> = forms.iter().map(|(_, b)| b.as_slice()).collect();
    let mut extra: Vec<Vec<u8>> = Vec::new();
    for (content_type, _) in &forms {
        if let Ok(boundary) = multipart::boundary(&String::from_utf8_lossy(content_type)) {
            extra.push(format!("\r\n--{boundary}\r\n").into_bytes());
            extra.push(format!("\r\n--{boundary}--").into_bytes());
            extra.push(format!("--{boundary}").into_bytes());
        }
    }
    extra.push(b"Content-Disposition: form-data; name=\"a\"; filename=\"b\"".to_vec());
    extra.push(b"\r\n \t".to_vec());
    let extra_refs: Vec<&[u8]> = extra.iter().map(Vec::as_slice).collect();
    targets.push(Target {
        name: "multipart".to_owned(),
        weight: 3,
        dict: dictionary(&bodies, &extra_refs),
        kind: Kind::Multipart(forms),
    });
    targets
}

impl Target {
    /// Input `rng` describes: a seed, mutated.
    fn generate(&self, rng: &mut Rng) -> Input {
        match &self.kind {
            Kind::Request(protocol, seeds) => {
                let seed = rng.pick(seeds);
                let others: Vec<&[u8]> = seeds.iter().map(|s| s.body.as_slice()).collect();
                let mut body = seed.body.clone();
                let mut headers = seed.headers.clone();
                let mut path = seed.path.clone();
                if !rng.one_in(10) {
                    mutate(rng, &mut body, &others, &self.dict);
                }
                if rng.one_in(6) && !headers.is_empty() {
                    let k = rng.below(headers.len());
                    match rng.below(4) {
                        0 => {
                            headers.remove(k);
                        }
                        1 => {
                            let other = rng.pick(seeds);
                            if let Some(h) = other.headers.first() {
                                headers[k] = h.clone();
                            }
                        }
                        _ => {
                            let values: Vec<&[u8]> = seeds
                                .iter()
                                .flat_map(|s| s.headers.iter().map(|(_, v)| v.as_slice()))
                                .collect();
                            mutate(rng, &mut headers[k].1, &values, &self.dict);
                        }
                    }
                }
                if rng.one_in(16) {
                    let mut bytes = path.into_bytes();
                    let paths: Vec<&[u8]> = seeds.iter().map(|s| s.path.as_bytes()).collect();
                    mutate(rng, &mut bytes, &paths, &self.dict);
                    path = String::from_utf8_lossy(&bytes).into_owned();
                }
                Input::Request {
                    protocol: *protocol,
                    path,
                    headers,
                    body,
                    pick: rng.below(64),
                }
            }
            Kind::Answer(seeds) => {
                let (protocol, status, body) = rng.pick(seeds).clone();
                let others: Vec<&[u8]> = seeds.iter().map(|(_, _, b)| b.as_slice()).collect();
                let mut body = body;
                mutate(rng, &mut body, &others, &self.dict);
                let status = if rng.one_in(4) {
                    *rng.pick(&[
                        0u16,
                        99,
                        100,
                        200,
                        201,
                        204,
                        299,
                        300,
                        400,
                        403,
                        404,
                        429,
                        500,
                        503,
                        599,
                        999,
                        u16::MAX,
                    ])
                } else {
                    status
                };
                Input::Answer {
                    protocol,
                    status,
                    body,
                }
            }
            Kind::Multipart(seeds) => {
                let (content_type, body) = rng.pick(seeds).clone();
                let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
                let mut body = body;
                let mut content_type = content_type;
                mutate(rng, &mut body, &others, &self.dict);
                if rng.one_in(8) {
                    let types: Vec<&[u8]> = seeds.iter().map(|(t, _)| t.as_slice()).collect();
                    mutate(rng, &mut content_type, &types, &self.dict);
                }
                Input::Multipart {
                    content_type,
                    body,
                    pick: rng.below(64),
                }
            }
            Kind::Codec(seeds) | Kind::JpegHeader(seeds) => {
                let others: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
                let mut bytes = rng.pick(seeds).clone();
                mutate(rng, &mut bytes, &others, &self.dict);
                if !rng.one_in(4) {
                    fix_checksums(&mut bytes);
                }
                if let Kind::JpegHeader(_) = self.kind {
                    return Input::JpegHeader { bytes };
                }
                let min_long_side = match rng.below(8) {
                    0 => u32::MAX,
                    1 => 1 + rng.below(4096) as u32,
                    2 => 1,
                    _ => 512,
                };
                Input::Image {
                    bytes,
                    min_long_side,
                }
            }
        }
    }
}

fn check(input: &Input) -> Result<(), String> {
    match input {
        Input::Request {
            protocol,
            path,
            headers,
            body,
            pick,
        } => check_request(*protocol, path, headers, body, *pick),
        Input::Answer {
            protocol,
            status,
            body,
        } => check_answer(*protocol, *status, body),
        Input::Multipart {
            content_type,
            body,
            pick,
        } => check_multipart(content_type, body, *pick),
        Input::Image {
            bytes,
            min_long_side,
        } => check_image(bytes, *min_long_side),
        Input::JpegHeader { bytes } => {
            if let Some(h) = codec::jpeg_header(bytes) {
                ensure!(
                    (1.0..=100.0).contains(&h.quality),
                    "jpeg_header quality {} outside 1..=100",
                    h.quality
                );
            }
            Ok(())
        }
    }
}

// =============================================================================================
// Panics: recorded quietly while an input runs.

thread_local! {
    /// Whether this thread is running an input (then panics are recorded, not printed).
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// `message at file:line` of every panic while quiet.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".to_owned());
                let at = info
                    .location()
                    .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
                PANICS.with(|p| p.borrow_mut().push(format!("{message}{at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// What running `f` quietly did: its value or the panic, and the panics caught inside.
fn run_quiet<T>(f: impl FnOnce() -> T) -> (Result<T, String>, Vec<String>) {
    PANICS.with(|p| p.borrow_mut().clear());
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    let mut panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    match result {
        Ok(value) => (Ok(value), panics),
        Err(payload) => {
            let message = panics.pop().unwrap_or_else(|| {
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(panic without a message)".to_owned())
            });
            (Err(message), panics)
        }
    }
}

// =============================================================================================
// Running.

struct Config {
    iters: u64,
    seed: u64,
    progress: Option<u64>,
    only: Option<Vec<String>>,
    replay: Option<(String, u64)>,
    journal: bool,
    threads: usize,
    summary: Option<PathBuf>,
}

fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(parse_u64(&text).unwrap_or_else(|| panic!("{name}={text:?} is not a number")))
}

impl Config {
    fn from_env() -> Config {
        let replay = std::env::var("ADACOMPRESS_FUZZ_REPLAY").ok().map(|text| {
            let (target, n) = text
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("ADACOMPRESS_FUZZ_REPLAY={text:?}: expected target:n"));
            let n = parse_u64(n).unwrap_or_else(|| panic!("ADACOMPRESS_FUZZ_REPLAY={text:?}"));
            (target.to_owned(), n)
        });
        Config {
            iters: env_u64("ADACOMPRESS_FUZZ_ITERS").unwrap_or(DEFAULT_ITERS),
            seed: env_u64("ADACOMPRESS_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            progress: env_u64("ADACOMPRESS_FUZZ_PROGRESS").filter(|&n| n > 0),
            only: std::env::var("ADACOMPRESS_FUZZ_TARGETS")
                .ok()
                .map(|t| t.split(',').map(|s| s.trim().to_owned()).collect()),
            replay,
            journal: std::env::var_os("ADACOMPRESS_FUZZ_JOURNAL").is_some(),
            threads: env_u64("ADACOMPRESS_FUZZ_THREADS")
                .map(|n| n.max(1) as usize)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            summary: std::env::var_os("ADACOMPRESS_FUZZ_SUMMARY").map(PathBuf::from),
        }
    }
}

/// Where failing inputs go: `target/fuzz-failures`.
fn failure_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("fuzz-failures")
}

/// One kind of failure of a target.
#[derive(Debug, Default, Clone)]
struct Finding {
    /// `panic` or `invariant`.
    kind: &'static str,
    /// The first message seen.
    message: String,
    /// How many inputs failed this way.
    count: u64,
    /// Saved inputs.
    saved: Vec<PathBuf>,
    /// The first failing input's number.
    first: u64,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    target: String,
    inputs: u64,
    secs: f64,
    slowest_ms: f64,
    slowest_input: u64,
    /// Failures by signature.
    findings: BTreeMap<String, Finding>,
    /// Panics caught inside the crate (by `codec`'s `catch_unwind`), by message.
    caught: BTreeMap<String, u64>,
}

impl Stats {
    fn failures(&self) -> u64 {
        self.findings.values().map(|f| f.count).sum()
    }
}

/// A failure's signature: its message with numbers blanked, so one bug is one finding.
fn signature(kind: &str, message: &str) -> String {
    let blanked: String = message
        .chars()
        .take(120)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    format!("{kind}: {blanked}")
}

fn run_target(target: &Target, inputs: u64, cfg: &Config, first: u64) -> Stats {
    let mut stats = Stats {
        target: target.name.clone(),
        ..Stats::default()
    };
    let dir = failure_dir();
    let started = Instant::now();
    for n in first..first + inputs {
        let mut rng = Rng::for_input(cfg.seed, &target.name, n);
        let input = target.generate(&mut rng);
        if cfg.journal {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                dir.join(format!("{}-current.bin", target.name)),
                input.bytes(),
            );
        }
        let t0 = Instant::now();
        let (result, caught) = run_quiet(|| check(&input));
        let elapsed = t0.elapsed();
        stats.inputs += 1;
        if elapsed.as_secs_f64() * 1e3 > stats.slowest_ms {
            stats.slowest_ms = elapsed.as_secs_f64() * 1e3;
            stats.slowest_input = n;
        }
        for message in caught {
            *stats.caught.entry(message).or_default() += 1;
        }
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(violation)) => Some(("invariant", violation)),
            Err(panic) => Some(("panic", panic)),
        };
        if let Some((kind, message)) = failure {
            let finding = stats
                .findings
                .entry(signature(kind, &message))
                .or_insert_with(|| Finding {
                    kind,
                    message: message.clone(),
                    first: n,
                    ..Finding::default()
                });
            finding.count += 1;
            if finding.saved.len() < SAVED_PER_SIGNATURE {
                let path = dir.join(format!("{}-{n}.bin", target.name));
                let note = format!(
                    "{kind}: {message}\ntarget: {}\ninput: {n}\nseed: {:#x}\nreplay: \
                     ADACOMPRESS_FUZZ_SEED={:#x} ADACOMPRESS_FUZZ_REPLAY={}:{n} cargo test \
                     --locked --test fuzz fuzz_every_target -- --nocapture\n{}",
                    target.name,
                    cfg.seed,
                    cfg.seed,
                    target.name,
                    input.describe()
                );
                let saved = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&path, input.bytes()))
                    .and_then(|()| std::fs::write(path.with_extension("txt"), note));
                match saved {
                    Ok(()) => {
                        println!(
                            "[fuzz] {} input {n}: {kind}: {message}\n[fuzz]   saved {}",
                            target.name,
                            path.display()
                        );
                        finding.saved.push(path);
                    }
                    Err(err) => println!("[fuzz] could not save {}: {err}", path.display()),
                }
            }
        }
        if let Some(every) = cfg.progress
            && stats.inputs.is_multiple_of(every)
        {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "[fuzz] {:<12} {:>9}/{} {:>8.1}s {:>8.0}/s failures={}",
                target.name,
                stats.inputs,
                inputs,
                secs,
                stats.inputs as f64 / secs.max(1e-9),
                stats.failures()
            );
        }
    }
    stats.secs = started.elapsed().as_secs_f64();
    stats
}

/// Git commit of the tree under test (with `-dirty` when it has changes), or `unknown`.
fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".to_owned(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "test (debug assertions, opt-level 1, dependencies opt-level 3)"
    } else {
        "release"
    }
}

/// Writes `<stem>.json` and `<stem>.md`.
fn write_summary(stem: &Path, cfg: &Config, stats: &[Stats], wall: Duration) {
    let total: u64 = stats.iter().map(|s| s.inputs).sum();
    let failures: u64 = stats.iter().map(Stats::failures).sum();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let targets: Vec<Value> = stats
        .iter()
        .map(|s| {
            json!({
                "target": s.target,
                "inputs": s.inputs,
                "secs": (s.secs * 100.0).round() / 100.0,
                "inputs_per_sec": (s.inputs as f64 / s.secs.max(1e-9)).round(),
                "slowest_ms": (s.slowest_ms * 10.0).round() / 10.0,
                "slowest_input": s.slowest_input,
                "failures": s.failures(),
                "findings": s.findings.values().map(|f| json!({
                    "kind": f.kind,
                    "message": f.message,
                    "count": f.count,
                    "first_input": f.first,
                    "saved": f.saved.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "caught_inside_crate": s.caught,
            })
        })
        .collect();
    let doc = json!({
        "seed": format!("{:#x}", cfg.seed),
        "inputs": total,
        "wall_secs": (wall.as_secs_f64() * 100.0).round() / 100.0,
        "threads": cfg.threads,
        "failures": failures,
        "profile": profile(),
        "git_commit": std::env::var("ADACOMPRESS_FUZZ_COMMIT").unwrap_or_else(|_| git_commit()),
        "machine": {
            "nproc": nproc,
            "cpu": cpu_model(),
        },
        "targets": targets,
    });
    let mut md = String::new();
    let _ = writeln!(md, "# Fuzz run\n");
    let _ = writeln!(
        md,
        "Written by `scripts/fuzz.sh` (`tests/fuzz.rs`, {} profile). Seed `{:#x}`, {} inputs \
         in {:.1} s wall on {} threads; commit `{}`; {} CPUs, {}.\n",
        profile(),
        cfg.seed,
        total,
        wall.as_secs_f64(),
        cfg.threads,
        doc["git_commit"].as_str().unwrap_or_default(),
        nproc,
        cpu_model()
    );
    let _ = writeln!(
        md,
        "| target | inputs | seconds | inputs/s | slowest input (ms) | failures |\n|---|---:|---:|---:|---:|---:|"
    );
    for s in stats {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.0} | {:.1} (#{}) | {} |",
            s.target,
            s.inputs,
            s.secs,
            s.inputs as f64 / s.secs.max(1e-9),
            s.slowest_ms,
            s.slowest_input,
            s.failures()
        );
    }
    let _ = writeln!(md, "\n## Findings\n");
    if failures == 0 {
        let _ = writeln!(md, "None: no panic and no broken invariant.");
    }
    for s in stats {
        for f in s.findings.values() {
            let _ = writeln!(
                md,
                "- **{}**, {} ({} inputs, first #{}): {}{}",
                s.target,
                f.kind,
                f.count,
                f.first,
                f.message.replace('\n', " "),
                f.saved
                    .first()
                    .map_or_else(String::new, |p| format!(" — saved `{}`", p.display()))
            );
        }
    }
    let caught: Vec<(&String, &String, &u64)> = stats
        .iter()
        .flat_map(|s| s.caught.iter().map(move |(m, n)| (&s.target, m, n)))
        .collect();
    if !caught.is_empty() {
        let _ = writeln!(
            md,
            "\n## Panics caught inside the crate\n\nRust panics that the crate's own \
             `catch_unwind` (around libjpeg) turned into errors: not failures, but code \
             that panics where it should return an error.\n"
        );
        for (target, message, n) in caught {
            let _ = writeln!(md, "- {target}: {n}× `{message}`");
        }
    }
    if let Some(parent) = stem.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let json_path = stem.with_extension("json");
    let md_path = stem.with_extension("md");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&doc).expect("json") + "\n",
    )
    .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    std::fs::write(&md_path, md).unwrap_or_else(|e| panic!("{}: {e}", md_path.display()));
    println!(
        "[fuzz] summary: {} and {}",
        json_path.display(),
        md_path.display()
    );
}

/// Every target, `ADACOMPRESS_FUZZ_ITERS` inputs shared by weight; fails on any panic or
/// broken invariant, after running everything.
#[test]
fn fuzz_every_target() {
    install_panic_hook();
    let cfg = Config::from_env();
    let built = Instant::now();
    let mut targets = targets();
    if let Some(only) = &cfg.only {
        targets.retain(|t| only.contains(&t.name));
        assert!(
            !targets.is_empty(),
            "ADACOMPRESS_FUZZ_TARGETS names no target"
        );
    }
    println!(
        "[fuzz] seed {:#x}, {} inputs, {} threads, seeds built in {:.2}s",
        cfg.seed,
        cfg.iters,
        cfg.threads,
        built.elapsed().as_secs_f64()
    );

    if let Some((name, n)) = &cfg.replay {
        let target = targets
            .iter()
            .find(|t| &t.name == name)
            .unwrap_or_else(|| panic!("no target {name}"));
        let input = target.generate(&mut Rng::for_input(cfg.seed, name, *n));
        println!("{}body: {} bytes", input.describe(), input.bytes().len());
        println!(
            "{}",
            String::from_utf8_lossy(&input.bytes()[..input.bytes().len().min(2000)])
        );
        let stats = run_target(target, 1, &cfg, *n);
        assert_eq!(stats.failures(), 0, "{:#?}", stats.findings);
        return;
    }

    let weights: u64 = targets.iter().map(|t| t.weight).sum();
    let work: Vec<(usize, u64)> = targets
        .iter()
        .enumerate()
        // Rounded up, so that the total is at least the inputs asked for.
        .map(|(i, t)| (i, (cfg.iters * t.weight).div_ceil(weights).max(1)))
        .collect();
    let queue = Mutex::new(work);
    let results: Mutex<Vec<Stats>> = Mutex::new(Vec::new());
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.min(targets.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").pop();
                    let Some((i, inputs)) = next else { break };
                    let stats = run_target(&targets[i], inputs, &cfg, 0);
                    results.lock().expect("results").push(stats);
                }
            });
        }
    });
    let wall = wall.elapsed();
    let mut stats = results.into_inner().expect("results");
    stats.sort_by(|a, b| a.target.cmp(&b.target));

    println!(
        "\n{:<12} {:>9} {:>8} {:>9} {:>11} {:>8} {:>7}",
        "target", "inputs", "secs", "inputs/s", "slowest ms", "failures", "caught"
    );
    for s in &stats {
        println!(
            "{:<12} {:>9} {:>8.2} {:>9.0} {:>11.1} {:>8} {:>7}",
            s.target,
            s.inputs,
            s.secs,
            s.inputs as f64 / s.secs.max(1e-9),
            s.slowest_ms,
            s.failures(),
            s.caught.values().sum::<u64>()
        );
    }
    let total: u64 = stats.iter().map(|s| s.inputs).sum();
    println!(
        "{:<12} {:>9} {:>8.2} {:>9.0}   (wall, {} threads, seed {:#x})",
        "total",
        total,
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64().max(1e-9),
        cfg.threads,
        cfg.seed
    );
    for s in &stats {
        for (message, n) in &s.caught {
            println!(
                "[fuzz] {}: panic caught inside the crate {n}×: {message}",
                s.target
            );
        }
    }
    if let Some(stem) = &cfg.summary {
        write_summary(stem, &cfg, &stats, wall);
    }
    let findings: Vec<String> = stats
        .iter()
        .flat_map(|s| {
            s.findings.values().map(move |f| {
                format!(
                    "{} {} ×{} (first input {}): {}\n    saved: {:?}",
                    s.target, f.kind, f.count, f.first, f.message, f.saved
                )
            })
        })
        .collect();
    assert!(
        findings.is_empty(),
        "{} fuzz findings:\n{}",
        findings.len(),
        findings.join("\n")
    );
}

// =============================================================================================
// The hostile corpus through the codec.

/// Every corpus image through `codec::inspect` and `codec::decode_scaled(…, 512)` with the
/// default limits: outcome and time recorded and printed, no panic allowed. Thin images and
/// scan bombs are only recorded (their limits are the subject of issue 8); what the codec
/// already promises (ordinary images decode, EXIF turns them upright, over-limit headers are
/// refused) is asserted.
#[test]
fn hostile_corpus_through_the_codec() {
    install_panic_hook();
    let built = Instant::now();
    let mut corpus = hostile::corpus();
    if std::env::var_os("ADACOMPRESS_HOSTILE_HEAVY").is_some() {
        corpus.extend(hostile::heavy_corpus());
    }
    println!(
        "[hostile] {} images generated in {:.2}s",
        corpus.len(),
        built.elapsed().as_secs_f64()
    );
    if let Some(dir) = std::env::var_os("ADACOMPRESS_HOSTILE_WRITE").map(PathBuf::from) {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (name, bytes) in &corpus {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        println!(
            "[hostile] wrote {} images to {}",
            corpus.len(),
            dir.display()
        );
    }
    let limits = Limits::default();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (name, bytes) in &corpus {
        let t0 = Instant::now();
        let (inspected, caught_inspect) = run_quiet(|| codec::inspect(bytes, &limits));
        let inspect_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let (decoded, caught_decode) = run_quiet(|| codec::decode_scaled(bytes, &limits, 512));
        let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
        let inspect_text = match &inspected {
            Ok(Ok(i)) => format!("ok {}x{} o{}", i.width, i.height, i.orientation),
            Ok(Err(e)) => format!("err: {e}"),
            Err(panic) => format!("PANIC: {panic}"),
        };
        let decode_text = match &decoded {
            Ok(Ok(d)) => format!(
                "ok {}x{} of {}x{} o{}",
                d.image.width(),
                d.image.height(),
                d.full_width,
                d.full_height,
                d.orientation
            ),
            Ok(Err(e)) => format!("err: {e}"),
            Err(panic) => format!("PANIC: {panic}"),
        };
        for (what, result) in [
            ("inspect", inspected.is_err()),
            ("decode_scaled", decoded.is_err()),
        ] {
            if result {
                problems.push(format!("{name}: {what} panicked"));
            }
        }
        for message in caught_inspect.iter().chain(&caught_decode) {
            println!("[hostile] {name}: panic caught inside the crate: {message}");
        }
        // What the codec already promises.
        let ok_dims = match &decoded {
            Ok(Ok(d)) => Some((d.image.width(), d.image.height(), d.orientation)),
            _ => None,
        };
        if let Some(o) = name
            .strip_prefix("exif-orientation-")
            .and_then(|r| r.strip_suffix(".jpg"))
            .and_then(|o| o.parse::<u8>().ok())
        {
            let expected = match o {
                5..=8 => (40, 80, o),
                _ => (80, 40, if (1..=8).contains(&o) { o } else { 1 }),
            };
            if ok_dims != Some(expected) {
                problems.push(format!("{name}: expected {expected:?}, got {decode_text}"));
            }
        }
        let ordinary = [
            "grayscale.jpg",
            "progressive.jpg",
            "rgb16.png",
            "gray-alpha.png",
            "gray16.png",
        ];
        if ordinary.contains(&name.as_str()) && ok_dims.is_none() {
            problems.push(format!("{name}: an ordinary image failed: {decode_text}"));
        }
        let over_limit = ["65500x65500", "60000x60000", "16384x16384"];
        if over_limit.iter().any(|s| name.contains(s)) && !matches!(decoded, Ok(Err(_))) {
            problems.push(format!("{name}: over the pixel limit, yet {decode_text}"));
        }
        rows.push((
            name.clone(),
            bytes.len(),
            inspect_text,
            inspect_ms,
            decode_text,
            decode_ms,
        ));
    }
    println!(
        "\n{:<36} {:>9}  {:<44} {:>9}  {:<52} {:>9}",
        "image", "bytes", "inspect", "ms", "decode_scaled(512)", "ms"
    );
    let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    for (name, size, inspect, inspect_ms, decode, decode_ms) in &rows {
        println!(
            "{:<36} {:>9}  {:<44} {:>9.1}  {:<52} {:>9.1}",
            name,
            size,
            cut(inspect, 44),
            inspect_ms,
            cut(decode, 52),
            decode_ms
        );
    }
    if let Some(stem) = std::env::var_os("ADACOMPRESS_HOSTILE_REPORT").map(PathBuf::from) {
        let doc: Vec<Value> = rows
            .iter()
            .map(|(name, size, inspect, inspect_ms, decode, decode_ms)| {
                json!({"image": name, "bytes": size, "inspect": inspect,
                       "inspect_ms": (inspect_ms * 10.0).round() / 10.0,
                       "decode_scaled_512": decode,
                       "decode_ms": (decode_ms * 10.0).round() / 10.0})
            })
            .collect();
        let mut md = format!(
            "# Hostile images through the codec\n\nWritten by `scripts/fuzz.sh` \
             (`hostile_corpus_through_the_codec` in `tests/fuzz.rs`, {} profile, default \
             `Limits`); the images come from `tests/common/hostile.rs` \
             (`scripts/hostile_corpus.sh` writes them out). Commit `{}`.\n\n\
             | image | bytes | inspect | ms | decode_scaled(…, 512) | ms |\n|---|---:|---|---:|---|---:|\n",
            profile(),
            git_commit()
        );
        for (name, size, inspect, inspect_ms, decode, decode_ms) in &rows {
            let _ = writeln!(
                md,
                "| {name} | {size} | {} | {inspect_ms:.1} | {} | {decode_ms:.1} |",
                inspect.replace('|', "\\|"),
                decode.replace('|', "\\|")
            );
        }
        if let Some(parent) = stem.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(
            stem.with_extension("json"),
            serde_json::to_string_pretty(&doc).expect("json") + "\n",
        )
        .expect("hostile report json");
        std::fs::write(stem.with_extension("md"), md).expect("hostile report md");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
