//! Why a connection was refused or ended early: the one typed list of the
//! machine-readable reasons written into connection events
//! (`unmapped.warden.reason`). The strings are part of the stored record
//! (`audit tail --reason`, exports, SIEM rules): a variant's string never
//! changes.

use std::fmt;

/// A machine-readable refusal or end reason of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    // The accept path (every protocol).
    /// No kernel record: the connection did not come through the redirect.
    Unredirected,
    /// The original destination is no configured target.
    UnknownTarget,
    /// The caller's enrollment is gone.
    UnknownAccount,
    /// The account has no grant on the target.
    TargetNotGranted,
    /// The executable pin does not match.
    IdentityMismatch,
    /// The identity source refused the caller (`token_expired`…): its own
    /// reason.
    Identity(&'static str),
    /// `max_connections` or `max_connections_per_account` reached.
    ConnectionLimit,
    /// The open event could not be committed.
    AuditUnavailable,
    UpstreamConnectFailed,
    /// The byte relay of a `tcp` target failed.
    RelayError,
    /// No handler for the target's protocol (fail closed).
    UnsupportedProtocol,
    // Protocol handlers.
    ProtocolError,
    StartupTimeout,
    StartupRefused,
    GrantIncomplete,
    CredentialUnusable,
    UpstreamUnsafeSettings,
    CatalogLookupFailed,
    ClientGone,
    SessionError,
    CancelUnknown,
    CancelRequest,
    NoGrant,
    TlsHandshakeFailed,
    TlsNoSni,
    ClientError,
    UpstreamError,
}

impl RefuseReason {
    /// The reason as stored in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unredirected => "unredirected",
            Self::UnknownTarget => "unknown_target",
            Self::UnknownAccount => "unknown_account",
            Self::TargetNotGranted => "target_not_granted",
            Self::IdentityMismatch => "identity_mismatch",
            Self::Identity(r) => r,
            Self::ConnectionLimit => "connection_limit",
            Self::AuditUnavailable => "audit_unavailable",
            Self::UpstreamConnectFailed => "upstream_connect_failed",
            Self::RelayError => "relay_error",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::ProtocolError => "protocol_error",
            Self::StartupTimeout => "startup_timeout",
            Self::StartupRefused => "startup_refused",
            Self::GrantIncomplete => "grant_incomplete",
            Self::CredentialUnusable => "credential_unusable",
            Self::UpstreamUnsafeSettings => "upstream_unsafe_settings",
            Self::CatalogLookupFailed => "catalog_lookup_failed",
            Self::ClientGone => "client_gone",
            Self::SessionError => "session_error",
            Self::CancelUnknown => "cancel_unknown",
            Self::CancelRequest => "cancel_request",
            Self::NoGrant => "no_grant",
            Self::TlsHandshakeFailed => "tls_handshake_failed",
            Self::TlsNoSni => "tls_no_sni",
            Self::ClientError => "client_error",
            Self::UpstreamError => "upstream_error",
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RefuseReason> for String {
    fn from(r: RefuseReason) -> String {
        r.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::RefuseReason;

    #[test]
    fn stored_strings_never_change() {
        // Events on disk and SIEM rules name these.
        for (r, s) in [
            (RefuseReason::Unredirected, "unredirected"),
            (RefuseReason::TargetNotGranted, "target_not_granted"),
            (RefuseReason::Identity("token_expired"), "token_expired"),
            (RefuseReason::CancelRequest, "cancel_request"),
            (RefuseReason::TlsNoSni, "tls_no_sni"),
            (RefuseReason::UpstreamError, "upstream_error"),
        ] {
            assert_eq!(r.as_str(), s);
            assert_eq!(String::from(r), s);
        }
    }
}
