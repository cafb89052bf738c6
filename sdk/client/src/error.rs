//! [`ClientError`], the one error type of the client, and its classification: the broker's stable
//! reason, and whether retrying the same request can succeed.

use std::borrow::Cow;
use std::error::Error as _;

use weir_proto::error::{metadata_of, reason_of, violations_of};

use crate::{RejectAction, RejectedRecord};

/// Reasons that describe a passing condition of the cluster (a leader moving, a node starting or
/// stopping, a write cut short by a leader change, every module instance of a node in use, a
/// node's disk below its reserve), so the same request can succeed later; see the error table
/// of docs/api.md. Every other reason describes the request itself, whatever its status code:
/// the module reasons (`RECORD_REJECTED`, `MODULE_FAILED`, `INVALID_MODULE`,
/// `INVALID_MODULE_PARAMS`, `UNKNOWN_MODULE`, `MODULE_EXISTS`, `MODULE_IN_USE`) among them, since
/// the same records through the same modules get the same verdict.
const RETRIABLE_REASONS: &[&str] = &[
    "UNAVAILABLE",
    "NOT_LEADER",
    "OUTCOME_UNKNOWN",
    "SHUTTING_DOWN",
    "MODULE_POOL_EXHAUSTED",
    "OVERLOADED",
    "DISK_FULL",
    "REQUEST_TIMED_OUT",
];

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker address could not be understood.
    #[error("invalid broker address {addr:?}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        #[source]
        source: AddressError,
    },
    /// The client's TLS settings cannot be used.
    #[error("invalid TLS settings")]
    Tls(#[from] crate::tls::TlsError),
    /// The first connection to the broker failed (refused, unreachable, timed out, or a TLS
    /// handshake that failed: a broker certificate the CA does not vouch for, a client
    /// certificate the broker refused, plaintext against a TLS listener).
    #[error("cannot connect to broker at {addr}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The transport failure.
        #[source]
        source: tonic::transport::Error,
    },
    /// The broker, or the transport on the way to it, answered a request with an error status.
    ///
    /// Displayed as `REASON: message`, or `Code: message` when the status carries no Weir reason
    /// (it came from the transport or from a proxy), followed by the transport's causes if the
    /// client produced the status itself.
    #[error("{}", rpc_display(.reason.as_deref(), *.code, .message, .status))]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// Weir's stable, machine-readable reason (e.g. `UNKNOWN_TOPIC`), if the status has one.
        reason: Option<String>,
        /// The human-readable message; it may change between versions, so never match on it.
        message: String,
        /// The whole status, for its details and metadata.
        status: Box<tonic::Status>,
    },
    /// A request was refused before it was sent, because one of its arguments cannot be encoded.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The broker's answer lacks something the protocol promises; a broker bug or version skew.
    #[error("unexpected response from the broker: {0}")]
    UnexpectedResponse(&'static str),
    /// A record batch the broker sent does not verify (its CRC, lengths or records); it was
    /// damaged on the way, and nothing of it is returned.
    #[error("the broker sent a record batch that does not verify")]
    CorruptBatch(#[source] weir_types::BatchError),
}

/// Why a broker address was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The address is empty.
    #[error("the address is empty")]
    Empty,
    /// The address names a scheme other than `http`. TLS is a setting of the client
    /// ([`crate::ClientBuilder::tls`]), not of an address.
    #[error(
        "unsupported scheme {scheme:?}: use HOST:PORT or http://HOST:PORT (TLS is turned on with the client's TLS settings, e.g. weir --tls-ca)"
    )]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The address has no `:PORT`.
    #[error("missing :PORT (Weir listens on 7070 by default)")]
    MissingPort,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port {port:?}")]
    InvalidPort {
        /// The port as given.
        port: String,
    },
    /// The address is not a valid URI authority.
    #[error("not a valid HOST:PORT")]
    Malformed(#[source] tonic::codegen::http::uri::InvalidUri),
}

impl ClientError {
    /// Weir's machine-readable reason for a broker error (e.g. `UNKNOWN_TOPIC`, `NOT_LEADER`);
    /// `None` for errors that did not come from the broker or whose status carries no reason.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Rpc { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// The gRPC status code of an [`Rpc`](Self::Rpc) error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The records a produce chain rejected, when this is a `RECORD_REJECTED` error: the
    /// request failed because a module whose policy is
    /// [`RejectPolicy::Reject`](crate::RejectPolicy::Reject) rejected them, and nothing of it was
    /// stored. Each has its index in the request, the module (`NAME@VERSION`), the module's
    /// reason, and [`RejectAction::Reject`]. Empty for any other error.
    pub fn rejected_records(&self) -> Vec<RejectedRecord> {
        match self {
            Self::Rpc { reason, status, .. } if reason.as_deref() == Some("RECORD_REJECTED") => {
                violations_of(status)
                    .into_iter()
                    .filter_map(|(field, description)| rejected_record(&field, description))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// A value from the metadata of the broker's error details, e.g. the leader hint under
    /// `"leader"` on `NOT_LEADER`.
    pub fn metadata(&self, key: &str) -> Option<String> {
        match self {
            Self::Rpc { status, .. } => metadata_of(status, key),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again later: the broker was unreachable or
    /// unavailable, leadership is moving (`NOT_LEADER`, `UNAVAILABLE`, `OUTCOME_UNKNOWN`), the
    /// broker is stopping (`SHUTTING_DOWN`), every module instance of the broker is in use
    /// (`MODULE_POOL_EXHAUSTED`), the request timed out, or the connection broke while it was in
    /// flight. A status with a Weir reason is judged by its reason alone; one without
    /// (from the transport or a proxy) by its code.
    ///
    /// The client has already followed any `NOT_LEADER` hint it could (see the crate's "Routing"
    /// section), so a retriable error calls for a retry after a backoff, not at once.
    ///
    /// A retried produce whose first attempt timed out, lost its connection or ended in
    /// `OUTCOME_UNKNOWN` may have been stored already, so a plain retry can duplicate records;
    /// an idempotent producer's retry cannot (see [`Producer`](crate::Producer)). Errors about
    /// the request itself (`UNKNOWN_TOPIC`, `INVALID_RECORD`, ...) are not retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Rpc {
                code,
                reason,
                status,
                ..
            } => match reason {
                Some(reason) => RETRIABLE_REASONS.contains(&reason.as_str()),
                None => {
                    matches!(
                        code,
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) || is_local_transport_failure(status)
                }
            },
            Self::InvalidAddress { .. }
            | Self::Tls(_)
            | Self::InvalidArgument(_)
            | Self::UnexpectedResponse(_)
            | Self::CorruptBatch(_) => false,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc {
            code: status.code(),
            reason: reason_of(&status),
            message: status.message().to_owned(),
            status: Box::new(status),
        }
    }
}

/// The rejected record a `RECORD_REJECTED` field violation describes: field `records[INDEX]`,
/// description `NAME@VERSION: REASON`. `None` for a field about something else.
fn rejected_record(field: &str, description: String) -> Option<RejectedRecord> {
    let index = field
        .strip_prefix("records[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let (module, reason) = match description.split_once(": ") {
        Some((module, reason)) => (module.to_owned(), reason.to_owned()),
        None => (String::new(), description),
    };
    Some(RejectedRecord {
        index,
        reason,
        module,
        policy: RejectAction::Reject,
    })
}

/// A status tonic made on the client side from a transport failure while the request was in
/// flight: it carries the failure as its source, which a status received from the broker never
/// does. Its code says little: an I/O error is `Unknown`, a connection the broker closed with
/// HTTP/2 GOAWAY `ResourceExhausted` or `Unavailable`. The request may have been carried out.
fn is_local_transport_failure(status: &tonic::Status) -> bool {
    status.source().is_some()
}

/// `REASON: message` (or `Code: message`), then the causes of a locally made status, each once
/// (tonic nests transport errors whose messages repeat).
fn rpc_display(
    reason: Option<&str>,
    code: tonic::Code,
    message: &str,
    status: &tonic::Status,
) -> String {
    let label = match reason {
        Some(reason) => Cow::Borrowed(reason),
        None => Cow::Owned(format!("{code:?}")),
    };
    let mut parts = vec![format!("{label}: {message}")];
    let mut seen = vec![message.to_owned()];
    let mut cause = status.source();
    while let Some(err) = cause {
        let part = err.to_string();
        if !seen.contains(&part) {
            seen.push(part.clone());
            parts.push(part);
        }
        cause = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use weir_proto::error::status_with_reason;

    use super::*;

    fn broker_error(code: Code, reason: &str) -> ClientError {
        status_with_reason(code, "details", reason, []).into()
    }

    #[test]
    fn reason_is_read_from_the_status_details() {
        let err: ClientError = status_with_reason(
            Code::FailedPrecondition,
            "not the leader of orders/3",
            "NOT_LEADER",
            [("leader".to_owned(), "2".to_owned())],
        )
        .into();
        assert_eq!(err.reason(), Some("NOT_LEADER"));
        assert_eq!(err.code(), Some(Code::FailedPrecondition));
        assert_eq!(err.metadata("leader").as_deref(), Some("2"));
        assert_eq!(err.to_string(), "NOT_LEADER: not the leader of orders/3");
    }

    #[test]
    fn status_without_reason_displays_its_code() {
        let err = ClientError::from(tonic::Status::unavailable("connection reset"));
        assert_eq!(err.reason(), None);
        assert_eq!(err.to_string(), "Unavailable: connection reset");
    }

    #[test]
    fn passing_cluster_conditions_are_retriable() {
        assert!(broker_error(Code::FailedPrecondition, "NOT_LEADER").is_retriable());
        assert!(broker_error(Code::Unavailable, "UNAVAILABLE").is_retriable());
        assert!(broker_error(Code::Aborted, "OUTCOME_UNKNOWN").is_retriable());
        assert!(broker_error(Code::Unavailable, "SHUTTING_DOWN").is_retriable());
        assert!(broker_error(Code::ResourceExhausted, "MODULE_POOL_EXHAUSTED").is_retriable());
        assert!(ClientError::from(tonic::Status::unavailable("refused")).is_retriable());
        assert!(ClientError::from(tonic::Status::deadline_exceeded("slow")).is_retriable());
    }

    #[test]
    fn a_connection_lost_mid_request_is_retriable_and_shows_its_cause() {
        // What tonic makes of an I/O failure under a request in flight.
        let lost = tonic::Status::from_error(Box::new(std::io::Error::other(
            "connection closed before message completed",
        )));
        let err = ClientError::from(lost);
        assert_eq!(err.code(), Some(Code::Unknown));
        assert!(err.is_retriable());
        assert_eq!(
            err.to_string(),
            "Unknown: connection closed before message completed"
        );
        // An Unknown status sent by a server has no local cause: not retriable.
        assert!(!ClientError::from(tonic::Status::unknown("odd")).is_retriable());
    }

    #[test]
    fn a_connection_the_broker_closed_mid_request_is_retriable() {
        // A broker's HTTP/2 layer closes a connection with GOAWAY when too many of its streams
        // were reset (after a pause, say); tonic reports the requests in flight on it as
        // `ResourceExhausted`, with the h2 error as their source. They may have been carried
        // out: the outcome is unknown, never a refusal.
        let goaway =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM)));
        let err = ClientError::from(goaway);
        assert_eq!(err.code(), Some(Code::ResourceExhausted));
        assert_eq!(err.reason(), None);
        assert!(err.is_retriable(), "{err}");
        // The same code sent by a broker, without a Weir reason, is an answer, not retriable.
        assert!(!ClientError::from(tonic::Status::resource_exhausted("full")).is_retriable());
    }

    #[test]
    fn errors_about_the_request_are_not_retriable() {
        for (code, reason) in [
            (Code::NotFound, "UNKNOWN_TOPIC"),
            (Code::NotFound, "UNKNOWN_PARTITION"),
            (Code::InvalidArgument, "INVALID_RECORD"),
            (Code::InvalidArgument, "RECORD_TOO_LARGE"),
            (Code::OutOfRange, "OFFSET_OUT_OF_RANGE"),
            (Code::AlreadyExists, "TOPIC_ALREADY_EXISTS"),
        ] {
            assert!(!broker_error(code, reason).is_retriable(), "{reason}");
        }
        for reason in [
            "RECORD_REJECTED",
            "MODULE_FAILED",
            "INVALID_MODULE",
            "INVALID_MODULE_PARAMS",
            "UNKNOWN_MODULE",
            "MODULE_EXISTS",
            "MODULE_IN_USE",
        ] {
            // Whatever code the broker gives them, even one that is retriable without a reason.
            for code in [
                Code::InvalidArgument,
                Code::FailedPrecondition,
                Code::Unavailable,
            ] {
                assert!(
                    !broker_error(code, reason).is_retriable(),
                    "{reason} {code:?}"
                );
            }
        }
        assert!(!ClientError::from(tonic::Status::internal("bug")).is_retriable());
        assert!(!ClientError::InvalidArgument("offset".to_owned()).is_retriable());
        assert!(!ClientError::UnexpectedResponse("no topic").is_retriable());
    }

    #[test]
    fn rejected_records_are_read_from_the_bad_request_violations() {
        let err = ClientError::from(weir_proto::error::status_with_violations(
            Code::InvalidArgument,
            "2 of the request's records rejected",
            "RECORD_REJECTED",
            [],
            [
                (
                    "records[0]".to_owned(),
                    "validate@2: no id: at all".to_owned(),
                ),
                ("records[7]".to_owned(), "no module named".to_owned()),
                ("topic".to_owned(), "not a record".to_owned()),
            ],
        ));
        assert!(!err.is_retriable());
        assert_eq!(
            err.rejected_records(),
            [
                RejectedRecord {
                    index: 0,
                    reason: "no id: at all".to_owned(),
                    module: "validate@2".to_owned(),
                    policy: RejectAction::Reject,
                },
                RejectedRecord {
                    index: 7,
                    reason: "no module named".to_owned(),
                    module: String::new(),
                    policy: RejectAction::Reject,
                },
            ]
        );
        // Violations of other errors are not rejections.
        let other = ClientError::from(weir_proto::error::status_with_violations(
            Code::InvalidArgument,
            "bad",
            "INVALID_RECORD",
            [],
            [("records[0]".to_owned(), "m@1: x".to_owned())],
        ));
        assert!(other.rejected_records().is_empty());
        assert!(
            ClientError::UnexpectedResponse("x")
                .rejected_records()
                .is_empty()
        );
    }
}
