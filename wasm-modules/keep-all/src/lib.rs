//! `keep-all`: a filter that keeps every record unchanged. No parameters.
//!
//! The benchmarks' baseline: it measures what running a module costs (the call, the batch
//! encoding, the glue) when the module itself does nothing.

use weir_module::Record;

/// Keeps every record.
pub fn keep(_record: &Record) -> bool {
    true
}

weir_module::filter!(keep);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn keeps_everything_unchanged() {
        let records = vec![
            Record::new("a").with_key("k"),
            Record::new(""),
            Record::new("c"),
        ];
        let outcome = testing::run::<WeirModule>(&[], records).unwrap();
        assert_eq!(outcome.kept(), [0, 1, 2]);
        assert!(outcome.rejections().is_empty());
    }
}
