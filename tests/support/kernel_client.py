"""Helpers for the kernel-side end-to-end tests (tests/e2e_tcp.rs).

usage:
  kernel_client.py connect HOST PORT [--bind ADDR] [--uid UID] [--v6]
      Connects (after binding ADDR as the source address when given), sends
      16 bytes, reads them back, and prints one JSON object: local_port,
      local_addr, peer, ok, error.
  kernel_client.py squat PORT ADDR... [--uid UID]
      Binds and listens on ADDR:PORT for every ADDR (with SO_REUSEADDR, so
      TIME_WAIT sockets of the agent do not stop it), prints "ready" once all listen, then one
      line "accepted ADDR" for every connection it receives. Runs until killed.
  kernel_client.py hold HOST PORT [--uid UID]
      Connects, echoes one byte, prints the local port, waits for the peer to
      close, closes, prints "closed".
  kernel_client.py nest DEPTH HOST PORT [--uid UID]
      (run inside a cgroup the caller may write to, e.g. a delegated one)
      creates DEPTH nested child cgroups below the current one, moves itself
      into the deepest, then does what `connect` does.

  kernel_client.py exec-after-connect HOST PORT PROGRAM [ARG...]
      connect() with TCP_FASTOPEN_CONNECT (the SYN leaves only at the first
      write), fork; the parent then execs PROGRAM while the child, which
      inherited the socket, waits 0.5 s, talks as `connect` does and prints
      its JSON (the parent's exec output is not captured).

  kernel_client.py flood HOST PORT N [--uid UID]
      Opens and at once resets (SO_LINGER 0) N connections; prints
      {"opened": n, "failed": m, "seconds": s}.

  kernel_client.py udp HOST PORT [--connected] [--uid UID]
      Sends one datagram (sendto, or connect then send) and waits 2 s for the
      echo: {"ok": echoed, "errno": n or null}.
  kernel_client.py mptcp HOST PORT [--uid UID]
      connect() on an IPPROTO_MPTCP stream socket, then talks as `connect`.
  kernel_client.py tfo-sendto HOST PORT [--uid UID]
      sendto(MSG_FASTOPEN) with the destination (no connect()), then reads the
      16 bytes back.
  kernel_client.py unspec-reconnect HOST1 PORT1 HOST2 PORT2 [--uid UID]
      connect() to HOST1, AF_UNSPEC disconnect, connect() the same socket to
      HOST2, talk.
  kernel_client.py long-sockaddr HOST PORT [--uid UID]
      connect() with a sockaddr_in padded to 128 bytes, talk.
  (these five print local_port, ok, errno and error)
  kernel_client.py userns-connect HOST PORT --uid UID
      As UID: unshare(CLONE_NEWUSER), print "unshared PID" and wait for a line
      on stdin (the test, as root, writes the new namespace's uid_map and
      gid_map meanwhile, as newuidmap does for a user's /etc/subuid range),
      then setresuid(0)/setresgid(0) inside and do what `connect` does
      (JSON with "kuid": the uid the kernel now sees outside).

Every mode that connects uses an IPv6 socket when HOST contains ':'.
"""
import errno
import json
import os
import socket
import sys


def drop(uid):
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def opt(args, name, conv=str):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i : i + 2]
        return conv(v)
    return None


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def talk(s, res, send=True):
    """Sends 16 bytes on the connected socket `s` (unless already sent),
    reads them back, and sets res["ok"] (and res["error"] when short)."""
    if send:
        s.sendall(b"0123456789abcdef")
    got = b""
    while len(got) < 16:
        b = s.recv(64)
        if not b:
            break
        got += b
    res["ok"] = got == b"0123456789abcdef"
    if not res["ok"]:
        res["error"] = f"short echo: {got!r}"


def connect(host, port, bind=None):
    res = {}
    try:
        s = socket.socket(family_of(host), socket.SOCK_STREAM)
        s.settimeout(10)
        if bind is not None:
            s.bind((bind, 0))
        s.connect((host, port))
        name = s.getsockname()
        res["local_addr"] = name[0]
        res["local_port"] = name[1]
        res["peer"] = list(s.getpeername()[:2])
        talk(s, res)
        s.close()
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["ok"] = False
    return res


def guarded(fn):
    """Runs fn(res) and gives res with ok, errno and error set."""
    res = {"ok": False, "errno": None}
    try:
        fn(res)
    except OSError as e:
        res["ok"] = False
        res["errno"] = e.errno
        res["error"] = f"{type(e).__name__}: {e}"
    except Exception as e:
        res["ok"] = False
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def libc_connect(s, sa):
    """connect(2) with raw sockaddr bytes."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.connect(s.fileno(), sa, len(sa)) != 0:
        n = ctypes.get_errno()
        raise OSError(n, os.strerror(n))


def attack(mode, args, connected):
    """The ways around connect() of kernel_attack.rs (see the docstring)."""
    import struct

    host, port = args[1], int(args[2])

    def udp(res):
        s = socket.socket(family_of(host), socket.SOCK_DGRAM)
        s.settimeout(2)
        if connected:
            s.connect((host, port))
            s.send(b"0123456789abcdef")
        else:
            s.sendto(b"0123456789abcdef", (host, port))
        try:
            res["ok"] = s.recv(64) == b"0123456789abcdef"
        except socket.timeout:
            res["error"] = "no echo"

    def mptcp(res):
        s = socket.socket(family_of(host), socket.SOCK_STREAM, 262)  # IPPROTO_MPTCP
        s.settimeout(10)
        s.connect((host, port))
        res["local_port"] = s.getsockname()[1]
        talk(s, res)

    def tfo(res):
        # Blocking: without a Fast Open cookie the call waits for the
        # handshake and sends the data after it.
        s = socket.socket(family_of(host), socket.SOCK_STREAM)
        s.sendto(b"0123456789abcdef", socket.MSG_FASTOPEN, (host, port))
        s.settimeout(10)
        res["local_port"] = s.getsockname()[1]
        talk(s, res, send=False)

    def unspec(res):
        s = socket.socket(family_of(host), socket.SOCK_STREAM)
        s.connect((host, port))
        libc_connect(s, struct.pack("H", socket.AF_UNSPEC) + b"\0" * 14)
        s.connect((args[3], int(args[4])))
        s.settimeout(10)
        res["local_port"] = s.getsockname()[1]
        talk(s, res)

    def long_sockaddr(res):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sa = struct.pack("H", socket.AF_INET) + struct.pack("!H", port)
        libc_connect(s, sa + socket.inet_aton(host) + b"\0" * 120)
        s.settimeout(10)
        res["local_port"] = s.getsockname()[1]
        talk(s, res)

    modes = {"udp": udp, "mptcp": mptcp, "tfo-sendto": tfo,
             "unspec-reconnect": unspec, "long-sockaddr": long_sockaddr}
    print(json.dumps(guarded(modes[mode])), flush=True)


def own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    raise RuntimeError("no cgroup2 entry")


def cgroup_mount():
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    raise RuntimeError("no cgroup2 mount")


def main():
    args = sys.argv[1:]
    uid = opt(args, "--uid", int)
    bind = opt(args, "--bind")
    connected = "--connected" in args
    if connected:
        args.remove("--connected")
    mode = args[0]
    if mode == "userns-connect":
        import ctypes

        drop(uid)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
            print(json.dumps({"ok": False, "error": f"unshare errno {ctypes.get_errno()}"}), flush=True)
            return
        print(f"unshared {os.getpid()}", flush=True)
        sys.stdin.readline()
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        res = connect(args[1], int(args[2]), bind)
        with open("/proc/self/status") as f:
            res["kuid_inside"] = [l.split()[1] for l in f if l.startswith("Uid:")][0]
        print(json.dumps(res), flush=True)
    elif mode in ("udp", "mptcp", "tfo-sendto", "unspec-reconnect", "long-sockaddr"):
        drop(uid)
        attack(mode, args, connected)
    elif mode == "connect":
        drop(uid)
        print(json.dumps(connect(args[1], int(args[2]), bind)), flush=True)
    elif mode == "squat":
        drop(uid)
        port = int(args[1])
        socks = []
        for addr in args[2:]:
            s = socket.socket(family_of(addr), socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if ":" in addr:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(64)
            socks.append(s)
        print("ready", flush=True)
        import selectors

        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                c, peer = key.fileobj.accept()
                print(f"accepted {peer[0]} {peer[1]}", flush=True)
                c.close()
    elif mode == "hold":
        drop(uid)
        s = socket.socket(family_of(args[1]), socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect((args[1], int(args[2])))
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        print(s.getsockname()[1], flush=True)
        while s.recv(64):
            pass
        s.close()
        print("closed", flush=True)
    elif mode == "nest":
        depth = int(args[1])
        mount = cgroup_mount()
        path = mount + own_cgroup()
        drop(uid)
        for i in range(depth):
            path = os.path.join(path, f"n{i}")
            os.mkdir(path)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        res = connect(args[2], int(args[3]), bind)
        res["cgroup"] = own_cgroup()
        print(json.dumps(res), flush=True)
    elif mode == "flood":
        import struct
        import time

        drop(uid)
        opened = failed = 0
        errors = {}
        t0 = time.monotonic()
        linger = struct.pack("ii", 1, 0)
        for _ in range(int(args[3])):
            s = socket.socket(family_of(args[1]), socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            try:
                s.connect((args[1], int(args[2])))
                opened += 1
            except OSError as e:
                failed += 1
                name = errno.errorcode.get(e.errno, str(e.errno))
                errors[name] = errors.get(name, 0) + 1
            s.close()
        print(json.dumps({"opened": opened, "failed": failed, "errors": errors,
                          "seconds": time.monotonic() - t0}), flush=True)
    elif mode == "exec-after-connect":
        import time

        s = socket.socket(family_of(args[1]), socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT
        s.connect((args[1], int(args[2])))
        if os.fork() == 0:
            time.sleep(0.5)
            res = {"local_port": s.getsockname()[1]}
            try:
                s.settimeout(5)
                talk(s, res)
            except Exception as e:
                res["ok"] = False
                res["error"] = f"{type(e).__name__}: {e}"
            print(json.dumps(res), flush=True)
            os._exit(0)
        s.close()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(args[3], args[3:])
    else:
        sys.exit(f"unknown mode {mode}")


main()
