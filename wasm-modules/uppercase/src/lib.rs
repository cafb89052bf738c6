//! `uppercase`: a map rewriting each value to ASCII upper case (bytes outside `a`–`z` are left
//! as they are, so any value, UTF-8 or not, passes). No parameters.
//!
//! The benchmarks' "map that rewrites values": every record comes back as a new record.

use weir_module::{Record, Result};

/// Rewrites `value` to ASCII upper case in place: the module's whole logic.
pub fn uppercase_logic(value: &mut [u8]) {
    value.make_ascii_uppercase();
}

/// Returns `record` with its value in ASCII upper case.
pub fn uppercase(mut record: Record) -> Result<Record> {
    uppercase_logic(&mut record.value);
    Ok(record)
}

weir_module::map!(uppercase);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn rewrites_ascii_letters_only() {
        let records = vec![
            Record::new("hello, wörld 42").with_key("k"),
            Record::new(b"\xffabc".to_vec()),
        ];
        let outcome = testing::run::<WeirModule>(&[], records).unwrap();
        assert_eq!(
            outcome.records()[0],
            &Record::new("HELLO, WöRLD 42").with_key("k")
        );
        assert_eq!(outcome.records()[1].value, b"\xffABC");
    }
}
