//! Image decoding with limits, EXIF orientation, resizing and JPEG encoding.
//!
//! Every client image passes through here twice: once decoded (checked against
//! [`Limits`] from its header *before* any pixel is allocated, so a decompression
//! bomb costs nothing), once re-encoded at the quality the agent picked.
//!
//! JPEG is decoded and encoded with libjpeg (the `mozjpeg` crate): DESIGN §4 found
//! a pure-Rust decoder that silently corrupted some valid optimised-Huffman files,
//! and a proxy must never corrupt a client's image silently. libjpeg reports errors
//! by unwinding, so every call into it sits inside [`std::panic::catch_unwind`].
//! PNG and WebP go through the `image` crate.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageReader, RgbImage, imageops::FilterType, metadata::Orientation};

/// Upper bounds checked before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest encoded image accepted, in bytes.
    pub max_bytes: usize,
    /// Largest decoded image accepted, in pixels (width × height), read from the header.
    pub max_pixels: u64,
    /// Largest ratio of the long side to the short side: a 1×1,000,000 strip has few
    /// pixels but asks every resize to a fixed short side for a huge intermediate.
    #[serde(default = "default_max_aspect")]
    pub max_aspect: u32,
    /// Most scans (SOS segments) a JPEG may have: each progressive scan re-reads the whole
    /// coefficient buffer, so a 200 KB file with thousands of scans costs minutes of CPU.
    #[serde(default = "default_max_scans")]
    pub max_scans: u32,
    /// Wall-clock budget of one JPEG decode, in milliseconds, checked at every marker,
    /// scan and restart interval libjpeg reads: a file that stays under `max_scans` but
    /// still decodes slowly (huge scans, many restart intervals) is cut off here.
    #[serde(default = "default_max_decode_ms")]
    pub max_decode_ms: u32,
}

fn default_max_decode_ms() -> u32 {
    Limits::default().max_decode_ms
}

fn default_max_aspect() -> u32 {
    Limits::default().max_aspect
}

fn default_max_scans() -> u32 {
    Limits::default().max_scans
}

impl Default for Limits {
    fn default() -> Self {
        // 20 MB is Azure's limit, the largest of the supported clouds; 50 MP covers
        // every phone camera while refusing the classic 64k×64k bombs. 32:1 passes every
        // panorama a phone makes; encoders write ≤ 12 scans (mozjpeg's progressive script
        // has 10), libjpeg-turbo's own tools suggest 500 as a hard ceiling.
        Limits {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_aspect: 32,
            max_scans: 100,
            // A 50 MP baseline JPEG decodes in ~0.6 s on one core of the 2-core EPYC VM.
            max_decode_ms: 2000,
        }
    }
}

/// Container formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    /// Recognises a format from its magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::Webp)
        } else {
            None
        }
    }
}

/// Why an image could not be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("image is {value} bytes, over the limit of {limit} bytes")]
    TooManyBytes { limit: usize, value: usize },
    #[error("image is {width}×{height} = {value} pixels, over the limit of {limit} pixels")]
    TooManyPixels {
        limit: u64,
        value: u64,
        width: u32,
        height: u32,
    },
    #[error("image is {width}×{height}, an aspect ratio over the limit of {limit}:1")]
    TooThin { limit: u32, width: u32, height: u32 },
    #[error("JPEG has {value} scans, over the limit of {limit} scans")]
    TooManyScans { limit: u32, value: u32 },
    #[error("JPEG decode took over the limit of {limit_ms} ms (limits.max_decode_ms)")]
    DecodeTimeout { limit_ms: u32 },
    #[error("image format not recognised (expected JPEG, PNG or WebP; first bytes {0})")]
    UnknownFormat(String),
    #[error("image has zero width or height")]
    Empty,
    #[error("could not decode {format:?} image: {reason}")]
    Corrupt { format: Format, reason: String },
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// A decoded image, upright (EXIF orientation applied), 8-bit RGB.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Pixels after orientation.
    pub image: RgbImage,
    /// The container the bytes came in.
    pub format: Format,
    /// The EXIF orientation that was applied (1 = none).
    pub orientation: u8,
    /// Upright size of the full-resolution image; larger than `image` when the JPEG
    /// was decoded with DCT scaling ([`decode_scaled`]).
    pub full_width: u32,
    pub full_height: u32,
}

/// Reads the format and size from the header and checks them against `limits`.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<(Format, u32, u32), CodecError> {
    if bytes.len() > limits.max_bytes {
        return Err(CodecError::TooManyBytes {
            limit: limits.max_bytes,
            value: bytes.len(),
        });
    }
    let format = Format::sniff(bytes)
        .ok_or_else(|| CodecError::UnknownFormat(hex::encode(&bytes[..bytes.len().min(8)])))?;
    let (width, height) = match format {
        Format::Jpeg => {
            let (w, h) = libjpeg(format, || {
                let d = mozjpeg::Decompress::new_mem(bytes)?;
                Ok(d.size())
            })?;
            (w as u32, h as u32)
        }
        Format::Png | Format::Webp => {
            ImageReader::with_format(Cursor::new(bytes), image_format(format))
                .into_dimensions()
                .map_err(|e| CodecError::Corrupt {
                    format,
                    reason: e.to_string(),
                })?
        }
    };
    if width == 0 || height == 0 {
        return Err(CodecError::Empty);
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(CodecError::TooManyPixels {
            limit: limits.max_pixels,
            value: pixels,
            width,
            height,
        });
    }
    if u64::from(width.max(height)) > u64::from(width.min(height)) * u64::from(limits.max_aspect) {
        return Err(CodecError::TooThin {
            limit: limits.max_aspect,
            width,
            height,
        });
    }
    if format == Format::Jpeg {
        let scans = jpeg_scan_count(bytes);
        if scans > limits.max_scans {
            return Err(CodecError::TooManyScans {
                limit: limits.max_scans,
                value: scans,
            });
        }
    }
    Ok((format, width, height))
}

/// Counts a JPEG's scans (SOS markers) by walking its markers and skipping the
/// entropy-coded data after each SOS: linear in the file size, nothing decoded.
pub fn jpeg_scan_count(bytes: &[u8]) -> u32 {
    let mut scans = 0u32;
    let mut i = 2usize;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            // Entropy data (or garbage): find the next marker that is not a stuffed
            // zero, a fill byte or a restart marker.
            i += 1;
            continue;
        }
        let marker = bytes[i + 1];
        match marker {
            0x00 | 0xFF | 0xD0..=0xD7 | 0x01 | 0xD8 => i += if marker == 0xFF { 1 } else { 2 },
            0xD9 => break,
            _ => {
                if marker == 0xDA {
                    scans = scans.saturating_add(1);
                }
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    break;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    scans
}

/// What the header alone says about an image: nothing is decoded.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Inspected {
    pub format: Format,
    /// Upright size (EXIF orientation applied).
    pub width: u32,
    pub height: u32,
    /// The EXIF orientation a decode will apply (1 = none).
    pub orientation: u8,
    /// Quantisation and frame facts (JPEG only).
    pub jpeg: Option<JpegHeader>,
}

/// Checks `limits` and reads the upright size, orientation and JPEG header facts.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspected, CodecError> {
    let (format, width, height) = probe(bytes, limits)?;
    let orientation = match format {
        Format::Jpeg => libjpeg(format, || {
            let d =
                mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)]).from_mem(bytes)?;
            Ok(d.markers()
                .find(|m| m.data.starts_with(b"Exif\0\0"))
                .and_then(|m| exif_orientation(&m.data[6..]))
                .unwrap_or(1))
        })?,
        Format::Png | Format::Webp => 1,
    };
    let (width, height) = if matches!(orientation, 5..=8) {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Inspected {
        format,
        width,
        height,
        orientation,
        jpeg: (format == Format::Jpeg)
            .then(|| jpeg_header(bytes))
            .flatten(),
    })
}

/// Decodes JPEG, PNG or WebP after checking `limits`, and turns it upright.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, CodecError> {
    decode_scaled(bytes, limits, u32::MAX)
}

/// libjpeg's DCT scaling numerator (out of 8) that brings a side of `full` pixels down to
/// the fewest pixels that are still at least `target` (8 = no scaling).
pub fn dct_scale_for(full: u32, target: u32) -> u8 {
    (1u8..=8)
        .find(|&n| (u64::from(full) * u64::from(n)).div_ceil(8) >= u64::from(target))
        .unwrap_or(8)
}

/// Like [`decode`], but a JPEG is decoded with libjpeg's DCT scaling (1/8 … 8/8) at the
/// smallest scale whose longest side is still at least `min_long_side`: what a
/// downscale needs costs a fraction of a full decode (no full-size IDCT, colour
/// conversion or buffer). PNG and WebP decode at full size. The result is upright;
/// `full_width`/`full_height` give the full-resolution size.
pub fn decode_scaled(
    bytes: &[u8],
    limits: &Limits,
    min_long_side: u32,
) -> Result<Decoded, CodecError> {
    let (format, width, height) = probe(bytes, limits)?;
    let scale = dct_scale_for(width.max(height), min_long_side);
    let (image, orientation) = match format {
        Format::Jpeg => decode_jpeg(bytes, scale, limits.max_decode_ms)?,
        Format::Png | Format::Webp => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(format));
            let mut image_limits = image::Limits::default();
            // The header was checked; cap allocations at what that header promised.
            image_limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (1 << 20));
            reader.limits(image_limits);
            let img = reader.decode().map_err(|e| CodecError::Corrupt {
                format,
                reason: e.to_string(),
            })?;
            (img.into_rgb8(), 1)
        }
    };
    if image.width() == 0 || image.height() == 0 {
        return Err(CodecError::Empty);
    }
    let (full_width, full_height) = if matches!(orientation, 5..=8) {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Decoded {
        image,
        format,
        orientation,
        full_width,
        full_height,
    })
}

fn image_format(format: Format) -> image::ImageFormat {
    match format {
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Png => image::ImageFormat::Png,
        Format::Webp => image::ImageFormat::WebP,
    }
}

/// Runs a libjpeg call, turning its unwinding errors into [`CodecError`].
fn libjpeg<T>(format: Format, f: impl FnOnce() -> std::io::Result<T>) -> Result<T, CodecError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CodecError::Corrupt {
            format,
            reason: e.to_string(),
        }),
        Err(payload) => match payload.downcast::<DeadlinePassed>() {
            Ok(late) => Err(CodecError::DecodeTimeout {
                limit_ms: late.limit_ms,
            }),
            Err(payload) => Err(CodecError::Corrupt {
                format,
                reason: panic_message(payload),
            }),
        },
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "libjpeg failed".to_string()
    }
}

// The decode budget. The `mozjpeg` crate does not expose libjpeg's progress monitor, but
// libjpeg reports every marker it reads (each scan's SOS, each restart marker, …) to the
// error manager's `emit_message`, which the crate lets us replace: that hook checks the
// deadline of the decode running on this thread and unwinds out of libjpeg once it has
// passed (libjpeg's own errors unwind the same way). Within one scan there is no hook, so
// a single scan's cost is bounded by `max_pixels` instead.

/// The unwinding payload of a decode that ran out of time.
struct DeadlinePassed {
    limit_ms: u32,
}

thread_local! {
    /// (deadline, budget in ms) of the JPEG decode running on this thread, if any.
    static DECODE_DEADLINE: std::cell::Cell<Option<(std::time::Instant, u32)>> =
        const { std::cell::Cell::new(None) };
}

/// Sets this thread's decode deadline for as long as it lives.
struct DeadlineGuard;

impl DeadlineGuard {
    fn set(limit_ms: u32) -> DeadlineGuard {
        let at = std::time::Instant::now() + std::time::Duration::from_millis(limit_ms.into());
        DECODE_DEADLINE.with(|d| d.set(Some((at, limit_ms))));
        DeadlineGuard
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DECODE_DEADLINE.with(|d| d.set(None));
    }
}

extern "C-unwind" fn check_decode_deadline(
    _cinfo: &mut mozjpeg_sys::jpeg_common_struct,
    _level: std::os::raw::c_int,
) {
    let late = DECODE_DEADLINE.with(|d| match d.get() {
        Some((at, limit_ms)) if std::time::Instant::now() >= at => Some(limit_ms),
        _ => None,
    });
    if let Some(limit_ms) = late {
        std::panic::resume_unwind(Box::new(DeadlinePassed { limit_ms }));
    }
}

extern "C-unwind" fn unwind_on_error(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    // JMSG_LENGTH_MAX is 200 bytes.
    let mut buffer = [0u8; 200];
    let message = match unsafe { cinfo.err.as_ref() }.and_then(|e| e.format_message) {
        Some(format) => {
            // SAFETY: libjpeg writes at most JMSG_LENGTH_MAX bytes, NUL-terminated, into
            // the buffer it is given; the binding declares the buffer shared, so the
            // pointer is passed as libjpeg expects it (a writable char array).
            unsafe { format(cinfo, &*std::ptr::addr_of_mut!(buffer).cast::<[u8; 80]>()) };
            let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
            String::from_utf8_lossy(text).into_owned()
        }
        None => "unknown error".to_owned(),
    };
    std::panic::resume_unwind(Box::new(format!("libjpeg: {message}")));
}

/// libjpeg's standard error manager with fatal errors unwinding (as the crate's own
/// does) and every message checking the decode deadline.
fn deadline_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills in every field of a zeroed manager.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_on_error);
    err.emit_message = Some(check_decode_deadline);
    err
}

fn decode_jpeg(bytes: &[u8], scale: u8, max_decode_ms: u32) -> Result<(RgbImage, u8), CodecError> {
    let _deadline = DeadlineGuard::set(max_decode_ms);
    let (w, h, pixels, exif) = libjpeg(Format::Jpeg, || {
        let mut d = mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)])
            .with_err(deadline_error_mgr())
            .from_mem(bytes)?;
        if scale < 8 {
            d.scale(scale.max(1));
        }
        let exif = d
            .markers()
            .find(|m| m.data.starts_with(b"Exif\0\0"))
            .map(|m| m.data[6..].to_vec());
        // Grayscale and CMYK sources are converted to RGB by libjpeg.
        let mut started = d.rgb()?;
        let (w, h) = (started.width(), started.height());
        let pixels: Vec<u8> = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok((w, h, pixels, exif))
    })?;
    let image = RgbImage::from_raw(w as u32, h as u32, pixels).ok_or(CodecError::Corrupt {
        format: Format::Jpeg,
        reason: "decoder returned a short pixel buffer".into(),
    })?;
    let orientation = exif.as_deref().and_then(exif_orientation).unwrap_or(1);
    Ok((orient(image, orientation), orientation))
}

/// The EXIF orientation tag (1–8) from a TIFF-structured EXIF blob.
fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let exif = exif::Reader::new().read_raw(tiff.to_vec()).ok()?;
    let field = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)?;
    let v = field.value.get_uint(0)?;
    u8::try_from(v).ok().filter(|v| (1..=8).contains(v))
}

/// Applies an EXIF orientation so the image is upright.
pub fn orient(image: RgbImage, orientation: u8) -> RgbImage {
    match Orientation::from_exif(orientation) {
        Some(o) if o != Orientation::NoTransforms => {
            let mut dynamic = DynamicImage::ImageRgb8(image);
            dynamic.apply_orientation(o);
            dynamic.into_rgb8()
        }
        _ => image,
    }
}

/// Shrinks `image` so its longest side is at most `max_side`; never enlarges.
pub fn fit_longest_side(image: &RgbImage, max_side: u32) -> Option<RgbImage> {
    let (w, h) = image.dimensions();
    let longest = w.max(h);
    if longest <= max_side {
        return None;
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    Some(image::imageops::resize(image, nw, nh, FilterType::Triangle))
}

/// Resizes the shorter side to `side` and centre-crops to `side × side`: the usual
/// ImageNet evaluation transform, used for the backbone and the local backend.
///
/// The intermediate is bounded for every input: beyond 4:1 the centre square is cut
/// from the source first (a 1×1,000,000 strip would otherwise ask for a
/// 160×160,000,000 intermediate). Up to 4:1 the whole image is resized, then cropped.
pub fn square_crop(image: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w.max(h) > w.min(h).saturating_mul(4) {
        let short = w.min(h);
        let x = (w - short) / 2;
        let y = (h - short) / 2;
        let centre = image::imageops::crop_imm(image, x, y, short, short).to_image();
        return image::imageops::resize(&centre, side, side, FilterType::Triangle);
    }
    let scale = f64::from(side) / f64::from(w.min(h));
    let nw = ((f64::from(w) * scale).round() as u32).max(side);
    let nh = ((f64::from(h) * scale).round() as u32).max(side);
    let resized = image::imageops::resize(image, nw, nh, FilterType::Triangle);
    let x = (nw - side) / 2;
    let y = (nh - side) / 2;
    image::imageops::crop_imm(&resized, x, y, side, side).to_image()
}

/// What a JPEG's own header says about how it was encoded: how far an upload can be
/// squeezed depends as much on this as on its content (a phone's quality-95 original has
/// room that an already-squeezed quality-75 file has not).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JpegHeader {
    /// IJG-equivalent quality (1–100) estimated from the luminance quantisation table.
    pub quality: f32,
    /// Chroma stored at lower resolution than luma (4:2:0, 4:2:2 …) rather than 4:4:4.
    pub chroma_subsampled: bool,
    /// Progressive rather than baseline.
    pub progressive: bool,
}

/// The IJG standard luminance quantisation table (Annex K), the base every
/// `quality` setting of libjpeg, Pillow and most cameras scales.
const IJG_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// Reads the quantisation tables and frame header of a JPEG (markers only, no entropy
/// data); `None` when the bytes are not a JPEG with a luminance table and a frame.
pub fn jpeg_header(bytes: &[u8]) -> Option<JpegHeader> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut luma: Option<u64> = None;
    let mut frame: Option<(bool, bool)> = None;
    let mut i = 2usize;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let end = (i + 2 + len).min(bytes.len());
        let data = bytes.get(i + 4..end)?;
        match marker {
            0xDB => {
                let mut j = 0;
                while j < data.len() {
                    let (precision, id) = (data[j] >> 4, data[j] & 15);
                    let width = if precision == 0 { 1 } else { 2 };
                    let table = data.get(j + 1..j + 1 + 64 * width)?;
                    if id == 0 {
                        let sum: u64 = if width == 1 {
                            table.iter().map(|&v| u64::from(v)).sum()
                        } else {
                            table
                                .chunks_exact(2)
                                .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
                                .sum()
                        };
                        luma = Some(sum);
                    }
                    j += 1 + 64 * width;
                }
            }
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                let n = usize::from(*data.get(5)?);
                let sampling: Vec<u8> = (0..n)
                    .filter_map(|c| data.get(6 + 3 * c + 1).copied())
                    .collect();
                let subsampled =
                    sampling.len() >= 3 && sampling[1..].iter().any(|&s| s != sampling[0]);
                frame = Some((subsampled, progressive));
            }
            0xDA | 0xD9 => break,
            _ => {}
        }
        i += 2 + len;
    }
    let (chroma_subsampled, progressive) = frame?;
    let base: u64 = IJG_LUMA.iter().map(|&v| u64::from(v)).sum();
    let scale = luma? as f64 * 100.0 / base as f64;
    let quality = if scale <= 100.0 {
        (200.0 - scale) / 2.0
    } else {
        5000.0 / scale
    };
    Some(JpegHeader {
        quality: quality.clamp(1.0, 100.0) as f32,
        chroma_subsampled,
        progressive,
    })
}

/// How the JPEG encoder trades time for bytes. One mode is fixed per action set:
/// the same quality number means different quantisation tables in different modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderMode {
    /// libjpeg-turbo defaults (standard IJG tables), baseline, fixed Huffman tables.
    Fastest,
    /// As `Fastest` with optimised Huffman tables: a few percent smaller for ~1 ms.
    #[default]
    FastOptimized,
    /// mozjpeg's defaults: progressive, trellis quantisation. Smallest, ~25–50× slower.
    Mozjpeg,
}

impl EncoderMode {
    /// All modes, for benchmarks.
    pub const ALL: [EncoderMode; 3] = [
        EncoderMode::Fastest,
        EncoderMode::FastOptimized,
        EncoderMode::Mozjpeg,
    ];

    /// Stable name used in reports and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            EncoderMode::Fastest => "fastest",
            EncoderMode::FastOptimized => "fast-optimized",
            EncoderMode::Mozjpeg => "mozjpeg",
        }
    }
}

/// Encodes RGB pixels as a JPEG at `quality` (1–100).
pub fn encode_jpeg(
    image: &RgbImage,
    quality: u8,
    mode: EncoderMode,
) -> Result<Vec<u8>, CodecError> {
    let (w, h) = image.dimensions();
    let quality = quality.clamp(1, 100);
    let run = || -> std::io::Result<Vec<u8>> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        match mode {
            EncoderMode::Fastest => c.set_fastest_defaults(),
            EncoderMode::FastOptimized => {
                c.set_fastest_defaults();
                c.set_optimize_coding(true);
            }
            EncoderMode::Mozjpeg => {}
        }
        c.set_size(w as usize, h as usize);
        c.set_quality(f32::from(quality));
        let mut started = c.start_compress(Vec::with_capacity((w * h / 4) as usize))?;
        started.write_scanlines(image.as_raw())?;
        started.finish()
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(CodecError::Encode(e.to_string())),
        Err(payload) => Err(CodecError::Encode(panic_message(payload))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    /// A progressive JPEG whose last scan is repeated `extra` times (each repeat is a
    /// valid refinement scan libjpeg decodes again).
    fn repeated_scans(side: u32, extra: usize) -> Vec<u8> {
        let jpeg = encode_jpeg(&gradient(side, side), 75, EncoderMode::Mozjpeg).unwrap();
        let last = jpeg
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .expect("a progressive JPEG has scans");
        let end = jpeg.len() - 2; // EOI
        let mut out = jpeg[..end].to_vec();
        for _ in 0..extra {
            out.extend_from_slice(&jpeg[last..end]);
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    #[test]
    fn decode_budget_cuts_off_a_slow_jpeg_and_names_the_limit() {
        let bomb = repeated_scans(1024, 80);
        let scans = jpeg_scan_count(&bomb);
        assert!(
            scans > 80 && scans <= Limits::default().max_scans,
            "{scans}"
        );
        let tight = Limits {
            max_decode_ms: 1,
            ..Limits::default()
        };
        let err = decode(&bomb, &tight).unwrap_err();
        assert_eq!(err, CodecError::DecodeTimeout { limit_ms: 1 });
        assert!(
            err.to_string().contains("1 ms (limits.max_decode_ms)"),
            "{err}"
        );
        // The deadline was this decode's only: the next one on the same thread, with the
        // default budget, decodes the same file completely.
        let decoded = decode(&bomb, &Limits::default()).unwrap();
        assert_eq!(decoded.image.dimensions(), (1024, 1024));
    }

    #[test]
    fn sniff_recognises_magic_bytes() {
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(Format::sniff(b"GIF89a"), None);
    }

    #[test]
    fn byte_limit_names_limit_and_value() {
        let jpeg = encode_jpeg(&gradient(64, 48), 80, EncoderMode::Fastest).unwrap();
        let limits = Limits {
            max_bytes: 100,
            max_pixels: 1 << 30,
            ..Limits::default()
        };
        let err = decode(&jpeg, &limits).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooManyBytes {
                limit: 100,
                value: jpeg.len()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("100") && msg.contains(&jpeg.len().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let jpeg = encode_jpeg(&gradient(64, 48), 80, EncoderMode::Fastest).unwrap();
        let limits = Limits {
            max_bytes: usize::MAX,
            max_pixels: 3000,
            ..Limits::default()
        };
        let err = decode(&jpeg, &limits).unwrap_err();
        assert!(matches!(
            err,
            CodecError::TooManyPixels {
                limit: 3000,
                value: 3072,
                width: 64,
                height: 48
            }
        ));
        assert!(
            err.to_string()
                .contains("64×48 = 3072 pixels, over the limit of 3000")
        );
    }

    #[test]
    fn pixel_limit_refuses_a_bomb_header_without_decoding() {
        // A PNG header claiming 60000×60000 with no image data: refused from the header.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&60000u32.to_be_bytes());
        ihdr.extend_from_slice(&60000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
        // A token IDAT: a bomb's payload would follow; the limit trips before it is read.
        let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
        png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
        png.extend_from_slice(idat);
        png.extend_from_slice(&crc32fast::hash(idat).to_be_bytes());
        let err = decode(&png, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooManyPixels {
                    value: 3_600_000_000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_and_truncated_input_are_errors_not_panics() {
        assert!(matches!(
            decode(b"hello world", &Limits::default()),
            Err(CodecError::UnknownFormat(_))
        ));
        let jpeg = encode_jpeg(&gradient(64, 48), 80, EncoderMode::Fastest).unwrap();
        let err = decode(&jpeg[..20], &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Corrupt {
                    format: Format::Jpeg,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bytes_fall_with_quality_in_every_mode() {
        let img = gradient(320, 240);
        for mode in EncoderMode::ALL {
            let sizes: Vec<usize> = [5u8, 25, 45, 65, 85, 95]
                .iter()
                .map(|&q| encode_jpeg(&img, q, mode).unwrap().len())
                .collect();
            assert!(sizes.windows(2).all(|p| p[0] < p[1]), "{mode:?}: {sizes:?}");
        }
    }

    #[test]
    fn jpeg_round_trip_keeps_size_and_content() {
        let img = gradient(97, 61);
        let jpeg = encode_jpeg(&img, 95, EncoderMode::FastOptimized).unwrap();
        let back = decode(&jpeg, &Limits::default()).unwrap();
        assert_eq!(back.image.dimensions(), (97, 61));
        assert_eq!(back.format, Format::Jpeg);
        let mean_err: f64 = img
            .as_raw()
            .iter()
            .zip(back.image.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / img.as_raw().len() as f64;
        assert!(mean_err < 3.0, "mean abs error {mean_err}");
    }

    /// Inserts an EXIF APP1 segment carrying `orientation` right after the SOI marker.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD at 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // padding of the 4-byte value field
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Left half black, right half white, 80×40.
        let img = RgbImage::from_fn(80, 40, |x, _| {
            if x < 40 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let jpeg = encode_jpeg(&img, 95, EncoderMode::Fastest).unwrap();
        let plain = decode(&jpeg, &Limits::default()).unwrap();
        assert_eq!((plain.orientation, plain.image.dimensions()), (1, (80, 40)));

        // 6 = rotate 90° clockwise to view: the left (black) half ends up on top.
        let rotated = decode(&with_exif_orientation(&jpeg, 6), &Limits::default()).unwrap();
        assert_eq!(rotated.orientation, 6);
        assert_eq!(rotated.image.dimensions(), (40, 80));
        assert!(rotated.image.get_pixel(20, 5)[0] < 30);
        assert!(rotated.image.get_pixel(20, 75)[0] > 225);

        // 3 = rotate 180°: black moves to the right.
        let flipped = decode(&with_exif_orientation(&jpeg, 3), &Limits::default()).unwrap();
        assert_eq!(flipped.image.dimensions(), (80, 40));
        assert!(flipped.image.get_pixel(75, 20)[0] < 30);
        assert!(flipped.image.get_pixel(5, 20)[0] > 225);
    }

    #[test]
    fn png_decodes() {
        let img = gradient(30, 20);
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let d = decode(&png, &Limits::default()).unwrap();
        assert_eq!(d.format, Format::Png);
        assert_eq!(d.image, img);
    }

    #[test]
    fn webp_decodes() {
        let img = gradient(30, 20);
        let mut webp = Vec::new();
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP)
            .unwrap();
        let d = decode(&webp, &Limits::default()).unwrap();
        assert_eq!(d.format, Format::Webp);
        // Lossless WebP: the pixels come back exactly.
        assert_eq!(d.image, img);
    }

    #[test]
    fn fit_longest_side_keeps_aspect_and_never_enlarges() {
        let img = gradient(1024, 682);
        let small = fit_longest_side(&img, 512).unwrap();
        assert_eq!(small.dimensions(), (512, 341));
        assert!(fit_longest_side(&img, 2048).is_none());
    }

    #[test]
    fn square_crop_gives_the_requested_square() {
        let img = gradient(300, 200);
        assert_eq!(square_crop(&img, 128).dimensions(), (128, 128));
        let tall = gradient(50, 400);
        assert_eq!(square_crop(&tall, 64).dimensions(), (64, 64));
    }

    #[test]
    fn jpeg_header_estimates_the_quality_it_was_saved_with() {
        let img = gradient(64, 48);
        for q in [30u8, 50, 75, 90, 95] {
            let jpeg = encode_jpeg(&img, q, EncoderMode::Fastest).unwrap();
            let h = jpeg_header(&jpeg).unwrap();
            assert!(
                (h.quality - f32::from(q)).abs() <= 2.0,
                "saved at {q}, estimated {}",
                h.quality
            );
            assert!(h.chroma_subsampled && !h.progressive);
        }
        let progressive = encode_jpeg(&img, 80, EncoderMode::Mozjpeg).unwrap();
        assert!(jpeg_header(&progressive).unwrap().progressive);
        assert_eq!(jpeg_header(b"\xFF\xD8\xFF"), None);
        assert_eq!(jpeg_header(b"not a jpeg"), None);
        // Truncated inside a segment: no panic, no answer.
        let jpeg = encode_jpeg(&img, 80, EncoderMode::Fastest).unwrap();
        for cut in [4, 10, 30, 80] {
            let _ = jpeg_header(&jpeg[..cut]);
        }
    }

    #[test]
    fn scaled_decode_picks_the_smallest_scale_at_least_the_target() {
        assert_eq!(dct_scale_for(4000, 500), 1);
        assert_eq!(dct_scale_for(4000, 501), 2);
        assert_eq!(dct_scale_for(4000, 768), 2);
        assert_eq!(dct_scale_for(4000, 1280), 3);
        assert_eq!(dct_scale_for(800, 1000), 8);
        assert_eq!(dct_scale_for(800, u32::MAX), 8);
        let jpeg = encode_jpeg(&gradient(640, 480), 90, EncoderMode::Fastest).unwrap();
        let d = decode_scaled(&jpeg, &Limits::default(), 160).unwrap();
        assert_eq!(d.image.dimensions(), (160, 120));
        assert_eq!((d.full_width, d.full_height), (640, 480));
        // Rotated by EXIF: upright sizes, scaled and full.
        let rotated = with_exif_orientation(&jpeg, 6);
        let d = decode_scaled(&rotated, &Limits::default(), 240).unwrap();
        assert_eq!(d.image.dimensions(), (180, 240));
        assert_eq!((d.full_width, d.full_height), (480, 640));
        let info = inspect(&rotated, &Limits::default()).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (480, 640, 6));
        assert!(info.jpeg.is_some());
    }
}
