"""Attempts of a root workload to get out of Warden's control (tests/e2e_lsm.rs).

usage: lsm_client.py GROUP [ARG...]
Runs the attempts of GROUP and prints one JSON object: attempt -> errno
(0 when it succeeded, -1 when it could not be tried). Groups:
  bpf PIN_DIR                   bpf(): next map id, BPF_OBJ_GET of the pinned
                                enrollment map, BPF_MAP_DELETE_ELEM,
                                BPF_LINK_GET_FD_BY_ID, BPF_LINK_DETACH
  cgroup MOUNT AGENT_CG CHILD   write own pid to the root cgroup's and the
                                agent cgroup's cgroup.procs and
                                cgroup.threads; clone3(CLONE_INTO_CGROUP) into
                                the root; moving into CHILD (own subtree)
  net MARK                      SO_MARK = MARK; raw IPv4/IPv6 and packet sockets
  agent PID                     ptrace attach, /proc/PID/environ, SIGCONT
  files PATH...                 open each PATH for reading (a directory: list it)
  change DIR                    rename, link and unlink a file in DIR
  setuid UID                    setresuid(UID, UID, UID) (needs CAP_SETUID)
  markconnect HOST PORT MARK    set SO_MARK = MARK (when allowed), connect,
                                echo 16 bytes: so_mark, ok, local_port
"""
import ctypes
import ctypes.util
import errno
import json
import os
import signal
import socket
import struct
import sys

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.syscall.restype = ctypes.c_long

SYS_BPF = 321
SYS_CLONE3 = 435
BPF_MAP_DELETE_ELEM = 3
BPF_OBJ_GET = 7
BPF_MAP_GET_NEXT_ID = 12
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    return 0 if r >= 0 else ctypes.get_errno()


def attempt(f):
    try:
        r = f()
        return 0 if r is None else r
    except OSError as e:
        return e.errno


def group_bpf(pin_dir):
    out = {}
    out["map_get_next_id"] = bpf(BPF_MAP_GET_NEXT_ID, struct.pack("=II", 0, 0))
    # The pins of the running layout version (`v<LAYOUT_VERSION>`).
    layouts = sorted((d for d in os.listdir(pin_dir) if d[:1] == "v" and d[1:].isdigit()),
                     key=lambda d: int(d[1:]))
    path = ctypes.create_string_buffer(
        os.path.join(pin_dir, layouts[-1] if layouts else "v1",
                     "WARDEN_ENR_CGROUPS").encode())
    out["obj_get_enrollment_map"] = bpf(
        BPF_OBJ_GET, struct.pack("=QII", ctypes.addressof(path), 0, 0))
    key = ctypes.create_string_buffer(8)
    out["map_delete_elem"] = bpf(
        BPF_MAP_DELETE_ELEM, struct.pack("=IIQ", 0, 0, ctypes.addressof(key)))
    out["link_get_fd_by_id"] = bpf(BPF_LINK_GET_FD_BY_ID, struct.pack("=I", 1))
    out["link_detach"] = bpf(BPF_LINK_DETACH, struct.pack("=I", 0))
    return out


def write_pid(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))


def clone_into(cgroup_dir):
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    CLONE_INTO_CGROUP = 0x200000000
    args = struct.pack("=11Q", CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD,
                       0, 0, 0, 0, 0, fd)
    buf = ctypes.create_string_buffer(args, len(args))
    r = libc.syscall(SYS_CLONE3, buf, len(args))
    err = ctypes.get_errno()
    os.close(fd)
    if r == 0:
        os._exit(0)
    if r < 0:
        return err
    os.waitpid(r, 0)
    return 0


def group_cgroup(mount, agent_cg, child):
    agent_dir = os.path.join(mount, agent_cg.lstrip("/"))
    out = {}
    out["root_procs"] = attempt(lambda: write_pid(os.path.join(mount, "cgroup.procs")))
    out["root_threads"] = attempt(lambda: write_pid(os.path.join(mount, "cgroup.threads")))
    out["agent_procs"] = attempt(lambda: write_pid(os.path.join(agent_dir, "cgroup.procs")))
    out["clone_into_root"] = attempt(lambda: clone_into(mount))
    child_dir = os.path.join(mount, child.lstrip("/"))
    out["own_subtree"] = attempt(lambda: write_pid(os.path.join(child_dir, "cgroup.procs")))
    with open("/proc/self/cgroup") as f:
        out["now_in"] = f.read().strip().split("::")[-1]
    return out


def group_net(mark):
    out = {}

    def so_mark():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, 36, int(mark))
        finally:
            s.close()

    def sock(*a):
        socket.socket(*a).close()

    out["so_mark"] = attempt(so_mark)
    out["raw_tcp4"] = attempt(lambda: sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
    out["raw_tcp6"] = attempt(lambda: sock(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP))
    out["packet"] = attempt(lambda: sock(socket.AF_PACKET, socket.SOCK_RAW, 0))
    out["tcp"] = attempt(lambda: sock(socket.AF_INET, socket.SOCK_STREAM))
    return out


def group_agent(pid):
    pid = int(pid)
    out = {}
    PTRACE_ATTACH, PTRACE_DETACH = 16, 17
    r = libc.ptrace(PTRACE_ATTACH, pid, None, None)
    out["ptrace_attach"] = 0 if r == 0 else ctypes.get_errno()
    if r == 0:
        libc.ptrace(PTRACE_DETACH, pid, None, None)

    def environ():
        with open("/proc/%d/environ" % pid, "rb") as f:
            f.read(1)

    out["proc_environ"] = attempt(environ)
    out["signal"] = attempt(lambda: os.kill(pid, signal.SIGCONT))
    return out


def group_files(paths):
    out = {}
    for p in paths:
        def op(p=p):
            if os.path.isdir(p):
                os.listdir(p)
            else:
                with open(p, "rb") as f:
                    f.read(1)
        out[p] = attempt(op)
    return out


def group_change(d):
    out = {}
    target = os.path.join(d, "enrollments.json")
    if not os.path.exists(target):
        target = os.path.join(d, "audit.db")
    out["rename"] = attempt(lambda: os.rename(target, target + ".moved"))
    out["link"] = attempt(lambda: os.link(target, "/tmp/warden-lsm-link-%d" % os.getpid()))
    out["unlink"] = attempt(lambda: os.unlink(target))
    return out


def group_markconnect(host, port, mark):
    out = {}
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    out["so_mark"] = attempt(lambda: s.setsockopt(socket.SOL_SOCKET, 36, int(mark)))
    try:
        s.settimeout(5)
        s.connect((host, int(port)))
        out["local_port"] = s.getsockname()[1]
        s.sendall(b"0123456789abcdef")
        got = b""
        while len(got) < 16:
            chunk = s.recv(16 - len(got))
            if not chunk:
                break
            got += chunk
        out["ok"] = got == b"0123456789abcdef"
    except OSError as e:
        out["ok"] = False
        out["error"] = e.errno
    finally:
        s.close()
    return out


def main():
    group, args = sys.argv[1], sys.argv[2:]
    f = {
        "bpf": lambda: group_bpf(*args),
        "cgroup": lambda: group_cgroup(*args),
        "net": lambda: group_net(*args),
        "agent": lambda: group_agent(*args),
        "files": lambda: group_files(args),
        "change": lambda: group_change(*args),
        "markconnect": lambda: group_markconnect(*args),
        "setuid": lambda: {"setresuid": attempt(
            lambda: os.setresuid(int(args[0]), int(args[0]), int(args[0])))},
    }[group]
    print(json.dumps(f()))


if __name__ == "__main__":
    main()
