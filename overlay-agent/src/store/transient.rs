//! Which etcd failures are worth another try on another member, and which are answers.
//!
//! etcd aborts in-flight requests on a leader change and says so only as an error; a member
//! cut off from the quorum says "no leader" (we ask with require-leader); a dead one refuses
//! the connection and a hung one never answers. Those pass with time or another member. A
//! refused password, a missing permission, a compacted revision or a certificate nobody trusts
//! do not: retrying them only delays the one line the user needs.

/// What to do after a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, on another member. `maybe_applied`: the request may have reached the leader
    /// and committed before the failure (a write must then check before it counts a failed
    /// compare as someone else's doing).
    Retry { maybe_applied: bool },
    /// The answer itself: report it.
    Fail,
}

/// The error's text with every cause below it, for matching on words that tonic and hyper
/// keep in their sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

pub fn classify(e: &etcd_client::Error) -> Verdict {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => classify_status(status.code() as i32, &chain(status)),
        E::TransportError(t) => classify_text(&chain(t)),
        E::IoError(io) => classify_text(&chain(io)),
        // Our side of a stream whose other end went away ("channel closed").
        E::WatchError(s) => classify_text(s),
        // "lease not found": the lease expired; anything else is the stream failing.
        E::LeaseKeepAliveError(s) if s.contains("not found") => Verdict::Fail,
        E::LeaseKeepAliveError(s) => classify_text(s),
        _ => Verdict::Fail,
    }
}

/// gRPC status codes (the numbers are gRPC's, the same in every language).
pub mod code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// A gRPC status by code, then by words: etcd reports most of its passing troubles as
/// Unavailable, but tonic wraps a certificate refused in the same code.
pub fn classify_status(code: i32, text: &str) -> Verdict {
    use code::*;
    if is_certificate(text) {
        return Verdict::Fail;
    }
    match code {
        UNAVAILABLE | DEADLINE_EXCEEDED | ABORTED | RESOURCE_EXHAUSTED | CANCELLED | UNKNOWN
        | INTERNAL => classify_text(text),
        // Permission denied, authentication failed (InvalidArgument in etcd), a compacted
        // revision (OutOfRange), a bad request: answers.
        _ => Verdict::Fail,
    }
}

/// By words alone: the passing troubles etcd, tonic, hyper and the kernel name.
pub fn classify_text(text: &str) -> Verdict {
    let t = text.to_ascii_lowercase();
    if is_certificate(&t) {
        return Verdict::Fail;
    }
    // Refused before anything was proposed: a write cannot have landed.
    const NOT_SENT: &[&str] = &[
        "connection refused",
        "tcp connect error",
        "no leader",
        "dns error",
        "no route to host",
        "network is unreachable",
    ];
    const TRANSIENT: &[&str] = &[
        "leader changed",
        "request timed out",
        "too many requests",
        "timed out",
        "timeout",
        "connection reset",
        "broken pipe",
        "connection closed",
        "transport error",
        "channel closed",
        "stream closed",
        "http2",
        "h2 protocol error",
        "unavailable",
        "error trying to connect",
        "connection aborted",
        "not connected",
        "operation was canceled",
        "service was not ready",
    ];
    if NOT_SENT.iter().any(|s| t.contains(s)) {
        Verdict::Retry {
            maybe_applied: false,
        }
    } else if TRANSIENT.iter().any(|s| t.contains(s)) {
        Verdict::Retry {
            maybe_applied: true,
        }
    } else {
        Verdict::Fail
    }
}

/// A TLS handshake that failed on a certificate: another try meets the same certificate.
fn is_certificate(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "unknownissuer",
        "notvalidforname",
        "unknownca",
    ]
    .iter()
    .any(|s| t.contains(s))
}

#[cfg(test)]
mod tests {
    use super::{code::*, *};

    const SENT: Verdict = Verdict::Retry {
        maybe_applied: true,
    };
    const NOT_SENT: Verdict = Verdict::Retry {
        maybe_applied: false,
    };

    #[test]
    fn etcd_passing_troubles_are_retried() {
        let cases = [
            (UNAVAILABLE, "etcdserver: leader changed", SENT),
            (UNAVAILABLE, "etcdserver: no leader", NOT_SENT),
            (UNAVAILABLE, "etcdserver: request timed out", SENT),
            (RESOURCE_EXHAUSTED, "etcdserver: too many requests", SENT),
            (
                UNAVAILABLE,
                "tcp connect error: Connection refused (os error 111)",
                NOT_SENT,
            ),
            (UNKNOWN, "transport error: connection reset", SENT),
            (
                UNAVAILABLE,
                "error trying to connect: http2 error: operation timed out",
                // A connect error, never sent; but it says "timed out" first of all: a
                // conservative "maybe" is harmless.
                SENT,
            ),
            (DEADLINE_EXCEEDED, "Timeout expired", SENT),
            (CANCELLED, "h2 protocol error: stream closed", SENT),
        ];
        for (code, text, want) in cases {
            assert_eq!(classify_status(code, text), want, "{code} {text}");
        }
    }

    #[test]
    fn answers_fail_at_once() {
        let cases = [
            (PERMISSION_DENIED, "etcdserver: permission denied"),
            (
                INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                OUT_OF_RANGE,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                INVALID_ARGUMENT,
                "etcdserver: too many operations in txn request",
            ),
            (UNAUTHENTICATED, "etcdserver: invalid auth token"),
            (
                UNAVAILABLE,
                "transport error: invalid peer certificate: UnknownIssuer",
            ),
            (UNKNOWN, "something nobody has seen before"),
        ];
        for (code, text) in cases {
            assert_eq!(classify_status(code, text), Verdict::Fail, "{code} {text}");
        }
    }

    #[test]
    fn an_expired_lease_is_an_answer_a_closed_stream_is_not() {
        let expired = etcd_client::Error::LeaseKeepAliveError("lease not found".into());
        assert_eq!(classify(&expired), Verdict::Fail);
        let closed = etcd_client::Error::LeaseKeepAliveError("channel closed".into());
        assert_eq!(classify(&closed), SENT);
        let bad = etcd_client::Error::InvalidArgs("empty endpoints".into());
        assert_eq!(classify(&bad), Verdict::Fail);
    }
}
