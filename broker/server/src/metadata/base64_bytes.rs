//! Module bytes as base64 in the JSON metadata (a JSON array of numbers would quadruple them).
//!
//! Used through `#[serde(with = "base64_bytes")]` by both the data model and the commands.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serializer};

pub(super) fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    STANDARD
        .decode(text.as_bytes())
        .map(Bytes::from)
        .map_err(serde::de::Error::custom)
}
