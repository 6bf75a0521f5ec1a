//! The in-kernel relay of `tcp` targets: the `sk_skb` stream-verdict program
//! `warden_relay_verdict` and its two sockhash maps (see `agent-ebpf`).
//!
//! A relayed pair (the accepted client socket and its upstream socket) is
//! entered in two steps. First each socket goes into `WARDEN_RELAY_PEERS`
//! under the cookie of its peer (that map has no program: entering it
//! changes nothing about the socket yet). Then each socket goes into
//! `WARDEN_RELAY_SOCKS`, the map the verdict program is attached to: from
//! then on the bytes that socket receives are redirected to the send side of
//! the socket stored under its own cookie in the peers map, which is already
//! there. Bytes that arrived before the socket entered are moved once the
//! socket's `data_ready` runs, which [`kick`] triggers at once. A bare FIN
//! is dropped by the program, never redirected (the kernel would take the
//! empty buffer for a send error on the peer socket); the agent passes the
//! half-close on itself once every byte before it was acknowledged.
//!
//! The kernel only accepts established sockets: a side that already sent its
//! FIN (or was reset) stays out, and its direction is relayed by userspace
//! (see `proxy::relay`). Sockets leave both maps when they are closed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Mutex;

use aya::maps::{MapData, MapError, SockHash};

/// Which directions of a pair the kernel relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entered {
    /// Client → upstream bytes move in the kernel.
    pub up: bool,
    /// Upstream → client bytes move in the kernel.
    pub down: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayMapError {
    #[error("reading the socket cookie: {0}")]
    Cookie(#[source] io::Error),
    #[error("entering a socket in {map}: {source}")]
    Insert {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

/// The relay's maps, once the verdict program is attached to the second.
pub struct KernelRelay {
    peers: Mutex<SockHash<MapData, u64>>,
    socks: Mutex<SockHash<MapData, u64>>,
}

impl KernelRelay {
    pub(super) fn new(peers: SockHash<MapData, u64>, socks: SockHash<MapData, u64>) -> Self {
        Self {
            peers: Mutex::new(peers),
            socks: Mutex::new(socks),
        }
    }

    /// Enters a client socket and its upstream socket. `Err`: nothing is
    /// relayed in the kernel (every entry made was removed). Otherwise the
    /// directions whose source socket the kernel accepted.
    pub fn enter(
        &self,
        client: BorrowedFd<'_>,
        upstream: BorrowedFd<'_>,
    ) -> Result<Entered, RelayMapError> {
        let c = socket_cookie(client).map_err(RelayMapError::Cookie)?;
        let u = socket_cookie(upstream).map_err(RelayMapError::Cookie)?;
        {
            let mut peers = super::lock(&self.peers);
            peers
                .insert(c, upstream.as_raw_fd(), 0)
                .map_err(|source| RelayMapError::Insert {
                    map: warden_common::maps::RELAY_PEERS,
                    source,
                })?;
            if let Err(source) = peers.insert(u, client.as_raw_fd(), 0) {
                let _ = peers.remove(&c);
                return Err(RelayMapError::Insert {
                    map: warden_common::maps::RELAY_PEERS,
                    source,
                });
            }
        }
        let mut socks = super::lock(&self.socks);
        // A socket the kernel refuses (not established any more: its peer
        // already closed or reset) keeps its direction in userspace.
        let entered = Entered {
            up: socks.insert(c, client.as_raw_fd(), 0).is_ok(),
            down: socks.insert(u, upstream.as_raw_fd(), 0).is_ok(),
        };
        drop(socks);
        if entered.up {
            kick(client);
        }
        if entered.down {
            kick(upstream);
        }
        Ok(entered)
    }
}

/// `SO_COOKIE`: the socket's cookie, the key the verdict program computes.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    socket2::SockRef::from(&fd).cookie()
}

// `SO_RCVLOWAT` (set) and the head of `struct tcp_info` up to
// `tcpi_bytes_received` (get), which nix has no option for.
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

sockopt_impl!(
    RcvLowat,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    libc::c_int
);
sockopt_impl!(
    TcpInfoHead,
    GetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_INFO,
    [u8; TCP_INFO_HEAD]
);

/// Runs the socket's `data_ready` now (setting `SO_RCVLOWAT` does, in TCP),
/// so bytes received before the socket entered the relay are redirected
/// instead of waiting for the next segment.
fn kick(fd: BorrowedFd<'_>) {
    let _ = nix::sys::socket::setsockopt(&fd, RcvLowat, &1);
}

/// A TCP socket's kernel counters (`TCP_INFO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Sequence space received in order (`tcpi_bytes_received`): data bytes
    /// plus one for a FIN received.
    pub received: u64,
    /// Sequence space the peer acknowledged (`tcpi_bytes_acked`): data
    /// bytes delivered to the peer's kernel, plus one for the SYN of a
    /// connecting socket and one once a FIN sent is acknowledged.
    pub acked: u64,
    /// `tcpi_state`.
    pub state: u8,
}

/// Offsets in the kernel's `struct tcp_info` (stable UAPI): the two byte
/// counters, and the length read (through `tcpi_bytes_received`).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
const TCP_INFO_HEAD: usize = TCPI_BYTES_RECEIVED + 8;

/// Reads `fd`'s counters.
pub fn tcp_counters(fd: impl AsFd) -> io::Result<TcpCounters> {
    let info = nix::sys::socket::getsockopt(&fd.as_fd(), TcpInfoHead)?;
    let u64_at = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info[off..off + 8]);
        u64::from_ne_bytes(b)
    };
    Ok(TcpCounters {
        received: u64_at(TCPI_BYTES_RECEIVED),
        acked: u64_at(TCPI_BYTES_ACKED),
        state: info[0],
    })
}

/// The verdict program attached to fresh relay maps, for tests that run
/// the relay in the kernel (root only). Pinned maps of the object go to a
/// directory of their own, removed on drop.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use aya::maps::SockHash;
    use aya::programs::SkSkb;
    use aya::{Ebpf, EbpfLoader};
    use warden_common::{maps, programs};

    use super::KernelRelay;

    pub(crate) struct TestRelay {
        pub(crate) relay: KernelRelay,
        _ebpf: Ebpf,
        pins: PathBuf,
    }

    impl Drop for TestRelay {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.pins);
        }
    }

    pub(crate) fn load() -> TestRelay {
        static N: AtomicU32 = AtomicU32::new(0);
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/warden-relay-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&pins).unwrap();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .load(super::super::EBPF_OBJECT)
            .unwrap();
        let peers = SockHash::try_from(ebpf.take_map(maps::RELAY_PEERS).unwrap()).unwrap();
        let socks = SockHash::try_from(ebpf.take_map(maps::RELAY_SOCKS).unwrap()).unwrap();
        let prog: &mut SkSkb = ebpf
            .program_mut(programs::RELAY_VERDICT)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().unwrap();
        prog.attach(socks.fd()).unwrap();
        TestRelay {
            relay: KernelRelay::new(peers, socks),
            _ebpf: ebpf,
            pins,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    #[test]
    fn counters_count_data_and_one_for_the_fin() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        // The connecting side's peer acknowledged its SYN.
        assert_eq!(tcp_counters(&a).unwrap().acked, 1);
        assert_eq!(tcp_counters(&b).unwrap().acked, 0);
        a.write_all(&[7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        b.read_exact(&mut got).unwrap();
        let start = std::time::Instant::now();
        while tcp_counters(&a).unwrap().acked < 100_001 && start.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(tcp_counters(&a).unwrap().acked, 100_001);
        assert_eq!(tcp_counters(&b).unwrap().received, 100_000);
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(b.read(&mut got).unwrap(), 0);
        assert_eq!(tcp_counters(&b).unwrap().received, 100_001);
        assert_ne!(socket_cookie(a.as_fd()).unwrap(), 0);
    }
}
