//! Map key normalisation: the proxy must compute, from what `accept()` tells
//! it, byte-for-byte the keys the kernel programs wrote.
//!
//! Every address is stored in IPv6 form (IPv4 as `::ffff:a.b.c.d`), ports in
//! host byte order, padding zeroed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use warden_common::{
    ConnMeta, TARGET_FAIL_OPEN, TargetKey, TargetValue, TupleKey, is_v4_mapped, v4_mapped,
};

use crate::config::{Config, FailMode};

/// IPv6-form octets of an address; IPv4 and IPv4-mapped IPv6 give the same bytes.
pub fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`addr_bytes`]: IPv4-mapped bytes become an IPv4 address.
pub fn ip_from_bytes(bytes: [u8; 16]) -> IpAddr {
    if is_v4_mapped(&bytes) {
        IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// Key of the protected-targets map for a configured target address.
pub fn target_key(addr: SocketAddr) -> TargetKey {
    TargetKey {
        addr: addr_bytes(addr.ip()),
        port: addr.port(),
        _pad: [0; 6],
    }
}

/// Key of the original-destination map for an accepted connection: `peer` is
/// the client's address, `local` the proxy listener address it reached.
/// The kernel's target map for `config`: each target's address with its
/// index and fail mode.
pub fn target_entries(config: &Config) -> Vec<(TargetKey, TargetValue)> {
    config
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let flags = match config.fail_mode_of(t) {
                FailMode::Open => TARGET_FAIL_OPEN,
                FailMode::Closed => 0,
            };
            (
                target_key(t.address),
                TargetValue {
                    flags,
                    target_id: i as u32,
                },
            )
        })
        .collect()
}

pub fn tuple_key(peer: SocketAddr, local: SocketAddr) -> TupleKey {
    TupleKey {
        src_addr: addr_bytes(peer.ip()),
        dst_addr: addr_bytes(local.ip()),
        src_port: peer.port(),
        dst_port: local.port(),
        _pad: 0,
    }
}

/// The destination the workload asked for.
pub fn orig_dst(meta: &ConnMeta) -> SocketAddr {
    SocketAddr::new(ip_from_bytes(meta.orig_addr), meta.orig_port)
}

/// The task name the kernel recorded, up to its NUL.
pub fn comm(meta: &ConnMeta) -> String {
    let end = meta
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(meta.comm.len());
    String::from_utf8_lossy(&meta.comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_mapped_v6_give_the_same_key() {
        let v4: SocketAddr = "127.0.0.2:5432".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:5432".parse().unwrap();
        assert_eq!(target_key(v4), target_key(mapped));
        let k = target_key(v4);
        assert_eq!(
            k.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 2]
        );
        assert_eq!(k.port, 5432);
        assert_eq!(k._pad, [0; 6]);
    }

    #[test]
    fn plain_v6_is_kept() {
        let a: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        let k = target_key(a);
        assert_eq!(
            Ipv6Addr::from(k.addr),
            "2001:db8::5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip_from_bytes(k.addr), a.ip());
    }

    #[test]
    fn tuple_key_orders_client_then_proxy() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let k = tuple_key(peer, local);
        assert_eq!(k.src_port, 40000);
        assert_eq!(k.dst_port, 15001);
        assert_eq!(ip_from_bytes(k.src_addr), peer.ip());
        // A v4 client seen by a dual-stack listener as ::ffff:127.0.0.1 keys the same.
        let peer6: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(tuple_key(peer6, local), k);
    }

    #[test]
    fn meta_round_trips_and_comm_stops_at_nul() {
        let mut m = ConnMeta {
            orig_addr: addr_bytes("10.0.0.5".parse().unwrap()),
            orig_port: 5432,
            ..Default::default()
        };
        m.comm[..4].copy_from_slice(b"curl");
        assert_eq!(orig_dst(&m), "10.0.0.5:5432".parse::<SocketAddr>().unwrap());
        assert_eq!(comm(&m), "curl");
        m.comm = [b'x'; 16];
        assert_eq!(comm(&m).len(), 16);
    }
}
