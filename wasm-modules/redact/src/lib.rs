//! `redact`: a map masking personal data in record values: e-mail addresses and long runs of
//! digits (card, phone, account and social-security numbers). Masked characters are replaced
//! one for one, so lengths and the rest of the text are unchanged; values need not be UTF-8.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `emails` | `true` (default) masks e-mail addresses, keeping the `@` |
//! | `digits` | minimum number of digits in a run to mask it (default 9; `0` masks no digits). A run may contain single spaces or dashes between digits (`4111 1111 1111 1111`, `555-123-4567`); the separators are kept |
//! | `keep_last` | digits left visible at the end of each masked run (default 0; `4` shows a card's last four) |
//! | `mask` | the masking character, ASCII (default `*`) |
//!
//! Example: with `keep_last=4`, `card 4111-1111-1111-1234, mail jo@example.com` becomes
//! `card ****-****-****-1234, mail **@***********`.
//!
//! Detection is deliberately simple: an e-mail address is `local@domain.tld` with the usual
//! characters; dates like `20240101` (8 digits) stay visible with the default threshold.

use weir_module::{Error, Params, Record, Result};

/// What to mask, from the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// Mask e-mail addresses.
    pub emails: bool,
    /// Minimum digits in a run to mask it; 0 masks none.
    pub digits: usize,
    /// Digits left visible at the end of a masked run.
    pub keep_last: usize,
    /// The masking byte (ASCII).
    pub mask: u8,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            emails: true,
            digits: 9,
            keep_last: 0,
            mask: b'*',
        }
    }
}

impl Redaction {
    /// Reads `emails`, `digits`, `keep_last` and `mask`.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["emails", "digits", "keep_last", "mask"])?;
        let defaults = Redaction::default();
        let mask: char = params.parse_or("mask", char::from(defaults.mask))?;
        let mask = u8::try_from(mask)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| Error::new("parameter `mask`: must be an ASCII character"))?;
        Ok(Redaction {
            emails: params.parse_or("emails", defaults.emails)?,
            digits: params.parse_or("digits", defaults.digits)?,
            keep_last: params.parse_or("keep_last", defaults.keep_last)?,
            mask,
        })
    }

    /// Masks `text` in place: the module's whole logic.
    pub fn apply(&self, text: &mut [u8]) {
        if self.emails {
            mask_emails(text, self.mask);
        }
        if self.digits > 0 {
            mask_digit_runs(text, self.digits, self.keep_last, self.mask);
        }
    }
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

fn mask_emails(text: &mut [u8], mask: u8) {
    let mut at = 0;
    while let Some(offset) = text[at..].iter().position(|&b| b == b'@') {
        let sign = at + offset;
        let start = text[..sign]
            .iter()
            .rposition(|&b| !is_local(b))
            .map_or(0, |i| i + 1);
        let mut end = text[sign + 1..]
            .iter()
            .position(|&b| !is_domain(b))
            .map_or(text.len(), |i| sign + 1 + i);
        // A sentence may end right after the address.
        while end > sign + 1 && matches!(text[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[sign + 1..end];
        let valid = start < sign
            && domain.first().is_some_and(u8::is_ascii_alphanumeric)
            && domain
                .iter()
                .rposition(|&b| b == b'.')
                .is_some_and(|dot| dot + 1 < domain.len());
        if valid {
            text[start..sign].fill(mask);
            text[sign + 1..end].fill(mask);
        }
        at = sign + 1;
    }
}

fn mask_digit_runs(text: &mut [u8], min_digits: usize, keep_last: usize, mask: u8) {
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // The run: digits, with single separators between two digits.
        let start = i;
        let mut end = i + 1;
        let mut digits = 1;
        while end < text.len() {
            if text[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if matches!(text[end], b' ' | b'-')
                && text.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                end += 1;
            } else {
                break;
            }
        }
        if digits >= min_digits {
            let mut to_mask = digits.saturating_sub(keep_last);
            for b in &mut text[start..end] {
                if to_mask == 0 {
                    break;
                }
                if b.is_ascii_digit() {
                    *b = mask;
                    to_mask -= 1;
                }
            }
        }
        i = end;
    }
}

/// Returns `record` with its value masked.
pub fn redact(redaction: &Redaction, mut record: Record) -> Result<Record> {
    redaction.apply(&mut record.value);
    Ok(record)
}

weir_module::map!(redact, config = Redaction::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::*;

    fn redacted(redaction: &Redaction, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        redaction.apply(&mut bytes);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn masks_emails() {
        let r = Redaction::default();
        assert_eq!(
            redacted(&r, "write to jo.doe+x@mail.example.com."),
            "write to ********@****************."
        );
        assert_eq!(
            redacted(&r, "a @ b, x@localhost, @home, me@x."),
            "a @ b, x@localhost, @home, me@x."
        );
        assert_eq!(redacted(&r, "<a@b.io><c@d.org>"), "<*@****><*@*****>");
    }

    #[test]
    fn masks_long_digit_runs() {
        let r = Redaction {
            keep_last: 4,
            ..Redaction::default()
        };
        assert_eq!(
            redacted(&r, "card 4111-1111-1111-1234, mail jo@example.com"),
            "card ****-****-****-1234, mail **@***********"
        );
        assert_eq!(
            redacted(
                &Redaction::default(),
                "call +1 555 123 4567 on 20240101 at 10:30"
            ),
            "call +* *** *** **** on 20240101 at 10:30"
        );
        assert_eq!(redacted(&Redaction::default(), "123456789"), "*********");
        assert_eq!(
            redacted(&Redaction::default(), "1234-5678 9"),
            "****-**** *"
        );
        assert_eq!(
            redacted(&Redaction::default(), "12345678--9"),
            "12345678--9"
        );
    }

    #[test]
    fn parameters_choose_what_is_masked() {
        let params = [("emails", "false"), ("digits", "4"), ("mask", "#")];
        let records = vec![
            Record::new("pin 1234 for a@b.co").with_key("k"),
            Record::new(b"\xff 12345".to_vec()),
        ];
        let outcome = testing::run::<WeirModule>(&params, records).unwrap();
        assert_eq!(
            outcome.records()[0],
            &Record::new("pin #### for a@b.co").with_key("k")
        );
        assert_eq!(outcome.records()[1].value, b"\xff #####");

        let error = testing::run::<WeirModule>(&[("mask", "é")], vec![]).unwrap_err();
        assert_eq!(
            error.message(),
            "parameter `mask`: must be an ASCII character"
        );
        let error = testing::run::<WeirModule>(&[("digits", "-1")], vec![]).unwrap_err();
        assert_eq!(
            error.message(),
            "parameter `digits`: cannot parse `-1`: invalid digit found in string"
        );
    }
}
