//! Wire-protocol codecs for the protocols the proxy understands: bytes in,
//! typed messages out, and back. Pure code: no I/O, no policy.

pub mod http;
pub mod mysql;
pub mod postgres;
