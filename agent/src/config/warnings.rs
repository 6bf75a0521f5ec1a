//! Warnings about a valid configuration on this host: things that are not
//! errors in the file but weaken what Warden enforces here. `warden
//! check-config` prints them and `warden run` logs them at start.
//!
//! * A proxy port any local user can bind (at or above
//!   `net.ipv4.ip_unprivileged_port_start`): while the agent is down someone
//!   else can take it (the kernel side then refuses enrolled connections with
//!   EPERM rather than hand them over, but the agent cannot start again until
//!   the port is released).
//! * A host-local target whose server listens on the unspecified address
//!   (`0.0.0.0` / `::`): the server is then reachable through every other
//!   local address too (any of 127.0.0.0/8, the host's own addresses), and a
//!   target covers only the address it names.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Config;

const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Every warning for `config` on this host, as sentences.
pub fn host_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let start = std::fs::read_to_string(UNPRIVILEGED_PORT_START)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    out.extend(port_warnings(config, start));
    let listeners = Listener::read_all();
    out.extend(wildcard_listener_warnings(
        config,
        &listeners,
        &local_addrs(),
    ));
    out
}

/// Warnings for proxy listeners whose port an unprivileged user may bind,
/// given the host's `ip_unprivileged_port_start` (`None`: unreadable, assume
/// the kernel default of 1024).
pub fn port_warnings(config: &Config, unprivileged_start: Option<u32>) -> Vec<String> {
    let start = unprivileged_start.unwrap_or(1024);
    let mut keys = vec![("agent.listen", config.agent.listen)];
    if let Some(l6) = config.listen6_addr() {
        keys.push(("agent.listen6", l6));
    }
    keys.into_iter()
        .filter(|(_, a)| u32::from(a.port()) >= start)
        .map(|(key, a)| {
            format!(
                "{key}: port {port} can be bound by any local user \
                 (net.ipv4.ip_unprivileged_port_start = {start}); while Warden is down \
                 another user can take it, and Warden cannot start again until they \
                 let go. Choose a port below {start} (the default is {default}).",
                port = a.port(),
                default = super::model::defaults::listen().port(),
            )
        })
        .collect()
}

/// One listening TCP socket of this host's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
}

impl Listener {
    /// Listening sockets from `/proc/net/tcp` and `/proc/net/tcp6`.
    pub fn read_all() -> Vec<Listener> {
        let mut out = Vec::new();
        for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            if let Ok(text) = std::fs::read_to_string(path) {
                out.extend(parse_proc_net_tcp(&text, v6));
            }
        }
        out
    }
}

/// Parses the LISTEN rows (state 0A) of `/proc/net/tcp{,6}`.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let local = f.next()?;
            let _remote = f.next()?;
            let state = f.next()?;
            if state != "0A" {
                return None;
            }
            let (addr_hex, port_hex) = local.split_once(':')?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            let ip = if v6 {
                // Four 32-bit words, each printed in host (little-endian) order.
                if addr_hex.len() != 32 {
                    return None;
                }
                let mut bytes = [0u8; 16];
                for w in 0..4 {
                    let word = u32::from_str_radix(&addr_hex[w * 8..w * 8 + 8], 16).ok()?;
                    bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                let word = u32::from_str_radix(addr_hex, 16).ok()?;
                IpAddr::V4(Ipv4Addr::from(word.to_le_bytes()))
            };
            Some(Listener {
                addr: SocketAddr::new(ip, port),
            })
        })
        .collect()
}

/// The addresses assigned to this host's interfaces (loopback included).
fn local_addrs() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                out.insert(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                out.insert(IpAddr::V6(v6.ip()));
            }
        }
    }
    out
}

/// Warnings for host-local targets served by a listener on the unspecified
/// address: every other local address reaches the same server, uncovered.
pub fn wildcard_listener_warnings(
    config: &Config,
    listeners: &[Listener],
    local: &BTreeSet<IpAddr>,
) -> Vec<String> {
    let mut out = Vec::new();
    for t in &config.targets {
        let ip = t.address.ip().to_canonical();
        let is_local = ip.is_loopback() || local.contains(&ip);
        if !is_local {
            continue;
        }
        let exact = listeners
            .iter()
            .any(|l| l.addr.port() == t.address.port() && l.addr.ip().to_canonical() == ip);
        let wildcard = listeners.iter().find(|l| {
            l.addr.port() == t.address.port()
                && l.addr.ip().is_unspecified()
                // An IPv6-only `::` listener does not take IPv4 connections;
                // /proc does not tell, so `::` counts for both.
                && (l.addr.is_ipv6() || ip.is_ipv4())
        });
        if let (Some(w), false) = (wildcard, exact) {
            out.push(format!(
                "target {name:?} ({addr}): the server on port {port} listens on {w}, so it \
                 is also reachable through every other local address (127.0.0.0/8, ::1, \
                 this host's own addresses), which this target does not cover: a target \
                 covers only the address it names. Bind the server to {ip}, or list \
                 every local address it can be reached at as a target.",
                name = t.name,
                addr = t.address,
                port = t.address.port(),
                w = w.addr,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(src: &str) -> Config {
        Config::parse(src, Path::new("/etc/warden/warden.toml")).unwrap()
    }

    #[test]
    fn ports_an_unprivileged_user_may_bind_are_flagged() {
        let high = config("[agent]\nlisten = \"127.0.0.1:15001\"\nlisten6 = \"[::1]:15001\"\n");
        let w = port_warnings(&high, Some(1024));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("agent.listen: port 15001"), "{w:?}");
        assert!(w[1].starts_with("agent.listen6: port 15001"), "{w:?}");
        // The host may lower or raise the limit.
        assert!(port_warnings(&high, Some(20000)).is_empty());
        let low = config("[agent]\nlisten = \"127.0.0.1:900\"\n");
        assert!(port_warnings(&low, Some(1024)).is_empty());
        assert_eq!(port_warnings(&low, Some(0)).len(), 1);
        // The default is a port only root can bind.
        let default = config("");
        assert!(
            port_warnings(&default, Some(1024)).is_empty(),
            "default listen {}",
            default.agent.listen
        );
    }

    #[test]
    fn parses_listeners_of_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:1538 0200007F:D431 01 00000000:00000000 00:00000000 00000000   104        0 3 1 0000000000000000 100 0 0 10 0\n";
        let l = parse_proc_net_tcp(v4, false);
        assert_eq!(
            l.iter().map(|l| l.addr.to_string()).collect::<Vec<_>>(),
            vec!["127.0.0.1:5432", "0.0.0.0:8080"]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000\n\
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000\n";
        let l = parse_proc_net_tcp(v6, true);
        assert_eq!(
            l.iter().map(|l| l.addr.to_string()).collect::<Vec<_>>(),
            vec!["[::1]:5432", "[::]:80"]
        );
    }

    #[test]
    fn local_targets_served_on_the_unspecified_address_are_flagged() {
        let cfg = config(
            "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.1:5432\"\n\
             [[target]]\nname = \"api\"\nprotocol = \"tcp\"\naddress = \"10.9.9.9:80\"\n\
             [[target]]\nname = \"remote\"\nprotocol = \"tcp\"\naddress = \"192.0.2.1:80\"\n",
        );
        let local: BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap(), "10.9.9.9".parse().unwrap()]
            .into_iter()
            .collect();
        let l = |s: &str| Listener {
            addr: s.parse().unwrap(),
        };
        // Bound to the target's own address: nothing else reaches it.
        assert!(wildcard_listener_warnings(&cfg, &[l("127.0.0.1:5432")], &local).is_empty());
        // Bound to 0.0.0.0: 127.0.0.2:5432 reaches it as well.
        let w = wildcard_listener_warnings(&cfg, &[l("0.0.0.0:5432"), l("[::]:80")], &local);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("target \"db\"") && w[0].contains("0.0.0.0:5432"));
        assert!(w[1].contains("target \"api\""));
        // A remote target is not this host's business.
        assert!(
            wildcard_listener_warnings(&cfg, &[l("0.0.0.0:80")], &local)
                .iter()
                .all(|w| !w.contains("remote"))
        );
    }
}
