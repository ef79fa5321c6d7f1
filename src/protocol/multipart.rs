//! `multipart/form-data` (RFC 7578 on RFC 2046): a parser that remembers where every part's
//! body sits, so that a rewrite changes exactly the replaced bodies and keeps every other byte
//! (preamble, delimiter lines, part headers, other bodies, epilogue) as the client sent it.
//!
//! Used by Face++ (`image_file`, `image_base64` parts) and TorchServe (`data` / `file` parts),
//! and by their clients to build requests ([`encode`]).
//!
//! Quirks this file handles:
//! - The boundary comes from the `Content-Type` parameter, quoted or not (`boundary="a b"`).
//! - A delimiter is `CRLF--boundary` followed by optional spaces or tabs and CRLF, or by `--`
//!   for the last one; the first may open the body without the CRLF. `--boundary` text that is
//!   not such a line (not at a line start, or followed by other characters, as in
//!   `--boundaryX`) is body data, as in Python's and Go's parsers.
//! - Preamble (before the first delimiter) and epilogue (after the last) are kept.
//! - Lines end in CRLF; a body with bare-LF delimiters is malformed, not guessed at.
//! - Header lines may be folded (continuation lines start with a space or tab); names are
//!   case-insensitive; `Content-Disposition` parameters may be quoted with backslash escapes.
//! - A replaced body must not contain a delimiter: [`Multipart::replace`] re-parses its output
//!   and fails rather than produce a body that reads differently.
//!
//! Why not a crate: `multer` (what axum's `Multipart` uses) and `multipart` stream the parts
//! out and drop the framing, so a rewrite would have to re-serialise the whole body (new
//! delimiter spacing, re-ordered or re-cased headers, a lost preamble). A signing or
//! deduplicating client sees that as a different request, and Face++ and TorchServe
//! clients send fields the proxy must not touch. The byte ranges this parser keeps are
//! what makes a one-body change possible. Its input is bounded by `proxy.max_body_bytes`
//! and it is fuzzed (`tests/fuzz.rs`).

use std::ops::Range;

use super::ProtocolError;

/// The longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_CHARS: usize = 70;

/// The media type of form uploads.
pub const FORM_DATA: &str = "multipart/form-data";

/// Why a body is not the `multipart/form-data` it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// `Content-Type` without a `boundary` parameter.
    #[error("Content-Type `{content_type}` has no boundary parameter")]
    NoBoundary {
        /// The header value.
        content_type: String,
    },
    /// A boundary that is empty or longer than [`MAX_BOUNDARY_CHARS`].
    #[error("boundary `{boundary}` must be 1 to 70 characters")]
    BadBoundary {
        /// The boundary given.
        boundary: String,
    },
    /// More parts than [`MAX_PARTS`]: parsing them would cost far more than the body.
    #[error("body has over {limit} parts, over the limit of {limit}")]
    TooManyParts {
        /// [`MAX_PARTS`].
        limit: usize,
    },
    /// No delimiter line at all.
    #[error("no `--{boundary}` delimiter line")]
    NoDelimiter {
        /// The boundary.
        boundary: String,
    },
    /// A part that is not followed by another delimiter (the body was cut short).
    #[error("part {part} is not closed by a `--{boundary}` line")]
    Unterminated {
        /// Index of the part.
        part: usize,
        /// The boundary.
        boundary: String,
    },
    /// A part whose headers do not end in a blank line.
    #[error("part {part} has no blank line after its headers")]
    NoBlankLine {
        /// Index of the part.
        part: usize,
    },
    /// A header line without a colon.
    #[error("part {part} has a header line without `:`: {line}")]
    BadHeader {
        /// Index of the part.
        part: usize,
        /// The line, lossily decoded.
        line: String,
    },
    /// A replacement for a part index that does not exist.
    #[error("no part {part}: the body has {count} parts")]
    NoSuchPart {
        /// The index asked for.
        part: usize,
        /// How many parts there are.
        count: usize,
    },
    /// A replacement body that contains the boundary delimiter.
    #[error("the new body of part {part} contains the boundary delimiter")]
    BoundaryInBody {
        /// Index of the part.
        part: usize,
    },
}

impl From<MultipartError> for ProtocolError {
    fn from(err: MultipartError) -> Self {
        ProtocolError::Malformed {
            what: "request body",
            format: FORM_DATA,
            detail: err.to_string(),
        }
    }
}

/// A parsed multipart body; borrows the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Multipart<'a> {
    /// The whole body.
    body: &'a [u8],
    /// The boundary, without the leading `--`.
    boundary: String,
    /// The parts in body order.
    pub parts: Vec<Part<'a>>,
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part<'a> {
    /// `name` of its `Content-Disposition`, the form field it fills.
    pub name: Option<String>,
    /// `filename` of its `Content-Disposition`, for file uploads.
    pub filename: Option<String>,
    /// Its `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The header block as sent (without the blank line).
    pub raw_headers: &'a [u8],
    /// The body bytes.
    pub body: &'a [u8],
    /// Where the body sits in the whole multipart body.
    range: Range<usize>,
}

impl<'a> Multipart<'a> {
    /// The first part filling the form field `name`, with its index.
    pub fn field(&self, name: &str) -> Option<(usize, &Part<'a>)> {
        self.parts
            .iter()
            .enumerate()
            .find(|(_, part)| part.name.as_deref() == Some(name))
    }

    /// The boundary, without the leading `--`.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The body with the bodies of the given parts (by index) replaced; every other byte is
    /// kept. A later replacement of the same part wins.
    ///
    /// Fails when an index is out of range, or when a new body contains the delimiter (the
    /// result would parse into other parts); the output is re-parsed to make sure.
    pub fn replace(&self, replacements: &[(usize, &[u8])]) -> Result<Vec<u8>, MultipartError> {
        let mut chosen: Vec<Option<&[u8]>> = vec![None; self.parts.len()];
        for &(part, bytes) in replacements {
            let slot = chosen.get_mut(part).ok_or(MultipartError::NoSuchPart {
                part,
                count: self.parts.len(),
            })?;
            *slot = Some(bytes);
        }
        let mut out = Vec::with_capacity(self.body.len());
        let mut copied = 0;
        for (part, bytes) in self.parts.iter().zip(&chosen) {
            if let Some(bytes) = bytes {
                out.extend_from_slice(&self.body[copied..part.range.start]);
                out.extend_from_slice(bytes);
                copied = part.range.end;
            }
        }
        out.extend_from_slice(&self.body[copied..]);
        // The original parsed, so a difference can only come from a new body.
        let intact = parse(&out, &self.boundary).is_ok_and(|check| {
            check.parts.len() == self.parts.len()
                && chosen
                    .iter()
                    .zip(&check.parts)
                    .all(|(bytes, part)| bytes.is_none_or(|bytes| part.body == bytes))
        });
        if !intact {
            let dash = format!("--{}", self.boundary);
            let replaced = || {
                chosen
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| b.map(|b| (i, b)))
            };
            let part = replaced()
                .find(|(_, bytes)| find(bytes, dash.as_bytes()).is_some())
                .or_else(|| replaced().next())
                .map_or(0, |(i, _)| i);
            return Err(MultipartError::BoundaryInBody { part });
        }
        Ok(out)
    }
}

/// The boundary of a `multipart/*` `Content-Type` value (quotes removed).
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let params = content_type.split_once(';').map_or("", |(_, rest)| rest);
    let boundary = parameters(params)
        .into_iter()
        .find(|(key, _)| key == "boundary")
        .map(|(_, value)| value)
        .ok_or_else(|| MultipartError::NoBoundary {
            content_type: content_type.to_owned(),
        })?;
    if boundary.is_empty() || boundary.chars().count() > MAX_BOUNDARY_CHARS {
        return Err(MultipartError::BadBoundary { boundary });
    }
    Ok(boundary)
}

/// Most parts in one body (real API forms have a handful).
pub const MAX_PARTS: usize = 1_000;

/// Parses a multipart body with the given boundary: see the module doc for what is accepted.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Multipart<'a>, MultipartError> {
    let dash: Vec<u8> = [b"--", boundary.as_bytes()].concat();
    // The first delimiter may open the body; later ones follow a CRLF.
    let opens = line_end(body, dash.len()).is_some() || is_close(body, dash.len());
    let mut next = if body.starts_with(&dash) && opens {
        Some(0)
    } else {
        find_delimiter(body, &dash, 0).map(|at| at + 2)
    };
    let mut parts = Vec::new();
    loop {
        let Some(at) = next else {
            return Err(if parts.is_empty() {
                MultipartError::NoDelimiter {
                    boundary: boundary.to_owned(),
                }
            } else {
                MultipartError::Unterminated {
                    part: parts.len() - 1,
                    boundary: boundary.to_owned(),
                }
            });
        };
        let after = at + dash.len();
        let Some(start) = line_end(body, after) else {
            // Only a close delimiter (`--boundary--`) has no line end of this kind.
            return Ok(Multipart {
                body,
                boundary: boundary.to_owned(),
                parts,
            });
        };
        let index = parts.len();
        if index >= MAX_PARTS {
            return Err(MultipartError::TooManyParts { limit: MAX_PARTS });
        }
        let Some(end) = find_delimiter(body, &dash, start) else {
            return Err(MultipartError::Unterminated {
                part: index,
                boundary: boundary.to_owned(),
            });
        };
        parts.push(read_part(body, start..end, index)?);
        next = Some(end + 2);
    }
}

/// Where the line after a delimiter's `--boundary` at `after` ends: past optional spaces or
/// tabs and a CRLF. `None` for a close delimiter (`--` follows) or anything else.
fn line_end(body: &[u8], after: usize) -> Option<usize> {
    let rest = body.get(after..)?;
    let padding = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    rest[padding..]
        .starts_with(b"\r\n")
        .then_some(after + padding + 2)
}

/// Whether the delimiter whose `--boundary` ends at `after` closes the body.
fn is_close(body: &[u8], after: usize) -> bool {
    body.get(after..)
        .is_some_and(|rest| rest.starts_with(b"--"))
}

/// The position of the next `CRLF--boundary` at or after `from` that is a real delimiter line
/// (followed by a line end or by `--`).
fn find_delimiter(body: &[u8], dash: &[u8], from: usize) -> Option<usize> {
    let mut from = from;
    while let Some(found) = find(body.get(from..)?, b"\r\n") {
        let at = from + found;
        let after = at + 2 + dash.len();
        if body[at + 2..].starts_with(dash)
            && (line_end(body, after).is_some() || is_close(body, after))
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// One part: `span` runs from after its delimiter line to before the next delimiter's CRLF.
fn read_part(body: &[u8], span: Range<usize>, index: usize) -> Result<Part<'_>, MultipartError> {
    let segment = &body[span.clone()];
    let (raw_headers, body_start) = if segment.starts_with(b"\r\n") {
        (&segment[..0], span.start + 2)
    } else {
        let blank =
            find(segment, b"\r\n\r\n").ok_or(MultipartError::NoBlankLine { part: index })?;
        (&segment[..blank], span.start + blank + 4)
    };
    let mut part = Part {
        name: None,
        filename: None,
        content_type: None,
        raw_headers,
        body: &body[body_start..span.end],
        range: body_start..span.end,
    };
    for (name, value) in header_lines(raw_headers, index)? {
        if name.eq_ignore_ascii_case("content-disposition") {
            let params = value.split_once(';').map_or("", |(_, rest)| rest);
            for (key, value) in parameters(params) {
                match key.as_str() {
                    "name" => part.name = Some(value),
                    "filename" => part.filename = Some(value),
                    _ => {}
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            part.content_type = Some(value.trim().to_owned());
        }
    }
    Ok(part)
}

/// The `(name, value)` header lines of a block, folded lines joined.
fn header_lines(block: &[u8], part: usize) -> Result<Vec<(String, String)>, MultipartError> {
    let text = String::from_utf8_lossy(block);
    let mut lines: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        match lines.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines
        .into_iter()
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_owned(), value.trim().to_owned())),
            None => Err(MultipartError::BadHeader { part, line }),
        })
        .collect()
}

/// `; key=value; key="quoted \" value"` parameters, keys lower-cased, quotes and escapes
/// removed. Malformed pieces are skipped.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ';' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ';')).collect();
        if key.is_empty() && chars.peek().is_none() {
            return params;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ';')).collect();
            value = value.trim().to_owned();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
}

/// A part for [`encode`].
#[derive(Debug, Clone, Copy)]
pub struct NewPart<'a> {
    /// The form field.
    pub name: &'a str,
    /// A file name, for file uploads.
    pub filename: Option<&'a str>,
    /// The part's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// A boundary that occurs in none of `bodies`: `adacompress-` and 32 random hex digits.
pub fn fresh_boundary(bodies: &[&[u8]]) -> String {
    loop {
        let boundary = format!("adacompress-{}", uuid::Uuid::new_v4().simple());
        if !bodies
            .iter()
            .any(|body| find(body, boundary.as_bytes()).is_some())
        {
            return boundary;
        }
    }
}

/// A `multipart/form-data` body of `parts` with `boundary` (names and file names are quoted;
/// a `"` in them is escaped). Pick the boundary with [`fresh_boundary`].
pub fn encode(boundary: &str, parts: &[NewPart<'_>]) -> Vec<u8> {
    let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!(
            "Content-Disposition: form-data; name=\"{}\"",
            quote(part.name)
        );
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{}\"", quote(filename)));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as curl sends it, with a preamble and an epilogue added.
    fn sample() -> Vec<u8> {
        [
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
            b"--XyZ--\r\n",
            b"epilogue",
        ]
        .concat()
    }

    #[test]
    fn boundary_from_content_type() {
        let cases: Vec<(&str, Result<&str, &str>)> = vec![
            ("multipart/form-data; boundary=XyZ", Ok("XyZ")),
            ("multipart/form-data;boundary=\"a b;c\"", Ok("a b;c")),
            ("Multipart/Form-Data; charset=utf-8; BOUNDARY=q", Ok("q")),
            (
                "multipart/form-data; boundary=\"esc\\\"aped\"",
                Ok("esc\"aped"),
            ),
            (
                "multipart/form-data",
                Err("Content-Type `multipart/form-data` has no boundary parameter"),
            ),
            (
                "multipart/form-data; boundary=\"\"",
                Err("boundary `` must be 1 to 70 characters"),
            ),
        ];
        for (content_type, expected) in cases {
            let got = boundary(content_type).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                expected.map_err(str::to_owned).as_deref(),
                "{content_type}"
            );
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(boundary(&long).is_err());
    }

    #[test]
    fn parses_parts_headers_and_bodies() {
        let body = sample();
        let form = parse(&body, "XyZ").unwrap();
        assert_eq!(form.parts.len(), 3);
        assert_eq!(form.parts[0].name.as_deref(), Some("api_key"));
        assert_eq!(form.parts[0].body, b"key-123");
        let (index, image) = form.field("image_file").unwrap();
        assert_eq!(index, 1);
        assert_eq!(image.filename.as_deref(), Some("a b.jpg"));
        assert_eq!(image.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(image.body, b"\xff\xd8\xff\xe0 jpeg \r\n bytes \xff\xd9");
        // Folded header, lower-case name; boundary-like text is body data.
        assert_eq!(form.parts[2].name.as_deref(), Some("note"));
        assert_eq!(
            form.parts[2].body,
            b"text with --XyZ inside, and\r\n--XyZmore on a new line"
        );
        assert!(form.field("missing").is_none());
    }

    #[test]
    fn replace_keeps_every_other_byte() {
        let body = sample();
        let form = parse(&body, "XyZ").unwrap();
        let out = form.replace(&[(1, b"NEW")]).unwrap();
        let image = form.parts[1].body;
        let at = find(&body, image).unwrap();
        let expected = [&body[..at], b"NEW", &body[at + image.len()..]].concat();
        assert_eq!(out, expected);
        assert!(out.starts_with(b"This is the preamble.\r\n--XyZ\r\n"));
        assert!(out.ends_with(b"--XyZ--\r\nepilogue"));
        let again = parse(&out, "XyZ").unwrap();
        assert_eq!(again.parts[1].body, b"NEW");
        assert_eq!(again.parts[1].raw_headers, form.parts[1].raw_headers);
        assert_eq!(again.parts[2].body, form.parts[2].body);

        // Nothing replaced: the same bytes. Two replacements, the later wins.
        assert_eq!(form.replace(&[]).unwrap(), body);
        let out = form.replace(&[(0, b"a"), (2, b""), (0, b"b")]).unwrap();
        let again = parse(&out, "XyZ").unwrap();
        let bodies: Vec<&[u8]> = again.parts.iter().map(|p| p.body).collect();
        assert_eq!(bodies, [&b"b"[..], form.parts[1].body, b""]);
    }

    #[test]
    fn replace_refuses_bodies_holding_the_delimiter() {
        let body = sample();
        let form = parse(&body, "XyZ").unwrap();
        for evil in [
            &b"x\r\n--XyZ\r\nContent-Disposition: form-data; name=\"y\"\r\n\r\ny"[..],
            b"--XyZ--",
            b"tail\r\n--XyZ--",
        ] {
            assert_eq!(
                form.replace(&[(0, evil)]),
                Err(MultipartError::BoundaryInBody { part: 0 }),
                "{}",
                String::from_utf8_lossy(evil)
            );
        }
        // Boundary-like text that is not a delimiter line is fine.
        let out = form.replace(&[(0, b"--XyZ is not a line start")]).unwrap();
        assert_eq!(
            parse(&out, "XyZ").unwrap().parts[0].body,
            b"--XyZ is not a line start"
        );
        assert_eq!(
            form.replace(&[(3, b"x")]),
            Err(MultipartError::NoSuchPart { part: 3, count: 3 })
        );
    }

    #[test]
    fn edge_shapes() {
        // No preamble, no epilogue, close delimiter at the very end, empty bodies and a part
        // without headers.
        let body =
            b"--b\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--b\r\n\r\nraw\r\n--b--";
        let form = parse(body, "b").unwrap();
        assert_eq!(form.parts.len(), 2);
        assert_eq!(form.parts[0].body, b"");
        assert_eq!(form.parts[1].name, None);
        assert_eq!(form.parts[1].raw_headers, b"");
        assert_eq!(form.parts[1].body, b"raw");
        let out = form.replace(&[(0, b"filled")]).unwrap();
        assert_eq!(parse(&out, "b").unwrap().parts[0].body, b"filled");
        // No parts at all.
        assert!(parse(b"--b--\r\n", "b").unwrap().parts.is_empty());
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"no delimiter here", "no `--b` delimiter line"),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ncut short",
                "part 0 is not closed by a `--b` line",
            ),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n--b--",
                "part 0 has no blank line after its headers",
            ),
            (
                b"--b\r\nnot a header\r\n\r\nx\r\n--b--",
                "part 0 has a header line without `:`: not a header",
            ),
            // Bare LF line ends are not guessed at.
            (
                b"--b\nContent-Disposition: form-data; name=\"a\"\n\nx\n--b--\n",
                "no `--b` delimiter line",
            ),
        ];
        for (body, message) in cases {
            let err = parse(body, "b").unwrap_err();
            assert_eq!(
                err.to_string(),
                message,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let err: ProtocolError = parse(b"x", "b").unwrap_err().into();
        assert_eq!(
            err.to_string(),
            "request body is not valid multipart/form-data: no `--b` delimiter line"
        );
    }

    #[test]
    fn encode_round_trips() {
        let image = b"\xff\xd8\xff binary \r\n\x00 data";
        let boundary = fresh_boundary(&[image]);
        assert!(boundary.starts_with("adacompress-") && boundary.len() == 44);
        let body = encode(
            &boundary,
            &[
                NewPart {
                    name: "api_key",
                    filename: None,
                    content_type: None,
                    body: b"k",
                },
                NewPart {
                    name: "image_file",
                    filename: Some("say \"cheese\".jpg"),
                    content_type: Some("image/jpeg"),
                    body: image,
                },
            ],
        );
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let form = parse(&body, &super::boundary(&content_type).unwrap()).unwrap();
        assert_eq!(form.parts.len(), 2);
        assert_eq!(form.parts[0].body, b"k");
        let (_, part) = form.field("image_file").unwrap();
        assert_eq!(part.body, image);
        assert_eq!(part.filename.as_deref(), Some("say \"cheese\".jpg"));
        assert_eq!(part.content_type.as_deref(), Some("image/jpeg"));
    }
}
