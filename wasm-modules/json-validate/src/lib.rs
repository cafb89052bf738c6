//! `json-validate`: a validator rejecting record values that are not JSON, or that lack required
//! fields or have fields of the wrong type. The rejection reason names the field.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `required` | comma-separated fields that must be present (`required=id,amount`) |
//! | `types` | comma-separated `field:type` pairs (`types=id:string,amount:number`); a field listed here must have that type when present |
//!
//! Types: `string`, `number`, `integer` (a number without a fractional part), `boolean` (or `bool`),
//! `object`, `array`, `null`. A field is a top-level name or a dotted path into nested objects
//! (`customer.id`). With neither parameter, any JSON value passes; with either, the value must be
//! a JSON object.
//!
//! Example: `required=id,amount types=id:string,amount:number` rejects `{"id":7,"amount":1}` with
//! "field `id` must be a string, found a number".

use weir_module::json::Value;
use weir_module::{Error, Params, Record, Reject, Result};

/// A JSON type a field may be required to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// A string.
    String,
    /// Any number.
    Number,
    /// A number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An object.
    Object,
    /// An array.
    Array,
    /// `null`.
    Null,
}

impl std::str::FromStr for JsonType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "string" => JsonType::String,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "boolean" | "bool" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "null" => JsonType::Null,
            other => {
                return Err(Error::new(format!(
                    "unknown type `{other}` (known: string, number, integer, boolean, object, \
                     array, null)"
                )));
            }
        })
    }
}

impl JsonType {
    fn of(value: &Value) -> &'static str {
        match value {
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Object(_) => "an object",
            Value::Array(_) => "an array",
            Value::Null => "null",
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "a string",
            JsonType::Number => "a number",
            JsonType::Integer => "an integer",
            JsonType::Boolean => "a boolean",
            JsonType::Object => "an object",
            JsonType::Array => "an array",
            JsonType::Null => "null",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (JsonType::String, Value::String(_))
            | (JsonType::Number, Value::Number(_))
            | (JsonType::Boolean, Value::Bool(_))
            | (JsonType::Object, Value::Object(_))
            | (JsonType::Array, Value::Array(_))
            | (JsonType::Null, Value::Null) => true,
            (JsonType::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

/// A field: its name as given and the path into nested objects.
struct Field {
    name: String,
    path: Vec<String>,
}

impl Field {
    fn new(name: &str) -> Result<Self> {
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::new(format!("invalid field `{name}`")));
        }
        Ok(Field {
            name: name.to_owned(),
            path,
        })
    }

    fn find<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.path
            .iter()
            .try_fold(value, |value, step| value.as_object()?.get(step))
    }
}

/// The rules, from the parameters.
pub struct Rules {
    required: Vec<Field>,
    types: Vec<(Field, JsonType)>,
}

impl Rules {
    /// Reads `required=...` and `types=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["required", "types"])?;
        let required = params
            .list("required")
            .into_iter()
            .map(Field::new)
            .collect::<Result<_>>()
            .map_err(|e| e.context("parameter `required`"))?;
        let types = params
            .list("types")
            .into_iter()
            .map(|pair| {
                let (name, ty) = pair
                    .split_once(':')
                    .ok_or_else(|| Error::new(format!("`{pair}` is not `field:type`")))?;
                Ok((Field::new(name.trim())?, ty.trim().parse()?))
            })
            .collect::<Result<_>>()
            .map_err(|e| e.context("parameter `types`"))?;
        Ok(Rules { required, types })
    }
}

/// Accepts `record` if its value is JSON that follows the rules.
pub fn check(rules: &Rules, record: &Record) -> Result<(), Reject> {
    let value: Value = serde_json::from_slice(&record.value)
        .map_err(|e| Reject::new(format!("the value is not JSON: {e}")))?;
    if rules.required.is_empty() && rules.types.is_empty() {
        return Ok(());
    }
    if !value.is_object() {
        return Err(Reject::new(format!(
            "the value must be a JSON object, found {}",
            JsonType::of(&value)
        )));
    }
    for field in &rules.required {
        if field.find(&value).is_none() {
            return Err(Reject::new(format!(
                "missing required field `{}`",
                field.name
            )));
        }
    }
    for (field, ty) in &rules.types {
        if let Some(found) = field.find(&value)
            && !ty.matches(found)
        {
            return Err(Reject::new(format!(
                "field `{}` must be {}, found {}",
                field.name,
                ty.name(),
                JsonType::of(found)
            )));
        }
    }
    Ok(())
}

weir_module::validate!(check, config = Rules::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    const RULES: [(&str, &str); 2] = [
        ("required", "id,amount,customer.id"),
        (
            "types",
            "id:string, amount:number, count:integer, customer:object",
        ),
    ];

    fn verdicts(params: &[(&str, &str)], values: &[&str]) -> Vec<(u32, String)> {
        let records = values.iter().map(|v| Record::new(*v)).collect();
        let outcome = testing::run::<WeirModule>(params, records).unwrap();
        outcome
            .rejections()
            .into_iter()
            .map(|(i, reason)| (i, reason.to_owned()))
            .collect()
    }

    #[test]
    fn rejections_name_the_field() {
        let values = [
            r#"{"id":"a","amount":1.5,"customer":{"id":3},"count":2}"#,
            r#"{"amount":1,"customer":{"id":3}}"#,
            r#"{"id":7,"amount":1,"customer":{"id":3}}"#,
            r#"{"id":"a","amount":"1","customer":{"id":3}}"#,
            r#"{"id":"a","amount":1,"customer":{}}"#,
            r#"{"id":"a","amount":1,"customer":{"id":3},"count":2.5}"#,
            "{oops",
            "[1,2]",
        ];
        assert_eq!(
            verdicts(&RULES, &values),
            [
                (1, "missing required field `id`".into()),
                (2, "field `id` must be a string, found a number".into()),
                (3, "field `amount` must be a number, found a string".into()),
                (4, "missing required field `customer.id`".into()),
                (5, "field `count` must be an integer, found a number".into()),
                (
                    6,
                    "the value is not JSON: key must be a string at line 1 column 2".into()
                ),
                (7, "the value must be a JSON object, found an array".into()),
            ]
        );
    }

    #[test]
    fn without_rules_any_json_passes() {
        assert_eq!(
            verdicts(&[], &["1", "[]", r#""s""#, "nope"]),
            [(
                3,
                "the value is not JSON: expected ident at line 1 column 2".into()
            )]
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for (params, message) in [
            (
                [("types", "id:text")],
                "parameter `types`: unknown type `text` (known: string, number, integer, \
                 boolean, object, array, null)",
            ),
            (
                [("types", "id")],
                "parameter `types`: `id` is not `field:type`",
            ),
            (
                [("required", "a..b")],
                "parameter `required`: invalid field `a..b`",
            ),
            (
                [("requird", "a")],
                "unknown parameter `requird` (known: required, types)",
            ),
        ] {
            let error = testing::run::<WeirModule>(&params, vec![]).unwrap_err();
            assert_eq!(error.message(), message);
        }
    }
}
