//! Fuzzes the MySQL connection phase as Warden reads it: the server's
//! greeting, the workload's handshake response (under the capabilities
//! Warden offers), an auth switch request and a workload's
//! `COM_CHANGE_USER`. Nothing may panic; a greeting that parses yields a
//! greeting for the workload that parses back with Warden's nonce and only
//! supported capabilities; a response that parses asks for nothing that was
//! not offered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::protocol::mysql::handshake;
use warden::protocol::mysql::message::caps;

fuzz_target!(|data: &[u8]| {
    if let Ok(server) = handshake::parse_server_hello(data) {
        let nonce = [b'n'; 20];
        let hello = handshake::server_hello_for_client(&server, &nonce);
        let back = handshake::parse_server_hello(&hello).expect("Warden's greeting parses");
        assert_eq!(back.nonce, nonce);
        assert_eq!(back.capabilities & !caps::SUPPORTED, 0);
        let _ = handshake::client_hello_for_server(&server, caps::SUPPORTED, "app", "shop", b"pw");
        let _ = handshake::change_user_for_server(&server, "app", "shop", b"pw");
    }
    if let Ok(client) = handshake::parse_client_hello(data, caps::SUPPORTED) {
        assert_eq!(client.capabilities & !caps::SUPPORTED, 0);
    }
    let _ = handshake::parse_auth_switch(data);
    let _ = handshake::change_user_database(data);
});
