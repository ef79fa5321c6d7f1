//! KServe v2's gRPC form ([`GrpcApi`] for [`KServe`]): `GRPCInferenceService/ModelInfer` is
//! compressed like `POST /v2/models/{model}/infer`; the service's other methods (health,
//! metadata, `ModelStreamInfer`) go up untouched.
//!
//! The image input is the one the backend (and the REST adapter) classify: the `BYTES`
//! input whose first element is a recognisable image, else the first `BYTES` input. Each of
//! its elements is an image slot, in element order. The elements are in its
//! `raw_input_contents` entry (field 7; entries go to the inputs without `contents` or a
//! shared-memory region, in order, as Triton reads them; each element a u32 little-endian
//! length then its bytes, what tritonclient sends) or in `contents.bytes_contents` (field 8
//! of field 5 of the input, field 5 of the request). A replaced element gets its new bytes
//! (and length prefix); the other elements, inputs, `parameters` and raw entries go up as
//! they came. At most `limits.max_tensor_elements` elements are read (as over REST); raw
//! contents that do not add up are `Malformed`, and such a request goes up as sent.
//!
//! The answer is read like the REST one: the `labels`/`scores` outputs.

use super::{
    KServe, LABELS_OUTPUT, MAX_ANSWER_ELEMENTS, SCORES_OUTPUT, SplitError, split_elements,
    too_many_elements,
};
use crate::backend::grpc::KSERVE_SERVICE;
use crate::backend::grpc::v2::ModelInferResponse;
use crate::protocol::protobuf::{LEN, bad, decode, fields, rewrite_fields, unexpected};
use crate::protocol::{Answer, GrpcApi, ImageSlot, Label, ProtocolError, SlotImage};

/// The service's method whose images the proxy compresses; its other methods go up
/// untouched.
const INFER_METHOD: &str = "ModelInfer";

impl GrpcApi for KServe {
    fn method(&self, path: &str) -> Option<bool> {
        let method = path.strip_prefix(KSERVE_SERVICE)?.strip_prefix('/')?;
        Some(method == INFER_METHOD)
    }

    fn extract_images(&self, msg: &[u8]) -> Result<Vec<ImageSlot>, ProtocolError> {
        Ok(image_input(msg)?
            .map(|input| input.slots())
            .unwrap_or_default())
    }

    fn replace_images(
        &self,
        msg: &[u8],
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Vec<u8>, ProtocolError> {
        infer_replace(msg, replacements)
    }

    /// A `ModelInferResponse` with the outputs the REST route reads ([`LABELS_OUTPUT`]
    /// BYTES `[N, k]` and [`SCORES_OUTPUT`] FP32 `[N, k]`, in `raw_output_contents` by
    /// position): one answer per image row.
    fn parse_answers(
        &self,
        msg: &[u8],
    ) -> Result<Vec<Result<Answer, ProtocolError>>, ProtocolError> {
        let answer: ModelInferResponse = decode(msg, "ModelInferResponse")?;
        let raw = |name: &str| {
            answer.outputs.iter().position(|o| o.name == name).map(|i| {
                let shape = answer.outputs[i].shape.clone();
                (answer.raw_output_contents.get(i), shape)
            })
        };
        let (Some((Some(labels), shape)), Some((Some(scores), _))) =
            (raw(LABELS_OUTPUT), raw(SCORES_OUTPUT))
        else {
            return Err(unexpected(
                "no raw `labels` and `scores` outputs".to_owned(),
            ));
        };
        let names: Vec<String> = split_elements(labels, MAX_ANSWER_ELEMENTS)
            .map_err(|_| unexpected("`labels` is not a BYTES tensor".to_owned()))?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&labels[r]).into_owned())
            .collect();
        let values: Vec<f32> = scores
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let k = match shape.as_slice() {
            [_, k] => usize::try_from(*k).unwrap_or(0),
            _ => names.len(),
        };
        if k == 0 || names.len() != values.len() || !names.len().is_multiple_of(k) {
            return Err(unexpected(format!(
                "{} labels and {} scores do not make rows of {k}",
                names.len(),
                values.len()
            )));
        }
        Ok(names
            .chunks(k)
            .zip(values.chunks(k))
            .map(|(n, v)| {
                Ok(Answer::new(
                    n.iter()
                        .zip(v)
                        .map(|(name, &score)| Label {
                            name: name.clone(),
                            score,
                        })
                        .collect(),
                ))
            })
            .collect())
    }
}

// Field numbers of `inference.ModelInferRequest` (Triton's `grpc_service.proto`, as
// tritonclient 2.73.0 ships it; the backend's `v2` structs use the same).
/// `ModelInferRequest.inputs` (repeated `InferInputTensor`).
const INFER_INPUTS: u32 = 5;
/// `ModelInferRequest.raw_input_contents` (repeated bytes, one per input sent raw).
const INFER_RAW: u32 = 7;
/// `InferInputTensor.datatype`.
const INPUT_DATATYPE: u32 = 2;
/// `InferInputTensor.parameters` (map entries: key 1, value 2).
const INPUT_PARAMETERS: u32 = 4;
/// `InferInputTensor.contents` (`InferTensorContents`).
const INPUT_CONTENTS: u32 = 5;
/// `InferTensorContents.bytes_contents` (repeated bytes, one per element).
const CONTENTS_BYTES: u32 = 8;
/// The input parameter that puts an input's data in shared memory (Triton's extension):
/// such an input has no bytes in the message, and no `raw_input_contents` entry.
const SHARED_MEMORY: &[u8] = b"shared_memory_region";

/// Where an input's `BYTES` elements are in a `ModelInferRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elements {
    /// In `raw_input_contents[entry]`, each a u32 little-endian length then its bytes.
    Raw(usize),
    /// In `contents.bytes_contents`, one entry each.
    Contents,
    /// In shared memory: none in the message.
    Shared,
}

/// The image input of a `ModelInferRequest`, as the backend (and the REST adapter) pick it.
#[derive(Debug)]
struct ImageInput<'a> {
    /// Index among the request's inputs.
    input: usize,
    source: Elements,
    /// Each element's bytes (without a length prefix), in order.
    elements: Vec<&'a [u8]>,
}

impl ImageInput<'_> {
    /// One slot per element, in order.
    fn slots(&self) -> Vec<ImageSlot> {
        self.elements
            .iter()
            .enumerate()
            .map(|(k, element)| ImageSlot {
                index: k,
                path: self.path(k),
                image: if element.is_empty() {
                    SlotImage::Unusable(EMPTY_ELEMENT.into())
                } else {
                    SlotImage::Inline(element.to_vec())
                },
            })
            .collect()
    }

    /// Where element `k` is, for messages.
    fn path(&self, k: usize) -> String {
        match self.source {
            Elements::Raw(j) => format!("raw_input_contents[{j}][{k}]"),
            Elements::Contents | Elements::Shared => {
                format!("inputs[{}].contents.bytes_contents[{k}]", self.input)
            }
        }
    }
}

/// Why an empty element is no image slot to replace.
const EMPTY_ELEMENT: &str = "empty BYTES element";

/// The image input of a `ModelInferRequest` (`None`: it has no `BYTES` input): the
/// `BYTES` input whose first element is a recognisable image, else the first `BYTES`
/// input, as the backend chooses. Its elements are its `raw_input_contents` entry when
/// the request sends raw contents (entries go to the inputs that have neither `contents`
/// nor a shared-memory region, in order, as Triton reads them), else its
/// `contents.bytes_contents`.
///
/// Errors: a message that is not protobuf, raw contents that do not add up (an element
/// running past its entry, entries not one per such input, an input with `contents` as
/// well), more `BYTES` elements over all inputs than `limits.max_tensor_elements`. Such a
/// request goes up as sent and the upstream answers for it.
fn image_input(msg: &[u8]) -> Result<Option<ImageInput<'_>>, ProtocolError> {
    let top = fields(msg)?;
    let raws: Vec<&[u8]> = top
        .iter()
        .filter(|f| f.number == INFER_RAW && f.wire == LEN)
        .map(|f| f.value(msg))
        .collect();
    let max_elements = crate::protocol::parse_limits().max_tensor_elements;
    let mut read = 0usize;
    let mut raw_entries = 0usize;
    let mut candidates = Vec::new();
    for (i, input) in top
        .iter()
        .filter(|f| f.number == INFER_INPUTS && f.wire == LEN)
        .enumerate()
    {
        let tensor = input.value(msg);
        let parts = fields(tensor)?;
        let bytes = parts
            .iter()
            .rfind(|f| f.number == INPUT_DATATYPE && f.wire == LEN)
            .is_some_and(|f| f.value(tensor) == b"BYTES");
        let contents: Vec<&[u8]> = parts
            .iter()
            .filter(|f| f.number == INPUT_CONTENTS && f.wire == LEN)
            .map(|f| f.value(tensor))
            .collect();
        let mut shared = false;
        for entry in parts
            .iter()
            .filter(|f| f.number == INPUT_PARAMETERS && f.wire == LEN)
        {
            let entry = entry.value(tensor);
            shared |= fields(entry)?
                .iter()
                .rfind(|f| f.number == 1 && f.wire == LEN)
                .is_some_and(|key| key.value(entry) == SHARED_MEMORY);
        }
        if !raws.is_empty() && !contents.is_empty() {
            return Err(bad(&format!(
                "inputs[{i}] has contents while the request sends raw_input_contents"
            )));
        }
        let source = if shared {
            Elements::Shared
        } else if raws.is_empty() {
            Elements::Contents
        } else {
            raw_entries += 1;
            Elements::Raw(raw_entries - 1)
        };
        if !bytes {
            continue;
        }
        let room = max_elements.saturating_sub(read);
        let elements: Vec<&[u8]> = match source {
            Elements::Shared => Vec::new(),
            Elements::Raw(j) => {
                let Some(blob) = raws.get(j) else {
                    return Err(bad(&format!(
                        "raw_input_contents has {} entries, inputs[{i}] would need entry {j}",
                        raws.len()
                    )));
                };
                split_elements(blob, room)
                    .map_err(|e| match e {
                        SplitError::Malformed(detail) => {
                            bad(&format!("raw_input_contents[{j}]: {detail}"))
                        }
                        SplitError::TooMany => too_many_elements(max_elements),
                    })?
                    .into_iter()
                    .map(|range| &blob[range])
                    .collect()
            }
            Elements::Contents => {
                let mut elements = Vec::new();
                for value in &contents {
                    for f in fields(value)? {
                        if f.number == CONTENTS_BYTES && f.wire == LEN {
                            if elements.len() >= room {
                                return Err(too_many_elements(max_elements));
                            }
                            elements.push(f.value(value));
                        }
                    }
                }
                elements
            }
        };
        read += elements.len();
        candidates.push(ImageInput {
            input: i,
            source,
            elements,
        });
    }
    if !raws.is_empty() && raw_entries != raws.len() {
        return Err(bad(&format!(
            "raw_input_contents has {} entries for {raw_entries} inputs sent raw",
            raws.len()
        )));
    }
    let chosen = candidates
        .iter()
        .position(|c| {
            c.elements
                .first()
                .is_some_and(|e| crate::codec::Format::sniff(e).is_some())
        })
        .unwrap_or(0);
    Ok(candidates.into_iter().nth(chosen))
}

/// A `ModelInferRequest` with the given elements of its image input replaced: the element
/// (and its length prefix, in raw contents) and the lengths that enclose it are new,
/// every other byte is copied as it came.
fn infer_replace(msg: &[u8], replacements: &[(usize, Vec<u8>)]) -> Result<Vec<u8>, ProtocolError> {
    let Some(&(first, _)) = replacements.first() else {
        return Ok(msg.to_vec());
    };
    let Some(input) = image_input(msg)? else {
        return Err(ProtocolError::NoSuchSlot {
            index: first,
            count: 0,
        });
    };
    for (index, _) in replacements {
        let element = input
            .elements
            .get(*index)
            .ok_or(ProtocolError::NoSuchSlot {
                index: *index,
                count: input.elements.len(),
            })?;
        if element.is_empty() {
            return Err(ProtocolError::NotReplaceable {
                index: *index,
                path: input.path(*index),
                reason: EMPTY_ELEMENT.to_owned(),
            });
        }
    }
    let new = |k: usize| {
        replacements
            .iter()
            .find(|(i, _)| *i == k)
            .map(|(_, bytes)| bytes.as_slice())
    };
    let out = match input.source {
        Elements::Raw(entry) => rewrite_fields(msg, INFER_RAW, |j, blob| {
            if j != entry {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(blob.len());
            for (k, element) in input.elements.iter().enumerate() {
                let bytes = new(k).unwrap_or(element);
                let length = u32::try_from(bytes.len()).map_err(|_| bad("element over 4 GiB"))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Ok(Some(out))
        })?,
        Elements::Contents => {
            let mut k = 0usize;
            rewrite_fields(msg, INFER_INPUTS, |i, tensor| {
                if i != input.input {
                    return Ok(None);
                }
                rewrite_fields(tensor, INPUT_CONTENTS, |_, contents| {
                    rewrite_fields(contents, CONTENTS_BYTES, |_, _| {
                        let element = k;
                        k += 1;
                        Ok(new(element).map(<[u8]>::to_vec))
                    })
                })
            })?
        }
        Elements::Shared => None,
    };
    Ok(out.unwrap_or_else(|| msg.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::protobuf::{put_len_field, put_varint};

    /// An `InferInputTensor`: name, datatype, shape, then `extra` (parameters, contents).
    fn tensor(name: &str, datatype: &str, shape: &[u64], extra: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        put_len_field(&mut t, 1, name.as_bytes());
        put_len_field(&mut t, 2, datatype.as_bytes());
        let mut dims = Vec::new();
        for &d in shape {
            put_varint(&mut dims, d);
        }
        put_len_field(&mut t, 3, &dims); // packed int64
        t.extend_from_slice(extra);
        t
    }

    /// Triton's serialised BYTES tensor.
    fn serialised(elements: &[&[u8]]) -> Vec<u8> {
        let mut blob = Vec::new();
        for e in elements {
            blob.extend_from_slice(&u32::try_from(e.len()).unwrap().to_le_bytes());
            blob.extend_from_slice(e);
        }
        blob
    }

    const JPEG: &[u8] = b"\xff\xd8\xff\xe0 a photo \xff\xd9";
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n another photo";
    /// Re-encodes (still JPEGs, as the agent's are).
    const SMALL: &[u8] = b"\xff\xd8\xff small";
    const SMALLER: &[u8] = b"\xff\xd8\xff";

    /// A `ModelInferRequest` as tritonclient sends one, plus what it does not: an INT64
    /// input first, a BYTES text input before the images, a `top_k` parameter, an unknown
    /// top-level field, an unknown field inside the image input.
    fn infer(images: &[&[u8]]) -> Vec<u8> {
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"classifier");
        put_len_field(&mut msg, 3, b"req-7");
        let mut top_k = Vec::new();
        put_len_field(&mut top_k, 1, b"top_k");
        let mut value = Vec::new();
        put_varint(&mut value, 2 << 3); // int64_param
        put_varint(&mut value, 3);
        put_len_field(&mut top_k, 2, &value);
        put_len_field(&mut msg, 4, &top_k);
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[2], &[]));
        put_len_field(&mut msg, 5, &tensor("prompt", "BYTES", &[1], &[]));
        let mut unknown = Vec::new();
        put_len_field(&mut unknown, 42, b"unknown inside the input");
        let n = images.len() as u64;
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[n], &unknown));
        let mut out = Vec::new();
        put_len_field(&mut out, 1, b"labels");
        put_len_field(&mut msg, 6, &out);
        put_len_field(
            &mut msg,
            7,
            &[7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0],
        );
        put_len_field(&mut msg, 7, &serialised(&[b"a cat, in words"]));
        put_len_field(&mut msg, 7, &serialised(images));
        put_len_field(&mut msg, 99, b"unknown to the proxy");
        msg
    }

    /// The same images in `contents.bytes_contents`, split over two `contents` (which
    /// protobuf merges), with no raw contents.
    fn infer_in_contents(images: &[&[u8]]) -> Vec<u8> {
        let (first, second) = images.split_at(images.len().min(1));
        let mut extra = Vec::new();
        for part in [first, second] {
            let mut contents = Vec::new();
            for image in part {
                put_len_field(&mut contents, 8, image);
            }
            put_len_field(&mut extra, 5, &contents);
        }
        let mut msg = Vec::new();
        put_len_field(&mut msg, 1, b"classifier");
        let n = images.len() as u64;
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[n], &extra));
        put_len_field(&mut msg, 99, b"unknown to the proxy");
        msg
    }

    fn inline(slots: &[ImageSlot]) -> Vec<Vec<u8>> {
        slots
            .iter()
            .map(|s| match &s.image {
                SlotImage::Inline(b) => b.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn infer_elements_are_found_and_replaced_and_every_other_byte_survives() {
        for (build, path) in [
            (infer as fn(&[&[u8]]) -> Vec<u8>, "raw_input_contents[2][1]"),
            (infer_in_contents, "inputs[0].contents.bytes_contents[1]"),
        ] {
            let body = build(&[JPEG, PNG, JPEG]);
            let slots = KServe.extract_images(&body).unwrap();
            assert_eq!(inline(&slots), [JPEG, PNG, JPEG]);
            assert_eq!(slots[1].index, 1);
            assert_eq!(slots[1].path, path);
            let out = KServe
                .replace_images(&body, &[(0, SMALL.to_vec()), (2, SMALLER.to_vec())])
                .unwrap();
            // Exactly what the client would have sent with the smaller images.
            assert_eq!(out, build(&[SMALL, PNG, SMALLER]));
            let again = KServe.extract_images(&out).unwrap();
            assert_eq!(inline(&again), [SMALL, PNG, SMALLER]);
            // One element only: the others go up as they came.
            let out = KServe
                .replace_images(&body, &[(1, SMALL.to_vec())])
                .unwrap();
            assert_eq!(out, build(&[JPEG, SMALL, JPEG]));
            assert!(matches!(
                KServe.replace_images(&body, &[(3, b"x".to_vec())]),
                Err(ProtocolError::NoSuchSlot { index: 3, count: 3 })
            ));
        }
    }

    #[test]
    fn infer_image_input_is_chosen_as_the_backend_chooses() {
        // No image anywhere: the first BYTES input ("prompt"), whose element is its slot.
        let body = infer(&[b"not an image"]);
        let slots = KServe.extract_images(&body).unwrap();
        assert_eq!(inline(&slots), [b"a cat, in words"]);
        assert_eq!(slots[0].path, "raw_input_contents[1][0]");
        // No BYTES input: no slots.
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[1], &[]));
        put_len_field(&mut msg, 7, &[1, 0, 0, 0, 0, 0, 0, 0]);
        let body = msg;
        assert!(KServe.extract_images(&body).unwrap().is_empty());
        assert!(matches!(
            KServe.replace_images(&body, &[(0, JPEG.to_vec())]),
            Err(ProtocolError::NoSuchSlot { index: 0, count: 0 })
        ));
        // An input in shared memory has no raw entry: the next input has the first one.
        let mut shm = Vec::new();
        let mut entry = Vec::new();
        put_len_field(&mut entry, 1, b"shared_memory_region");
        put_len_field(&mut entry, 2, &[0x1a, 3, b'r', b'e', b'g']); // string_param
        put_len_field(&mut shm, 4, &entry);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("ids", "INT64", &[1], &shm));
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 7, &serialised(&[JPEG]));
        let body = msg;
        let slots = KServe.extract_images(&body).unwrap();
        assert_eq!(inline(&slots), [JPEG]);
        assert_eq!(slots[0].path, "raw_input_contents[0][0]");
        // An empty element is a slot that cannot be replaced.
        let body = infer(&[JPEG, b""]);
        let slots = KServe.extract_images(&body).unwrap();
        assert!(matches!(slots[1].image, SlotImage::Unusable(_)));
        assert!(matches!(
            KServe.replace_images(&body, &[(1, b"x".to_vec())]),
            Err(ProtocolError::NotReplaceable { index: 1, .. })
        ));
    }

    #[test]
    fn hostile_infer_messages_are_errors_not_panics() {
        let with_raw = |blobs: &[&[u8]], inputs: usize| {
            let mut msg = Vec::new();
            for _ in 0..inputs {
                put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &[]));
            }
            for blob in blobs {
                put_len_field(&mut msg, 7, blob);
            }
            msg
        };
        let mut contents = Vec::new();
        put_len_field(&mut contents, 8, JPEG);
        let mut extra = Vec::new();
        put_len_field(&mut extra, 5, &contents);
        let mut both = Vec::new();
        put_len_field(&mut both, 5, &tensor("image", "BYTES", &[1], &extra));
        put_len_field(&mut both, 7, &serialised(&[JPEG]));
        let mut bad_contents = Vec::new();
        put_len_field(&mut bad_contents, 5, &[0x0a, 0x05, 0x42, 0x01]);
        let mut input_with_bad_contents = Vec::new();
        put_len_field(
            &mut input_with_bad_contents,
            5,
            &tensor("image", "BYTES", &[1], &bad_contents),
        );
        let mut truncated = serialised(&[JPEG]);
        truncated.pop();
        for body in [
            vec![0x2a, 0xff, 0xff, 0xff, 0x0f], // an input longer than the message
            with_raw(&[&truncated], 1),         // an element past its entry
            with_raw(&[&[5, 0]], 1),            // a truncated length prefix
            with_raw(&[&[0xff, 0xff, 0xff, 0xff]], 1), // an element of 4 GiB
            with_raw(&[&serialised(&[JPEG])[..]; 2], 1), // more entries than inputs
            with_raw(&[&serialised(&[JPEG])], 2), // fewer entries than inputs
            both,                               // raw contents and contents
            input_with_bad_contents,            // contents that are not protobuf
        ] {
            assert!(KServe.extract_images(&body).is_err(), "{body:?}");
            assert!(
                KServe.replace_images(&body, &[(0, b"x".to_vec())]).is_err(),
                "{body:?}"
            );
        }
        // Every prefix of a real request, and every byte of it flipped: an answer (the
        // message may still parse) or an error, never a panic.
        let msg = infer(&[JPEG, PNG]);
        for cut in 0..msg.len() {
            let _ = KServe.extract_images(&msg[..cut]);
            let _ = KServe.replace_images(&msg[..cut], &[(0, JPEG.to_vec())]);
            let mut flipped = msg.to_vec();
            flipped[cut] ^= 0xff;
            let _ = KServe.extract_images(&flipped);
            let _ = KServe.replace_images(&flipped, &[(1, JPEG.to_vec())]);
        }
        // More elements than limits.max_tensor_elements (over all BYTES inputs): too
        // complex, before any slot is built; as many is fine.
        let max = crate::protocol::parse_limits().max_tensor_elements;
        let empties = vec![&b""[..]; max];
        let body = with_raw(&[&serialised(&empties)], 1);
        assert_eq!(KServe.extract_images(&body).unwrap().len(), max);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("a", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 5, &tensor("b", "BYTES", &[1], &[]));
        put_len_field(&mut msg, 7, &serialised(&empties));
        put_len_field(&mut msg, 7, &serialised(&[JPEG]));
        assert!(matches!(
            KServe.extract_images(&msg),
            Err(ProtocolError::TooComplex { .. })
        ));
        let mut contents = Vec::new();
        for _ in 0..=max {
            put_len_field(&mut contents, 8, b"");
        }
        let mut extra = Vec::new();
        put_len_field(&mut extra, 5, &contents);
        let mut msg = Vec::new();
        put_len_field(&mut msg, 5, &tensor("image", "BYTES", &[1], &extra));
        assert!(matches!(
            KServe.extract_images(&msg),
            Err(ProtocolError::TooComplex { .. })
        ));
    }

    #[test]
    fn only_model_infer_is_compressed_among_kserve_methods() {
        assert_eq!(
            KServe.method("/inference.GRPCInferenceService/ModelInfer"),
            Some(true)
        );
        for method in [
            "ServerLive",
            "ModelMetadata",
            "ModelStreamInfer",
            "ModelInferX",
        ] {
            assert_eq!(
                KServe.method(&format!("/inference.GRPCInferenceService/{method}")),
                Some(false),
                "{method}"
            );
        }
        assert_eq!(
            KServe.method("/inference.GRPCInferenceServiceX/ModelInfer"),
            None
        );
        assert_eq!(
            KServe.method("/google.cloud.vision.v1.ImageAnnotator/BatchAnnotateImages"),
            None
        );
    }
}
