"""Opens N PostgreSQL sessions through Warden, each sending the start of a
Query that declares DECLARED bytes but sends only SENT, and holds them
(tests/e2e_lsm_budget.rs).

usage: pg_partial_frames.py HOST PORT USER DB N DECLARED SENT HOLD_SECS
Prints one JSON object: ready (sessions that reached ReadyForQuery),
refused_53200 (sessions answered with SQLSTATE 53200), other_errors, held
(sessions still open without an answer when HOLD_SECS ended).
"""
import json
import resource
import select
import socket
import struct
import sys
import time


def startup(host, port, user, db):
    s = socket.create_connection((host, port), timeout=10)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    body = struct.pack("!I", 196608) + params
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed during startup")
        buf += chunk
        # Walk complete messages looking for ReadyForQuery.
        i = 0
        while len(buf) - i >= 5:
            tag = buf[i:i + 1]
            ln = struct.unpack("!I", buf[i + 1:i + 5])[0]
            if len(buf) - i < 1 + ln:
                break
            if tag == b"Z":
                return s
            if tag == b"E":
                raise OSError("error during startup: %r" % buf[i:i + 1 + ln])
            i += 1 + ln
        buf = buf[i:]


def sqlstate(msg):
    fields = msg[5:].split(b"\0")
    for f in fields:
        if f[:1] == b"C":
            return f[1:].decode()
    return None


def main():
    host, port, user, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    n, declared, sent, hold = (int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]),
                               float(sys.argv[8]))
    # One descriptor per session: beyond select()'s 1,024, so poll() and as
    # many descriptors as the hard limit allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    out = {"ready": 0, "refused_53200": 0, "other_errors": 0, "held": 0, "failed": 0}
    for _ in range(n):
        try:
            socks.append(startup(host, port, user, db))
            out["ready"] += 1
        except OSError:
            out["failed"] += 1
    header = b"Q" + struct.pack("!I", declared)
    payload = b"SELECT '" + b"x" * max(0, sent - 9)
    for s in socks:
        try:
            s.setblocking(False)
            s.send(header)
            s.send(payload[: sent])
        except OSError:
            pass
    answered = {}
    deadline = time.time() + hold
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    while time.time() < deadline and len(answered) < len(socks):
        for fd, _ in poller.poll(200):
            s = by_fd[fd]
            poller.unregister(fd)
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            answered[s.fileno()] = data
    for s in socks:
        data = answered.get(s.fileno())
        if data is None:
            out["held"] += 1
        elif data[:1] == b"E" and sqlstate(data) == "53200":
            out["refused_53200"] += 1
        else:
            out["other_errors"] += 1
    print(json.dumps(out), flush=True)
    # Keep the held sessions open until told to stop (stdin closes).
    sys.stdin.read()


if __name__ == "__main__":
    main()
