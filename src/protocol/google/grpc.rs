//! Google Vision's gRPC form ([`GrpcApi`] for [`Google`]): `ImageAnnotator/BatchAnnotateImages`
//! is compressed like `images:annotate`; the other `google.cloud.vision.*` methods (the file
//! methods, ...) go up untouched.
//!
//! In a `BatchAnnotateImagesRequest`, `content` (field 1 of `Image`, field 1 of
//! `AnnotateImageRequest`, field 1 of the request) is replaced, every other byte kept. The
//! answer is read like the REST one: each response's label annotations, or its `error`
//! as that image's error.

use super::Google;
use crate::backend::grpc::vision::BatchAnnotateImagesResponse;
use crate::protocol::protobuf::{LEN, decode, fields, rewrite, rewrite_fields};
use crate::protocol::{Answer, GrpcApi, ImageSlot, Label, ProtocolError, SlotImage};

/// Google Vision's image annotation method (the backend serves the same path).
pub use crate::backend::grpc::VISION_BATCH_ANNOTATE as ANNOTATE;

impl GrpcApi for Google {
    fn method(&self, path: &str) -> Option<bool> {
        if path == ANNOTATE {
            Some(true)
        } else {
            path.starts_with("/google.cloud.vision.").then_some(false)
        }
    }

    /// A `BatchAnnotateImagesRequest`'s images: one slot per `requests[]` entry.
    fn extract_images(&self, msg: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
        let mut slots = Vec::new();
        for (index, request) in fields(msg)?
            .into_iter()
            .filter(|f| f.number == 1 && f.wire == LEN)
            .enumerate()
        {
            let image = fields(request.value(msg))?
                .into_iter()
                .find(|f| f.number == 1 && f.wire == LEN);
            let Some(image) = image else {
                slots.push(ImageSlot {
                    index,
                    path: format!("requests[{index}].image"),
                    image: SlotImage::Unusable("no image".into()),
                });
                continue;
            };
            let inner = image.value(request.value(msg));
            let parts = fields(inner)?;
            let content = parts.iter().find(|f| f.number == 1 && f.wire == LEN);
            let source = parts.iter().any(|f| f.number == 2 && f.wire == LEN);
            slots.push(ImageSlot {
                index,
                path: format!("requests[{index}].image"),
                image: match content {
                    Some(c) if !c.value(inner).is_empty() => {
                        SlotImage::Inline(c.value(inner).to_vec())
                    }
                    _ if source => SlotImage::Remote("image.source".into()),
                    _ => SlotImage::Unusable("no image content".into()),
                },
            });
        }
        Ok(slots)
    }

    /// A `BatchAnnotateImagesRequest` with `Image.content` of the given requests replaced.
    fn replace_images(
        &self,
        msg: &[u8],
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Vec<u8>, ProtocolError> {
        let out = rewrite_fields(msg, 1, |index, request| {
            match replacements.iter().find(|(i, _)| *i == index) {
                Some((_, bytes)) => rewrite(request, 1, &|image| {
                    rewrite(image, 1, &|_| Ok(bytes.clone()))
                })
                .map(Some),
                None => Ok(None),
            }
        })?;
        Ok(out.unwrap_or_else(|| msg.to_vec()))
    }

    fn parse_answers(
        &self,
        msg: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        let answer: BatchAnnotateImagesResponse = decode(msg, "BatchAnnotateImagesResponse")?;
        Ok(answer
            .responses
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r.error {
                Some(e) if e.code != 0 => Err(ProtocolError::ImageError {
                    path: format!("responses[{i}]"),
                    code: i64::from(e.code),
                    message: e.message,
                }),
                _ => Ok(Answer::new(
                    r.label_annotations
                        .into_iter()
                        .map(|l| Label {
                            name: l.description,
                            score: l.score,
                        })
                        .collect(),
                )),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::protobuf::{put_len_field, put_varint};

    /// A BatchAnnotateImagesRequest: two requests (one inline image with a feature and an
    /// unknown field, one by URI), plus a top-level field the proxy does not know.
    fn request(content: &[u8]) -> Vec<u8> {
        let mut image = Vec::new();
        put_len_field(&mut image, 1, content);
        let mut feature = Vec::new();
        put_varint(&mut feature, 1 << 3); // type
        put_varint(&mut feature, 4); // LABEL_DETECTION
        put_varint(&mut feature, 3 << 3); // max_results
        put_varint(&mut feature, 5);
        let mut first = Vec::new();
        put_len_field(&mut first, 1, &image);
        put_len_field(&mut first, 2, &feature);
        put_len_field(&mut first, 99, b"unknown to the proxy");
        let mut source = Vec::new();
        put_len_field(&mut source, 2, b"gs://bucket/photo.jpg"); // image_uri
        let mut remote_image = Vec::new();
        put_len_field(&mut remote_image, 2, &source);
        let mut second = Vec::new();
        put_len_field(&mut second, 1, &remote_image);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, &first);
        put_len_field(&mut msg, 1, &second);
        put_len_field(&mut msg, 4, b"projects/p/locations/eu"); // parent
        msg
    }

    #[test]
    fn images_are_found_and_replaced_and_every_other_byte_survives() {
        let msg = request(b"original jpeg bytes");
        let slots = Google.extract_images(&msg).unwrap();
        assert_eq!(slots.len(), 2);
        assert!(matches!(&slots[0].image, SlotImage::Inline(b) if b == b"original jpeg bytes"));
        assert!(matches!(&slots[1].image, SlotImage::Remote(_)));
        let out = Google
            .replace_images(&msg, &[(0, b"smaller".to_vec())])
            .unwrap();
        // Exactly what a sender would have built with the smaller image.
        assert_eq!(out, request(b"smaller"));
        let again = Google.extract_images(&out).unwrap();
        assert!(matches!(&again[0].image, SlotImage::Inline(b) if b == b"smaller"));
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        for msg in [
            &[0x0a, 0xff, 0xff, 0xff, 0x0f][..], // field longer than the message
            &[0x0a; 11],                         // nested nonsense
            &[0x80; 12],                         // endless varint
            &[0x0b],                             // group
        ] {
            assert!(Google.extract_images(msg).is_err(), "{msg:?}");
        }
    }

    #[test]
    fn annotate_is_compressed_and_the_other_vision_methods_go_up() {
        assert_eq!(Google.method(ANNOTATE), Some(true));
        assert_eq!(
            Google.method("/google.cloud.vision.v1.ImageAnnotator/AsyncBatchAnnotateFiles"),
            Some(false)
        );
        assert_eq!(
            Google.method("/inference.GRPCInferenceService/ServerLive"),
            None
        );
        assert_eq!(Google.method("/grpc.health.v1.Health/Check"), None);
    }
}
