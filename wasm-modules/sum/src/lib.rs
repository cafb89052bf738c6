//! `sum`: an aggregate counting records and summing a numeric field of their JSON values. Each
//! record is replaced by itself with the running totals as its value, so a consumer reading
//! through it sees the totals grow; the totals live as long as the instance (one per
//! subscription, or per attachment on the produce path).
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `field` | top-level field to sum; without it the module only counts |
//!
//! The emitted value is a JSON object:
//!
//! - `count`: records seen so far;
//! - `sum` (with `field`): the sum of the field over the records where it is a number; an integer
//!   while every addend is an integer (exact, no rounding), a float from the first float on;
//! - `skipped` (with `field`): records whose value is not a JSON object or whose field is absent
//!   or not a number (so the mean is `sum / (count - skipped)`).
//!
//! Example: with `field=amount`, the values `{"amount":2}`, `{"amount":0.5}`, `oops` become
//! `{"count":1,"sum":2,"skipped":0}`, `{"count":2,"sum":2.5,"skipped":0}`,
//! `{"count":3,"sum":2.5,"skipped":1}`.

use weir_module::json::{self, Value};
use weir_module::{Params, Record, Result, ToValue};

/// The field to sum, from the parameters.
pub struct Config {
    field: Option<String>,
}

impl Config {
    /// Reads `field=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["field"])?;
        Ok(Config {
            field: params.parse("field")?,
        })
    }
}

/// A sum: exact while every addend is an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sum {
    Integer(i128),
    Float(f64),
}

impl Sum {
    fn add(self, n: &serde_json::Number) -> Sum {
        let as_integer = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
        match (self, as_integer) {
            (Sum::Integer(total), Some(n)) => match total.checked_add(n) {
                Some(total) => Sum::Integer(total),
                None => Sum::Float(total as f64 + n as f64),
            },
            (sum, _) => Sum::Float(sum.as_f64() + n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Sum::Integer(n) => n as f64,
            Sum::Float(f) => f,
        }
    }
}

/// The running totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    count: u64,
    skipped: u64,
    sum: Sum,
    summing: bool,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            count: 0,
            skipped: 0,
            sum: Sum::Integer(0),
            summing: false,
        }
    }
}

impl ToValue for Totals {
    fn to_value(&self) -> Vec<u8> {
        let mut out = format!("{{\"count\":{}", self.count);
        if self.summing {
            let sum = match self.sum {
                Sum::Integer(n) => n.to_string(),
                // JSON has no infinities: an overflowing float sum is written as null.
                Sum::Float(f) => serde_json::Number::from_f64(f)
                    .map_or_else(|| "null".to_owned(), |n| n.to_string()),
            };
            out.push_str(&format!(",\"sum\":{sum},\"skipped\":{}", self.skipped));
        }
        out.push('}');
        out.into_bytes()
    }
}

/// Adds `record` to the totals.
pub fn add(config: &Config, mut totals: Totals, record: &Record) -> Totals {
    totals.count += 1;
    if let Some(field) = &config.field {
        totals.summing = true;
        match json::field(&record.value, field) {
            Ok(Some(Value::Number(n))) => totals.sum = totals.sum.add(&n),
            _ => totals.skipped += 1,
        }
    }
    totals
}

weir_module::aggregate!(add, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    fn records(values: &[&str]) -> Vec<Record> {
        values.iter().map(|v| Record::new(*v)).collect()
    }

    #[test]
    fn sums_a_field_across_batches() {
        let mut instance = testing::Instance::new::<WeirModule>(&[("field", "amount")]).unwrap();
        let outcome = instance
            .process(records(&[r#"{"amount":2}"#, r#"{"amount":0.5}"#, "oops"]))
            .unwrap();
        assert_eq!(
            outcome.values(),
            [
                r#"{"count":1,"sum":2,"skipped":0}"#,
                r#"{"count":2,"sum":2.5,"skipped":0}"#,
                r#"{"count":3,"sum":2.5,"skipped":1}"#,
            ]
        );
        let outcome = instance
            .process(records(&[r#"{"amount":"3"}"#, r#"{"amount":-1.5,"x":1}"#]))
            .unwrap();
        assert_eq!(
            outcome.values(),
            [
                r#"{"count":4,"sum":2.5,"skipped":2}"#,
                r#"{"count":5,"sum":1.0,"skipped":2}"#,
            ]
        );
    }

    #[test]
    fn integer_sums_are_exact() {
        let big = format!(r#"{{"n":{}}}"#, u64::MAX);
        let outcome =
            testing::run::<WeirModule>(&[("field", "n")], records(&[&big, &big])).unwrap();
        assert_eq!(
            outcome.values()[1],
            r#"{"count":2,"sum":36893488147419103230,"skipped":0}"#
        );
    }

    #[test]
    fn without_a_field_it_counts() {
        let outcome = testing::run::<WeirModule>(&[], records(&["a", "b"])).unwrap();
        assert_eq!(outcome.values(), [r#"{"count":1}"#, r#"{"count":2}"#]);
    }
}
