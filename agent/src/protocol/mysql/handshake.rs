//! The connection phase: the server's greeting (HandshakeV10), the
//! client's HandshakeResponse41, and the authentication exchange Warden
//! runs upstream as the grant's user. Parsing and building of the packets
//! is `mysql_common`'s; this module picks what Warden sends.

use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, ComChangeUser, ComChangeUserMoreData, HandshakePacket,
    HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;

use super::message::caps;

/// Why a connection-phase packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("the client does not speak protocol 4.1 with plugin authentication")]
    OldClient,
    #[error("the server does not speak protocol 4.1 with a 20-byte scramble")]
    OldServer,
    #[error("the client asked for {what}, which Warden did not offer")]
    NotOffered { what: &'static str },
    #[error("authentication plugin {0} is not supported")]
    Plugin(String),
    #[error("the server's RSA public key could not be used: {0}")]
    RsaKey(String),
    #[error("the server does not offer TLS, which the target's tls mode requires")]
    NoTls,
}

/// The server's greeting, as Warden needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub version: Vec<u8>,
    pub connection_id: u32,
    pub capabilities: u32,
    /// The 20-byte scramble (nonce).
    pub nonce: Vec<u8>,
    /// The plugin the server starts authentication with.
    pub plugin: Vec<u8>,
}

/// Reads the server's HandshakeV10.
pub fn parse_server_hello(p: &[u8]) -> Result<ServerHello, HandshakeError> {
    let mal = HandshakeError::Malformed {
        what: "server greeting",
    };
    if p.first() != Some(&10) {
        return Err(mal);
    }
    // The auth-plugin-data length (after the NUL-terminated version, at
    // byte 20 of the fixed part) is at most 21 on the wire; mysql_common
    // reads it as an i8 and subtracts 8, which overflows for 0x80..=0x87
    // (found by fuzzing): anything above 127 is refused here.
    let version_end = p[1..].iter().position(|&b| b == 0).ok_or(mal.clone())?;
    if p.get(1 + version_end + 1 + 20)
        .is_some_and(|&len| len > 127)
    {
        return Err(mal);
    }
    let h: HandshakePacket<'_> = ParseBuf(p).parse(()).map_err(|_| mal.clone())?;
    // Warden logs in with protocol 4.1 and a 20-byte scramble: a server
    // without them is refused (found by fuzzing: such a greeting lost
    // half of Warden's nonce on the way to the client).
    let needed = caps::PROTOCOL_41 | caps::SECURE_CONNECTION;
    if h.capabilities().bits() & needed != needed {
        return Err(HandshakeError::OldServer);
    }
    let mut nonce = h.nonce();
    // The second part is NUL-terminated on the wire by most servers.
    if nonce.len() > 20 {
        nonce.truncate(20);
    }
    Ok(ServerHello {
        version: h.server_version_ref().to_vec(),
        connection_id: h.connection_id(),
        capabilities: h.capabilities().bits(),
        nonce,
        plugin: h
            .auth_plugin_name_ref()
            .unwrap_or(b"mysql_native_password")
            .to_vec(),
    })
}

/// The greeting Warden sends the workload: the server's version and
/// connection id, Warden's own nonce, `mysql_native_password`, and only the
/// capabilities Warden supports and the server has.
pub fn server_hello_for_client(upstream: &ServerHello, nonce: &[u8; 20]) -> Vec<u8> {
    let capabilities = CapabilityFlags::from_bits_truncate(upstream.capabilities & caps::SUPPORTED);
    let h = HandshakePacket::new(
        10,
        upstream.version.clone(),
        upstream.connection_id,
        nonce[..8].try_into().unwrap_or([0; 8]),
        // The second part is NUL-terminated, as servers send it (clients
        // read at least 13 bytes).
        Some([&nonce[8..], &[0u8][..]].concat()),
        capabilities,
        // utf8mb4_general_ci
        45,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(&b"mysql_native_password"[..]),
    );
    let mut out = Vec::new();
    h.serialize(&mut out);
    out
}

/// The workload's HandshakeResponse41, as Warden needs it (its password is
/// never looked at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub capabilities: u32,
    pub user: String,
    pub database: Option<String>,
}

/// Reads the client's HandshakeResponse41; an SSLRequest (TLS was not
/// offered) or a pre-4.1 client is refused.
pub fn parse_client_hello(p: &[u8], offered: u32) -> Result<ClientHello, HandshakeError> {
    let mal = HandshakeError::Malformed {
        what: "handshake response",
    };
    let flags = p
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(mal.clone())?;
    if flags & caps::PROTOCOL_41 == 0 || flags & caps::SECURE_CONNECTION == 0 {
        return Err(HandshakeError::OldClient);
    }
    if flags & caps::SSL != 0 && offered & caps::SSL == 0 {
        return Err(HandshakeError::NotOffered { what: "TLS" });
    }
    if flags & caps::COMPRESS != 0 && offered & caps::COMPRESS == 0 {
        return Err(HandshakeError::NotOffered {
            what: "compression",
        });
    }
    // Read by hand up to the database (what Warden uses): the rest
    // (plugin name, connection attributes) is the client's business.
    let mut r = p.get(32..).ok_or(mal.clone())?;
    let user = take_nul(&mut r).ok_or(mal.clone())?;
    if flags & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
        let n = super::message::lenenc_int(&mut r).ok_or(mal.clone())?;
        let n = usize::try_from(n).map_err(|_| mal.clone())?;
        r = r.get(n..).ok_or(mal.clone())?;
    } else {
        let (&n, rest) = r.split_first().ok_or(mal.clone())?;
        r = rest.get(usize::from(n)..).ok_or(mal.clone())?;
    }
    let database = if flags & caps::CONNECT_WITH_DB != 0 {
        take_nul(&mut r).ok_or(mal)?
    } else {
        &[]
    };
    Ok(ClientHello {
        capabilities: flags & offered,
        user: String::from_utf8_lossy(user).into_owned(),
        database: (!database.is_empty()).then(|| String::from_utf8_lossy(database).into_owned()),
    })
}

/// A NUL-terminated string off the front of `r` (without the NUL).
fn take_nul<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = r.iter().position(|&b| b == 0)?;
    let (s, rest) = r.split_at(end);
    *r = &rest[1..];
    Some(s)
}

/// The scrambled password for `plugin` and `nonce`.
pub fn auth_data(plugin: &[u8], nonce: &[u8], password: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    match AuthPlugin::from_bytes(plugin) {
        AuthPlugin::MysqlNativePassword => {
            Ok(scramble_native(nonce, password).map_or_else(Vec::new, |s| s.to_vec()))
        }
        AuthPlugin::CachingSha2Password => {
            let nonce: &[u8; 20] = nonce
                .get(..20)
                .and_then(|n| n.try_into().ok())
                .ok_or(HandshakeError::Malformed { what: "scramble" })?;
            Ok(scramble_sha256(nonce, password).map_or_else(Vec::new, |s| s.to_vec()))
        }
        other => Err(HandshakeError::Plugin(
            String::from_utf8_lossy(other.as_bytes()).into_owned(),
        )),
    }
}

/// The SSLRequest Warden sends upstream before its TLS handshake: the
/// capabilities of the response that follows it, `CLIENT_SSL` among them.
/// `Err` when the server does not offer TLS (Warden then refuses the
/// session rather than log in in clear).
pub fn ssl_request(server: &ServerHello, session_caps: u32) -> Result<Vec<u8>, HandshakeError> {
    if server.capabilities & caps::SSL == 0 {
        return Err(HandshakeError::NoTls);
    }
    let capabilities = CapabilityFlags::from_bits_truncate(
        (session_caps
            | caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::SSL)
            & server.capabilities
            & (caps::SUPPORTED | caps::SSL),
    );
    let mut out = Vec::new();
    SslRequest::new(capabilities, 16 * 1024 * 1024, 45).serialize(&mut out);
    Ok(out)
}

/// The HandshakeResponse41 Warden sends upstream as the grant's user
/// (`client_caps` holds `CLIENT_SSL` after an SSLRequest).
pub fn client_hello_for_server(
    server: &ServerHello,
    client_caps: u32,
    user: &str,
    database: &str,
    password: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let data = auth_data(&server.plugin, &server.nonce, password)?;
    let capabilities = CapabilityFlags::from_bits_truncate(
        (client_caps | caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH)
            & server.capabilities
            & (caps::SUPPORTED | caps::SSL),
    );
    let r = HandshakeResponse::new(
        Some(data),
        (5, 7, 0),
        Some(user.as_bytes()),
        Some(database.as_bytes()),
        Some(AuthPlugin::from_bytes(&server.plugin)),
        capabilities,
        None,
        // The largest packet Warden accepts is enforced by Warden.
        16 * 1024 * 1024,
    );
    let mut out = Vec::new();
    r.serialize(&mut out);
    Ok(out)
}

/// The `COM_CHANGE_USER` Warden sends upstream when the workload asks
/// for one: the grant's user and database again (whatever the workload
/// named), scrambled with the server's greeting nonce.
pub fn change_user_for_server(
    server: &ServerHello,
    user: &str,
    database: &str,
    password: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let data = auth_data(&server.plugin, &server.nonce, password)?;
    let p = ComChangeUser::new()
        .with_user(Some(user.as_bytes()))
        .with_auth_plugin_data(Some(data))
        .with_database(Some(database.as_bytes()))
        .with_more_data(Some(
            // utf8mb4_general_ci, as at login.
            ComChangeUserMoreData::new(45)
                .with_auth_plugin(Some(AuthPlugin::from_bytes(&server.plugin))),
        ));
    let mut out = Vec::new();
    p.serialize(&mut out);
    Ok(out)
}

/// The database a workload's `COM_CHANGE_USER` names (`None`: none), read
/// by hand (user, auth data, database); the rest is ignored.
pub fn change_user_database(p: &[u8]) -> Result<Option<String>, HandshakeError> {
    let mal = HandshakeError::Malformed {
        what: "COM_CHANGE_USER",
    };
    let mut r = p.get(1..).ok_or(mal.clone())?;
    take_nul(&mut r).ok_or(mal.clone())?;
    let (&n, rest) = r.split_first().ok_or(mal.clone())?;
    r = rest.get(usize::from(n)..).ok_or(mal.clone())?;
    let db = take_nul(&mut r).ok_or(mal)?;
    Ok((!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned()))
}

/// The capabilities a session runs with, once both hellos are known.
pub fn session_caps(server: &ServerHello, client: &ClientHello) -> u32 {
    client.capabilities & server.capabilities & caps::SUPPORTED
}

/// A server's AuthSwitchRequest: the plugin and its nonce.
pub fn parse_auth_switch(p: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HandshakeError> {
    let r: AuthSwitchRequest<'_> =
        ParseBuf(p)
            .parse(())
            .map_err(|_| HandshakeError::Malformed {
                what: "auth switch request",
            })?;
    Ok((
        r.auth_plugin().as_bytes().to_vec(),
        r.plugin_data().to_vec(),
    ))
}

/// `caching_sha2_password` full authentication without TLS: the password
/// (NUL-terminated, XORed with the nonce) encrypted with the server's RSA
/// key.
pub fn rsa_password(password: &[u8], nonce: &[u8], pem: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut pass = password.to_vec();
    pass.push(0);
    if !nonce.is_empty() {
        for (i, b) in pass.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
    }
    mysql_common::crypto::encrypt(&pass, pem).map_err(|e| HandshakeError::RsaKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerHello {
        ServerHello {
            version: b"5.5.5-10.11.19-MariaDB".to_vec(),
            connection_id: 42,
            capabilities: caps::SUPPORTED | caps::SSL | caps::COMPRESS | caps::MULTI_STATEMENTS,
            nonce: (1..=20).collect(),
            plugin: b"mysql_native_password".to_vec(),
        }
    }

    #[test]
    fn the_greeting_for_the_client_offers_only_supported_capabilities() {
        let s = server();
        let hello = server_hello_for_client(&s, &[7; 20]);
        let back = parse_server_hello(&hello).unwrap();
        assert_eq!(back.version, s.version);
        assert_eq!(back.connection_id, 42);
        assert_eq!(back.nonce, vec![7; 20]);
        assert_eq!(back.plugin, b"mysql_native_password");
        assert_eq!(back.capabilities & (caps::SSL | caps::COMPRESS), 0);
        assert_ne!(back.capabilities & caps::MULTI_STATEMENTS, 0);
    }

    #[test]
    fn the_upstream_response_carries_the_grant_user_and_a_native_scramble() {
        let s = server();
        let p = client_hello_for_server(&s, caps::DEPRECATE_EOF, "app", "shop", b"pw").unwrap();
        let c = parse_client_hello(&p, caps::SUPPORTED).unwrap();
        assert_eq!(c.user, "app");
        assert_eq!(c.database.as_deref(), Some("shop"));
        assert_ne!(c.capabilities & caps::DEPRECATE_EOF, 0);
        let h: HandshakeResponse<'_> = ParseBuf(&p).parse(()).unwrap();
        assert_eq!(
            h.scramble_buf(),
            scramble_native(&s.nonce, b"pw").unwrap().as_slice()
        );
        let sha = auth_data(b"caching_sha2_password", &s.nonce, b"pw").unwrap();
        assert_eq!(sha.len(), 32);
        assert!(matches!(
            auth_data(b"dialog", &s.nonce, b"pw"),
            Err(HandshakeError::Plugin(_))
        ));
    }

    #[test]
    fn change_user_carries_the_grant_and_the_workload_database_is_read() {
        let s = server();
        let p = change_user_for_server(&s, "app", "shop", b"pw").unwrap();
        assert_eq!(p[0], 0x11);
        assert_eq!(change_user_database(&p).unwrap().as_deref(), Some("shop"));
        let cu: ComChangeUser<'_> = ParseBuf(&p)
            .parse(CapabilityFlags::CLIENT_PLUGIN_AUTH)
            .unwrap();
        assert_eq!(
            cu,
            ComChangeUser::new()
                .with_user(Some(&b"app"[..]))
                .with_auth_plugin_data(Some(scramble_native(&s.nonce, b"pw").unwrap().to_vec()))
                .with_database(Some(&b"shop"[..]))
                .with_more_data(Some(
                    ComChangeUserMoreData::new(45)
                        .with_auth_plugin(Some(AuthPlugin::MysqlNativePassword))
                ))
        );
        for cut in 0..p.len() {
            let _ = change_user_database(&p[..cut]);
        }
        assert!(change_user_database(&[0x11, b'x']).is_err());
    }

    #[test]
    fn the_ssl_request_asks_for_tls_only_of_a_server_that_offers_it() {
        let s = server();
        let r = ssl_request(&s, caps::DEPRECATE_EOF).unwrap();
        assert_eq!(r.len(), 32);
        let flags = u32::from_le_bytes(r[..4].try_into().unwrap());
        assert_ne!(flags & caps::SSL, 0);
        assert_ne!(flags & caps::DEPRECATE_EOF, 0);
        assert_eq!(flags & caps::COMPRESS, 0);
        let resp = client_hello_for_server(&s, caps::SSL, "app", "shop", b"pw").unwrap();
        let flags = u32::from_le_bytes(resp[..4].try_into().unwrap());
        assert_ne!(flags & caps::SSL, 0, "the response repeats CLIENT_SSL");
        let plain = ServerHello {
            capabilities: caps::SUPPORTED,
            ..server()
        };
        assert_eq!(ssl_request(&plain, 0), Err(HandshakeError::NoTls));
    }

    #[test]
    fn tls_and_compression_requests_are_refused_when_not_offered() {
        let mut p = client_hello_for_server(&server(), 0, "u", "d", b"").unwrap();
        let ssl = (u32::from_le_bytes(p[..4].try_into().unwrap()) | caps::SSL).to_le_bytes();
        p[..4].copy_from_slice(&ssl);
        assert_eq!(
            parse_client_hello(&p, caps::SUPPORTED),
            Err(HandshakeError::NotOffered { what: "TLS" })
        );
        assert_eq!(
            parse_client_hello(&[0, 0, 0, 0], caps::SUPPORTED),
            Err(HandshakeError::OldClient)
        );
    }

    #[test]
    fn truncated_or_garbage_connection_packets_are_errors_not_panics() {
        let hello = server_hello_for_client(&server(), &[1; 20]);
        let resp = client_hello_for_server(&server(), 0, "app", "shop", b"pw").unwrap();
        for cut in 0..hello.len() {
            let _ = parse_server_hello(&hello[..cut]);
        }
        for cut in 0..resp.len() {
            let _ = parse_client_hello(&resp[..cut], caps::SUPPORTED);
        }
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..200usize {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_server_hello(&junk);
            let _ = parse_client_hello(&junk, caps::SUPPORTED);
            let _ = parse_auth_switch(&junk);
        }
        assert!(parse_server_hello(&[]).is_err());
        // fuzz/regressions/mysql_handshake/old-server
        let old = ServerHello {
            capabilities: caps::SUPPORTED & !caps::SECURE_CONNECTION,
            ..server()
        };
        let hello = server_hello_for_client(&old, &[1; 20]);
        assert_eq!(parse_server_hello(&hello), Err(HandshakeError::OldServer));
    }

    /// fuzz/regressions/mysql_handshake/plugin-data-len-overflow: an
    /// auth-plugin-data length of 0x81 overflowed mysql_common's i8
    /// arithmetic (a panic with overflow checks); it is malformed.
    #[test]
    fn an_auth_plugin_data_length_above_127_is_malformed() {
        let input =
            include_bytes!("../../../../fuzz/regressions/mysql_handshake/plugin-data-len-overflow");
        assert!(matches!(
            parse_server_hello(input),
            Err(HandshakeError::Malformed { .. })
        ));
    }
}
