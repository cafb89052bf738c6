//! `field-filter`: a filter keeping the JSON records whose top-level field equals a value.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `field` (required) | name of a top-level field of the value, a JSON object |
//! | `value` (required) | what the field must equal |
//!
//! A string field matches when it equals `value` exactly; any other field matches when it equals
//! `value` read as JSON: `value=42` matches `42` and `"42"` but not `42.0`, `value=true` matches
//! `true`, `value=null` matches `null`, `value=[1,2]` matches `[1, 2]`. Records whose value is not
//! a JSON object, or lacks the field, are dropped.
//!
//! Example: `field=status value=active` keeps `{"id":7,"status":"active"}`.

use weir_module::json::{self, Value};
use weir_module::{Params, Record, Result};

/// The field and the value it must have.
pub struct Wanted {
    field: String,
    value: String,
    /// `value` read as JSON, if it is JSON.
    as_json: Option<Value>,
}

impl Wanted {
    /// Reads `field=...` and `value=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["field", "value"])?;
        let value: String = params.require("value")?;
        Ok(Wanted {
            field: params.require("field")?,
            as_json: serde_json::from_str(&value).ok(),
            value,
        })
    }

    /// Whether a field's value matches.
    fn matches(&self, found: &Value) -> bool {
        match found {
            Value::String(s) => *s == self.value,
            other => self.as_json.as_ref() == Some(other),
        }
    }
}

/// Keeps `record` if its value is a JSON object whose field has the wanted value.
pub fn keep(wanted: &Wanted, record: &Record) -> bool {
    match json::field(&record.value, &wanted.field) {
        Ok(Some(found)) => wanted.matches(&found),
        Ok(None) | Err(_) => false,
    }
}

weir_module::filter!(keep, config = Wanted::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    fn run(field: &str, value: &str, values: &[&str]) -> Vec<u32> {
        let records = values.iter().map(|v| Record::new(*v)).collect();
        testing::run::<WeirModule>(&[("field", field), ("value", value)], records)
            .unwrap()
            .kept()
    }

    #[test]
    fn strings_compare_as_text() {
        let values = [
            r#"{"status":"active","id":1}"#,
            r#"{"status":"inactive"}"#,
            r#"{"id":2}"#,
            r#"{"nested":{"status":"active"}}"#,
            "not json",
            r#"["status","active"]"#,
            r#"{"status":"active"}"#,
        ];
        assert_eq!(run("status", "active", &values), [0, 6]);
    }

    #[test]
    fn numbers_bools_and_null_compare_as_json_text() {
        let values = [
            r#"{"n":42}"#,
            r#"{"n":42.0}"#,
            r#"{"n":"42"}"#,
            r#"{"n":true}"#,
            r#"{"n":null}"#,
        ];
        assert_eq!(run("n", "42", &values), [0, 2]);
        assert_eq!(run("n", "true", &values), [3]);
        assert_eq!(run("n", "null", &values), [4]);
        assert_eq!(
            run("n", "[1, 2]", &[r#"{"n":[1,2]}"#, r#"{"n":[2,1]}"#]),
            [0]
        );
    }

    #[test]
    fn both_parameters_are_required() {
        let error = testing::run::<WeirModule>(&[("field", "status")], vec![]).unwrap_err();
        assert_eq!(error.message(), "missing required parameter `value`");
    }
}
