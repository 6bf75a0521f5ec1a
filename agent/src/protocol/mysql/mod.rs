//! The MySQL/MariaDB wire protocol (client/server protocol 4.1): pure code,
//! no I/O, no policy.
//!
//! - [`packet`]: framing (3-byte length, sequence id, packets split at
//!   2^24-1 bytes) with a maximum length checked before buffering;
//! - [`handshake`]: the server greeting, the client's response, the
//!   authentication scrambles (`mysql_native_password`,
//!   `caching_sha2_password` fast path and RSA full path) — packet layouts
//!   and scrambles from `mysql_common`;
//! - [`message`]: commands, OK / ERR / EOF, result-set headers and text
//!   rows;
//! - [`binary`]: the prepared-statement protocol's fields and binary rows.
//!
//! Malformed input is an error value, never a panic: the proxy answers it
//! with an ERR packet or closes the connection.

pub mod binary;
pub mod handshake;
pub mod message;
pub mod packet;
