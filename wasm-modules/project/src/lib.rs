//! `project`: a map projecting JSON object values onto some of their top-level fields, as a
//! smaller JSON object or as one CSV line.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `fields` (required) | comma-separated top-level fields to keep, in output order |
//! | `format` | `json` (default): an object with those fields (absent ones omitted); `csv`: one line, no header, one cell per field (absent or `null` ones empty) |
//!
//! In CSV, strings are written as they are and other values as their JSON text; a cell holding
//! a comma, a double quote or a line break is quoted (RFC 4180). A value that is not a JSON object
//! is rejected with the reason.
//!
//! Example: `fields=id,total format=csv` turns `{"id":"a,1","total":9.5,"note":"x"}` into
//! `"a,1",9.5`.

use weir_module::json::{self, Value};
use weir_module::{Error, Params, Record, Result};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON object.
    Json,
    /// A CSV line.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(Error::new("expected `json` or `csv`")),
        }
    }
}

/// The projection, from the parameters.
pub struct Projection {
    fields: Vec<String>,
    format: Format,
}

impl Projection {
    /// Reads `fields=...` and `format=...`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["fields", "format"])?;
        let fields: Vec<String> = params
            .list("fields")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if fields.is_empty() {
            return Err(Error::new("missing required parameter `fields`"));
        }
        Ok(Projection {
            fields,
            format: params.parse_or("format", Format::Json)?,
        })
    }

    /// The projected text of a JSON object value.
    pub fn apply(&self, value: &[u8]) -> Result<String> {
        let names: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        let found = json::fields_of(value, &names)?;
        let mut out = String::with_capacity(value.len());
        match self.format {
            Format::Json => {
                out.push('{');
                let present = self.fields.iter().zip(&found);
                for (i, (name, value)) in present
                    .filter_map(|(name, value)| Some((name, value.as_ref()?)))
                    .enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(name.as_str()).to_string());
                    out.push(':');
                    out.push_str(&value.to_string());
                }
                out.push('}');
            }
            Format::Csv => {
                for (i, value) in found.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match value {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) => push_csv_cell(&mut out, s),
                        Some(other) => push_csv_cell(&mut out, &other.to_string()),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn push_csv_cell(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

/// Returns `record` with its value projected.
pub fn project(projection: &Projection, record: Record) -> Result<Record> {
    let projected = projection.apply(&record.value)?;
    Ok(record.with_value(projected))
}

weir_module::map!(project, config = Projection::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    const VALUES: [&str; 3] = [
        r#"{"total":9.5,"id":"a,1","note":"say \"hi\"","tags":["x"]}"#,
        r#"{"id":null,"other":1}"#,
        "[1]",
    ];

    fn run(params: &[(&str, &str)]) -> (Vec<String>, Vec<(u32, String)>) {
        let records = VALUES
            .iter()
            .map(|v| Record::new(*v).with_key("k"))
            .collect();
        let outcome = testing::run::<WeirModule>(params, records).unwrap();
        assert!(
            outcome
                .records()
                .iter()
                .all(|r| r.key.as_deref() == Some(&b"k"[..]))
        );
        let rejections = outcome
            .rejections()
            .into_iter()
            .map(|(i, r)| (i, r.to_owned()))
            .collect();
        (outcome.values(), rejections)
    }

    #[test]
    fn json_keeps_the_fields_in_the_order_asked() {
        let (values, rejections) = run(&[("fields", "id,total,tags,missing")]);
        assert_eq!(
            values,
            [r#"{"id":"a,1","total":9.5,"tags":["x"]}"#, r#"{"id":null}"#]
        );
        assert_eq!(rejections.len(), 1);
        assert_eq!(rejections[0].0, 2);
        assert!(
            rejections[0]
                .1
                .starts_with("the value is not a JSON object")
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let (values, _) = run(&[("fields", "id, total,note,tags,missing"), ("format", "csv")]);
        assert_eq!(values, [r#""a,1",9.5,"say ""hi""","[""x""]","#, ",,,,"]);
    }

    #[test]
    fn fields_are_required() {
        for params in [&[][..], &[("fields", " , ")][..]] {
            let error = testing::run::<WeirModule>(params, vec![]).unwrap_err();
            assert_eq!(error.message(), "missing required parameter `fields`");
        }
        let error =
            testing::run::<WeirModule>(&[("fields", "a"), ("format", "xml")], vec![]).unwrap_err();
        assert_eq!(
            error.message(),
            "parameter `format`: cannot parse `xml`: expected `json` or `csv`"
        );
    }
}
