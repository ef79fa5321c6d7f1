//! What the one-image APIs (Rekognition, Baidu, Face++, Azure, TorchServe) have in common, so
//! that each of their files keeps only what is its own: where the image sits in its request.
//!
//! - [`Found`]: where the request's image is, as the adapter's finder reports it; the backend
//!   side takes it with [`Found::inline`], the proxy side turns it into slot 0 with
//!   [`Found::slot`] (or [`slot`]).
//! - [`only_result`]: the renderer's guard that the backend answered exactly one image.
//! - [`single_replacement`] and [`slot_not_replaceable`]: the checks before slot 0 is rewritten.
//!
//! Google Vision, a batch API, uses [`Found`] for each `requests[i]` too.

use super::{ImageSlot, ProtocolError, SlotImage};

/// Where a request's image is.
pub(super) enum Found<I> {
    /// In the request; `I` is the adapter's own view of it (raw bytes, base64 text, a part).
    Inline(I),
    /// A reference the API fetches itself (a URL, `s3://…`, `gs://…`).
    Remote {
        /// Where the reference is in the request, for [`ProtocolError::RemoteImage`].
        path: String,
        /// The URL or object name.
        reference: String,
    },
    /// No image; the error says so.
    Missing(ProtocolError),
}

impl<I> Found<I> {
    /// Backend side: the inline image. A reference is [`ProtocolError::RemoteImage`] (the local
    /// backend fetches nothing); a missing image is its error.
    pub(super) fn inline(self) -> Result<I, ProtocolError> {
        match self {
            Found::Inline(image) => Ok(image),
            Found::Remote { path, reference } => {
                Err(ProtocolError::RemoteImage { path, reference })
            }
            Found::Missing(err) => Err(err),
        }
    }

    /// Proxy side: slot 0. `inline` names and reads an inline image; a reference is a remote
    /// slot at `remote_path`; a missing image is an unusable slot at `missing_path`.
    pub(super) fn slot(
        &self,
        remote_path: &str,
        missing_path: &str,
        inline: impl FnOnce(&I) -> (&'static str, SlotImage),
    ) -> ImageSlot {
        match self {
            Found::Inline(image) => {
                let (path, image) = inline(image);
                slot(path, image)
            }
            Found::Remote { reference, .. } => {
                slot(remote_path, SlotImage::Remote(reference.clone()))
            }
            Found::Missing(err) => slot(missing_path, SlotImage::Unusable(err.to_string())),
        }
    }
}

/// Slot 0 at `path`.
pub(super) fn slot(path: &str, image: SlotImage) -> ImageSlot {
    ImageSlot {
        index: 0,
        path: path.to_owned(),
        image,
    }
}

/// The one result the backend has for a one-image request of `api`; anything but exactly one
/// is our bug: logged, and `None` (the caller answers its generic internal error).
pub(super) fn only_result<T>(api: &str, mut results: Vec<T>) -> Option<T> {
    let count = results.len();
    match (results.pop(), count) {
        (Some(result), 1) => Some(result),
        _ => {
            tracing::error!(count, "{api} answers exactly one image");
            None
        }
    }
}

/// The bytes replacing slot 0 (the last given wins), `None` when there is nothing to replace,
/// and an error for any other slot index.
pub(super) fn single_replacement(
    replacements: &[(usize, Vec<u8>)],
) -> Result<Option<&[u8]>, ProtocolError> {
    if let Some((index, _)) = replacements.iter().find(|(index, _)| *index != 0) {
        return Err(ProtocolError::NoSuchSlot {
            index: *index,
            count: 1,
        });
    }
    Ok(replacements.last().map(|(_, bytes)| bytes.as_slice()))
}

/// Why `slot` cannot take new bytes (`None` when it holds an inline image).
pub(super) fn slot_not_replaceable(slot: &ImageSlot) -> Option<ProtocolError> {
    let reason = match &slot.image {
        SlotImage::Inline(_) => return None,
        SlotImage::Remote(reference) => format!("it refers to {reference}"),
        SlotImage::Unusable(why) => why.clone(),
    };
    Some(ProtocolError::NotReplaceable {
        index: slot.index,
        path: slot.path.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_result_takes_exactly_one() {
        assert_eq!(only_result("Test", vec![7]), Some(7));
        assert_eq!(only_result::<u8>("Test", Vec::new()), None);
        assert_eq!(only_result("Test", vec![1, 2]), None);
    }

    /// Each kind of [`Found`] as the backend and the proxy see it.
    #[test]
    fn found_on_the_backend_and_proxy_sides() {
        let read = |bytes: &&[u8]| ("body", SlotImage::Inline(bytes.to_vec()));

        let inline: Found<&[u8]> = Found::Inline(b"jpeg");
        let slot = inline.slot("url", "body", read);
        assert_eq!((slot.index, slot.path.as_str()), (0, "body"));
        assert_eq!(slot.bytes(), Some(&b"jpeg"[..]));
        assert_eq!(inline.inline().ok(), Some(&b"jpeg"[..]));

        let remote: Found<&[u8]> = Found::Remote {
            path: "url".to_owned(),
            reference: "https://example.com/a.jpg".to_owned(),
        };
        let slot = remote.slot("url", "body", read);
        assert_eq!(slot.path, "url");
        assert!(matches!(&slot.image, SlotImage::Remote(r) if r == "https://example.com/a.jpg"));
        assert!(slot_not_replaceable(&slot).is_some());
        assert!(matches!(
            remote.inline(),
            Err(ProtocolError::RemoteImage { path, .. }) if path == "url"
        ));

        let missing: Found<&[u8]> = Found::Missing(ProtocolError::MissingField {
            path: "url".to_owned(),
        });
        let slot = missing.slot("url", "body", read);
        assert_eq!(slot.path, "body");
        assert!(matches!(&slot.image, SlotImage::Unusable(why) if why.contains("url")));
        assert!(matches!(
            missing.inline(),
            Err(ProtocolError::MissingField { .. })
        ));
    }

    #[test]
    fn only_slot_zero_is_replaced() {
        let replacements = vec![(0, b"a".to_vec()), (0, b"b".to_vec())];
        assert_eq!(
            single_replacement(&replacements).ok().flatten(),
            Some(&b"b"[..])
        );
        assert_eq!(single_replacement(&[]).ok().flatten(), None);
        assert!(matches!(
            single_replacement(&[(1, Vec::new())]),
            Err(ProtocolError::NoSuchSlot { index: 1, count: 1 })
        ));
    }
}
