//! The field type of the typed wire structs: [`Field`].
//!
//! Each protocol file declares `#[derive(Deserialize)]` structs for the JSON it reads
//! (request shapes where the proxy or backend looks for the image and options, answer shapes
//! where labels are parsed), with the vendor's field names. They are deserialized from the
//! already parsed `serde_json::Value` ([`read`], or `read_request` / `read_answer` in the
//! module root), which keeps the size check
//! of `parse_json` in front and the rewrite on the `Value`: typed structs are for reading only,
//! so no field the proxy does not know is ever dropped from a rewritten body.
//!
//! Clients and services send wrong types, and the errors must quote what was sent
//! (`MaxLabels must be a non-negative integer, got "ten"`). A plain `Option<u64>` would fail
//! the whole struct with serde's message instead, so fields are [`Field`]s: absent, of the
//! expected JSON type, or the value as sent (`null` included) for the adapter to judge. Strings
//! are borrowed from the document, so reading a multi-megabyte base64 image copies nothing.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One field of a wire struct; use with `#[serde(default)]` so an absent key is
/// [`Field::Absent`].
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) enum Field<T> {
    /// The key is not there.
    #[default]
    Absent,
    /// The value has the expected JSON type (see [`Expect`]).
    Is(T),
    /// Anything else, `null` included, as sent.
    Wrong(Value),
}

impl<T> Field<T> {
    /// The value when it has the expected type.
    pub(super) fn ok(&self) -> Option<&T> {
        match self {
            Field::Is(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// Whether the key is absent or `null` (protobuf's and AWS's "not set").
    pub(super) fn is_unset(&self) -> bool {
        matches!(self, Field::Absent | Field::Wrong(Value::Null))
    }

    /// The value as sent when it has the wrong type; `null` when absent or of the expected
    /// type (which has no `Value` to quote).
    pub(super) fn wrong(&self) -> &Value {
        match self {
            Field::Wrong(value) => value,
            Field::Absent | Field::Is(_) => &Value::Null,
        }
    }
}

impl Field<Cow<'_, str>> {
    /// The value as sent (`null` when absent), for error messages.
    pub(super) fn as_sent(&self) -> Value {
        match self {
            Field::Absent => Value::Null,
            Field::Is(text) => Value::String(text.clone().into_owned()),
            Field::Wrong(value) => value.clone(),
        }
    }

    /// The text when the value is a string.
    pub(super) fn text(&self) -> Option<&str> {
        self.ok().map(|text| text.as_ref())
    }
}

impl Field<Value> {
    /// The value as sent, `null` included; `None` when absent.
    pub(super) fn value(&self) -> Option<&Value> {
        match self {
            Field::Is(value) | Field::Wrong(value) => Some(value),
            Field::Absent => None,
        }
    }
}

/// The JSON type a [`Field`] expects: each hook accepts its kind of value or hands it back
/// (`Err`) to be kept as [`Field::Wrong`]. Wire structs implement it with
/// `wire_object!` (they expect a JSON object).
pub(super) trait Expect<'de>: Sized {
    fn text(text: Cow<'de, str>) -> Result<Self, Value> {
        Err(Value::String(text.into_owned()))
    }

    fn number(number: serde_json::Number) -> Result<Self, Value> {
        Err(Value::Number(number))
    }

    fn boolean(value: bool) -> Result<Self, Value> {
        Err(Value::Bool(value))
    }

    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Result<Self, Value>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Err)
    }

    fn map<A: MapAccess<'de>>(map: A) -> Result<Result<Self, Value>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Err)
    }
}

/// A string, borrowed from the document where it can be.
impl<'de: 'a, 'a> Expect<'de> for Cow<'a, str> {
    fn text(text: Cow<'de, str>) -> Result<Self, Value> {
        Ok(text)
    }
}

/// A number (integer or float, as `serde_json` keeps it).
impl Expect<'_> for serde_json::Number {
    fn number(number: serde_json::Number) -> Result<Self, Value> {
        Ok(number)
    }
}

/// `true` or `false`.
impl Expect<'_> for bool {
    fn boolean(value: bool) -> Result<Self, Value> {
        Ok(value)
    }
}

/// Any value but `null`, as sent: for fields whose several accepted types the adapter sorts
/// out itself (numbers sent as strings, enums by name or by number).
impl<'de> Expect<'de> for Value {
    fn text(text: Cow<'de, str>) -> Result<Self, Value> {
        Ok(Value::String(text.into_owned()))
    }

    fn number(number: serde_json::Number) -> Result<Self, Value> {
        Ok(Value::Number(number))
    }

    fn boolean(value: bool) -> Result<Self, Value> {
        Ok(Value::Bool(value))
    }

    fn seq<A: SeqAccess<'de>>(seq: A) -> Result<Result<Self, Value>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Ok)
    }

    fn map<A: MapAccess<'de>>(map: A) -> Result<Result<Self, Value>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Ok)
    }
}

/// An array, each element read as `T` (wrap elements in [`Field`] to keep wrong ones).
impl<'de, T: Deserialize<'de>> Expect<'de> for Vec<T> {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Result<Self, Value>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ok(items))
    }
}

/// Declares that wire structs expect a JSON object: `wire_object!(Image);`, or
/// `wire_object!('a, Image<'a>);` for one borrowing from the document.
macro_rules! wire_object {
    ($($name:ident),+ $(,)?) => {$(
        impl<'de> $crate::protocol::wire::Expect<'de> for $name {
            fn map<A: serde::de::MapAccess<'de>>(
                map: A,
            ) -> Result<Result<Self, serde_json::Value>, A::Error> {
                <$name as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(Ok)
            }
        }
    )+};
    ($lt:lifetime, $($name:ident),+ $(,)?) => {$(
        impl<'de: $lt, $lt> $crate::protocol::wire::Expect<'de> for $name<$lt> {
            fn map<A: serde::de::MapAccess<'de>>(
                map: A,
            ) -> Result<Result<Self, serde_json::Value>, A::Error> {
                <$name<$lt> as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(Ok)
            }
        }
    )+};
}
pub(super) use wire_object;

impl<'de, T: Expect<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

fn kept<T>(result: Result<T, Value>) -> Field<T> {
    match result {
        Ok(value) => Field::Is(value),
        Err(value) => Field::Wrong(value),
    }
}

impl<'de, T: Expect<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(kept(T::boolean(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(kept(T::number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(kept(T::number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // A `Value` holds no NaN or infinity; were one to come, it is `null` as JSON has it.
        Ok(match serde_json::Number::from_f64(v) {
            Some(number) => kept(T::number(number)),
            None => Field::Wrong(Value::Null),
        })
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(kept(T::text(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(kept(T::text(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(kept(T::text(Cow::Owned(v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Wrong(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Wrong(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::seq(seq).map(kept)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::map(map).map(kept)
    }
}

/// Reads a whole document as `T` (a struct of [`Field`]s, so only a document that is not an
/// object fails: `Field::Wrong` with the document as sent).
pub(super) fn read<'de, T: Expect<'de>>(doc: &'de Value) -> Field<T> {
    // A `Field` visitor accepts every JSON value, so this cannot fail on a `Value`; an error
    // would be a serde_json bug and is answered as a wrong-typed document.
    Field::deserialize(doc).unwrap_or_else(|_| Field::Wrong(doc.clone()))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Image<'a> {
        #[serde(default, rename = "Bytes", borrow)]
        bytes: Field<Cow<'a, str>>,
        #[serde(default, rename = "Size")]
        size: Field<serde_json::Number>,
    }
    wire_object!('a, Image);

    #[derive(Debug, Deserialize)]
    struct Request<'a> {
        #[serde(default, rename = "Image", borrow)]
        image: Field<Image<'a>>,
        #[serde(default, rename = "Tags", borrow)]
        tags: Field<Vec<Field<Cow<'a, str>>>>,
    }
    wire_object!('a, Request);

    #[test]
    fn fields_are_absent_typed_or_kept_as_sent() {
        let doc = json!({"Image": {"Bytes": "aGk=", "Size": "big"}, "Tags": ["a", 1]});
        let Field::Is(request) = read::<Request>(&doc) else {
            panic!("an object");
        };
        let Field::Is(image) = &request.image else {
            panic!("an image");
        };
        assert!(matches!(image.bytes, Field::Is(Cow::Borrowed("aGk="))));
        assert_eq!(image.size, Field::Wrong(json!("big")));
        let Field::Is(tags) = &request.tags else {
            panic!("tags");
        };
        assert_eq!(tags[0].text(), Some("a"));
        assert_eq!(tags[1], Field::Wrong(json!(1)));

        let doc = json!({"Image": null, "Tags": {"a": 1}});
        let Field::Is(request) = read::<Request>(&doc) else {
            panic!("an object");
        };
        assert!(matches!(request.image, Field::Wrong(Value::Null)));
        assert!(request.image.is_unset());
        assert_eq!(request.tags, Field::Wrong(json!({"a": 1})));

        let doc = json!({});
        let Field::Is(request) = read::<Request>(&doc) else {
            panic!("an object");
        };
        assert!(matches!(request.image, Field::Absent));
        let doc = json!([1]);
        assert!(matches!(
            read::<Request>(&doc),
            Field::Wrong(Value::Array(_))
        ));
    }
}
