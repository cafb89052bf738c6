//! Weir's error details: every error status from the broker carries a `google.rpc.ErrorInfo` in
//! its details, with domain [`ERROR_DOMAIN`], a stable machine-readable `reason` (e.g.
//! `UNKNOWN_TOPIC`, `NOT_LEADER`) and optional metadata (e.g. a leader hint).
//!
//! Clients branch on the reason, never on the human-readable message, which may change.

use std::collections::HashMap;

use tonic_types::{ErrorDetail, ErrorDetails, ErrorInfo, StatusExt};

/// The `ErrorInfo.domain` of every error Weir reports; reasons are unique only within it.
pub const ERROR_DOMAIN: &str = "weir.dev";

/// Builds a status whose details hold one `ErrorInfo` in [`ERROR_DOMAIN`] with `reason` and
/// `metadata`.
pub fn status_with_reason(
    code: tonic::Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> tonic::Status {
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    tonic::Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// Like [`status_with_reason`], plus a `google.rpc.BadRequest` with one field violation per
/// `(field, description)` pair: how a request that failed for several of its parts says which.
pub fn status_with_violations(
    code: tonic::Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (String, String)>,
    violations: impl IntoIterator<Item = (String, String)>,
) -> tonic::Status {
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    tonic::Status::with_error_details(code, message, details)
}

/// The field violations of the `google.rpc.BadRequest` in `status`'s details, as
/// `(field, description)` pairs; empty when there is none.
pub fn violations_of(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The reason of the first `ErrorInfo` in [`ERROR_DOMAIN`] in `status`'s details; `None` when
/// there is none (e.g. a status from a proxy or from tonic itself) or the details do not decode.
pub fn reason_of(status: &tonic::Status) -> Option<String> {
    weir_error_info(status).map(|info| info.reason)
}

/// The metadata value under `key` of the first `ErrorInfo` in [`ERROR_DOMAIN`] in `status`'s
/// details; `None` when there is no such `ErrorInfo` or it has no such key.
pub fn metadata_of(status: &tonic::Status, key: &str) -> Option<String> {
    weir_error_info(status).and_then(|mut info| info.metadata.remove(key))
}

/// Looks past `ErrorInfo`s of other domains, which an intermediary may have added and whose
/// reasons could collide with Weir's.
fn weir_error_info(status: &tonic::Status) -> Option<ErrorInfo> {
    status
        .get_error_details_vec()
        .into_iter()
        .find_map(|detail| match detail {
            ErrorDetail::ErrorInfo(info) if info.domain == ERROR_DOMAIN => Some(info),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn reason_and_metadata_round_trip() {
        let status = status_with_reason(
            Code::FailedPrecondition,
            "not the leader of orders/3",
            "NOT_LEADER",
            [("leader".to_owned(), "2".to_owned())],
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not the leader of orders/3");
        assert_eq!(reason_of(&status).as_deref(), Some("NOT_LEADER"));
        assert_eq!(metadata_of(&status, "leader").as_deref(), Some("2"));
        assert_eq!(metadata_of(&status, "leader_address"), None);
    }

    #[test]
    fn violations_round_trip() {
        let status = status_with_violations(
            Code::InvalidArgument,
            "2 records rejected",
            "RECORD_REJECTED",
            [],
            [
                ("records[0]".to_owned(), "v@1: no id".to_owned()),
                ("records[3]".to_owned(), "v@1: bad type".to_owned()),
            ],
        );
        assert_eq!(reason_of(&status).as_deref(), Some("RECORD_REJECTED"));
        assert_eq!(
            violations_of(&status),
            vec![
                ("records[0]".to_owned(), "v@1: no id".to_owned()),
                ("records[3]".to_owned(), "v@1: bad type".to_owned()),
            ]
        );
        assert!(violations_of(&status_with_reason(Code::NotFound, "x", "Y", [])).is_empty());
    }

    #[test]
    fn built_status_carries_an_error_info_in_the_weir_domain() {
        let status = status_with_reason(Code::NotFound, "no topic", "UNKNOWN_TOPIC", []);
        let info = status
            .get_details_error_info()
            .expect("status_with_reason always adds an ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.reason, "UNKNOWN_TOPIC");
        assert!(info.metadata.is_empty());
    }

    #[test]
    fn reason_survives_the_wire_encoding() {
        // What a client sees: the status rebuilt from its HTTP/2 headers.
        let sent = status_with_reason(
            Code::NotFound,
            "no topic",
            "UNKNOWN_TOPIC",
            [("topic".to_owned(), "orders".to_owned())],
        );
        let mut headers = tonic::codegen::http::HeaderMap::new();
        sent.add_header(&mut headers)
            .expect("an ASCII message and small details always encode");
        let received =
            tonic::Status::from_header_map(&headers).expect("the headers hold a grpc-status");
        assert_eq!(received.code(), Code::NotFound);
        assert_eq!(reason_of(&received).as_deref(), Some("UNKNOWN_TOPIC"));
        assert_eq!(metadata_of(&received, "topic").as_deref(), Some("orders"));
    }

    #[test]
    fn statuses_without_weir_details_have_no_reason() {
        let plain = tonic::Status::unavailable("connection refused");
        assert_eq!(reason_of(&plain), None);
        assert_eq!(metadata_of(&plain, "leader"), None);

        let foreign = tonic::Status::with_error_details(
            Code::Unavailable,
            "proxy overloaded",
            ErrorDetails::with_error_info(
                "NOT_LEADER",
                "proxy.example",
                HashMap::from([("leader".to_owned(), "9".to_owned())]),
            ),
        );
        assert_eq!(reason_of(&foreign), None);
        assert_eq!(metadata_of(&foreign, "leader"), None);
    }

    #[test]
    fn weir_error_info_is_found_after_a_foreign_one() {
        let status = tonic::Status::with_error_details_vec(
            Code::Unavailable,
            "not the leader",
            [
                ErrorDetail::ErrorInfo(ErrorInfo::new("OVERLOADED", "proxy.example", [])),
                ErrorDetail::ErrorInfo(ErrorInfo::new(
                    "NOT_LEADER",
                    ERROR_DOMAIN,
                    [("leader".to_owned(), "2".to_owned())],
                )),
            ],
        );
        assert_eq!(reason_of(&status).as_deref(), Some("NOT_LEADER"));
        assert_eq!(metadata_of(&status, "leader").as_deref(), Some("2"));
    }
}
