//! Reading fields of JSON record values without building the whole document (feature `json`).
//!
//! ```
//! use weir_module::json::{self, Value};
//!
//! let value = br#"{"status":"active","items":[1,2,3],"amount":12.5}"#;
//! assert_eq!(json::field(value, "status")?, Some(Value::from("active")));
//! assert_eq!(json::field(value, "missing")?, None);
//! let [status, amount] = json::fields(value, ["status", "amount"])?;
//! assert_eq!((status.as_ref().and_then(Value::as_str), amount.and_then(|a| a.as_f64())), (Some("active"), Some(12.5)));
//! assert_eq!(
//!     json::field(b"[1]", "status").unwrap_err().message(),
//!     "the value is not a JSON object: invalid type: sequence, expected a JSON object at line 1 column 0"
//! );
//! # Ok::<(), weir_module::Error>(())
//! ```

use std::fmt;

use serde_core::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
pub use serde_json::Value;

use crate::error::{Error, Result};

/// The top-level field `name` of the JSON object `json`: `None` if absent (the last one if it
/// repeats). An error if `json` is not a JSON object. Other fields are checked for syntax but
/// not built.
pub fn field(json: &[u8], name: &str) -> Result<Option<Value>> {
    let [value] = fields(json, [name])?;
    Ok(value)
}

/// The top-level fields `names` of the JSON object `json`, in one pass: `None` for each absent.
pub fn fields<const N: usize>(json: &[u8], names: [&str; N]) -> Result<[Option<Value>; N]> {
    let mut found = [const { None }; N];
    read_fields(json, &names, |i, value| found[i] = Some(value))?;
    Ok(found)
}

/// Like [`fields`] for a list of names only known at run time.
pub fn fields_of(json: &[u8], names: &[&str]) -> Result<Vec<Option<Value>>> {
    let mut found = vec![None; names.len()];
    read_fields(json, names, |i, value| found[i] = Some(value))?;
    Ok(found)
}

fn read_fields(json: &[u8], names: &[&str], found: impl FnMut(usize, Value)) -> Result<()> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let read = Fields { names, found }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    read.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::new(format!("the value is not a JSON object: {e}"))
        }
        _ => Error::new(format!("the value is not JSON: {e}")),
    })
}

/// Visits an object, building only the values of `names`.
struct Fields<'a, F> {
    names: &'a [&'a str],
    found: F,
}

impl<'de, F: FnMut(usize, Value)> DeserializeSeed<'de> for Fields<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(usize, Value)> Visitor<'de> for Fields<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(position) = map.next_key_seed(Position(self.names))? {
            match position {
                Some(i) => (self.found)(i, map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, deserialized as its position in the names wanted (borrowing it, never allocating).
struct Position<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for Position<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Position<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_one_pass() {
        let doc = br#"{"a":1,"b":{"nested":[true,null]},"c":"x\"y","a":2}"#;
        assert_eq!(
            field(doc, "a").unwrap(),
            Some(Value::from(2)),
            "the last one wins"
        );
        assert_eq!(
            fields_of(doc, &["c", "zz", "b"]).unwrap(),
            [
                Some(Value::from("x\"y")),
                None,
                Some(serde_json::json!({"nested": [true, null]}))
            ]
        );
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        assert_eq!(
            field(b"not json", "a").unwrap_err().message(),
            "the value is not JSON: expected ident at line 1 column 2"
        );
        assert_eq!(
            field(br#"{"a":1} trailing"#, "a").unwrap_err().message(),
            "the value is not JSON: trailing characters at line 1 column 9"
        );
        assert_eq!(
            field(br#"{"a":1,"b":[}"#, "a").unwrap_err().message(),
            "the value is not JSON: expected value at line 1 column 13"
        );
        assert!(
            field(b"42", "a")
                .unwrap_err()
                .message()
                .starts_with("the value is not a JSON object: invalid type: integer `42`")
        );
    }
}
