"""Test client for Warden's end-to-end tests.

usage: client.py HOST PORT NBYTES [UID|-]

Connects to HOST:PORT (IPv6 socket when HOST contains ':'), optionally after
dropping to UID, sends NBYTES of deterministic pseudo-random data while
reading everything the peer sends back, half-closes, and prints one JSON
object: local_port, sent_sha, recv_sha, recv_len, ok, error.
"""
import hashlib
import json
import os
import random
import socket
import sys
import threading

host, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
uid = sys.argv[4] if len(sys.argv) > 4 else "-"
res = {}
try:
    if uid != "-":
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect((host, port))
    res["local_port"] = s.getsockname()[1]
    data = random.Random(nbytes).randbytes(nbytes)
    res["sent_sha"] = hashlib.sha256(data).hexdigest()

    def reader():
        h = hashlib.sha256()
        n = 0
        while True:
            try:
                b = s.recv(1 << 16)
            except Exception as e:  # reset by Warden, timeout
                res["read_error"] = f"{type(e).__name__}: {e}"
                break
            if not b:
                break
            h.update(b)
            n += len(b)
        res["recv_sha"] = h.hexdigest()
        res["recv_len"] = n

    t = threading.Thread(target=reader)
    t.start()
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except Exception as e:
        res["write_error"] = f"{type(e).__name__}: {e}"
    t.join()
    res["ok"] = (
        res.get("recv_len") == nbytes
        and "read_error" not in res
        and "write_error" not in res
    )
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}"
    res["ok"] = False
print(json.dumps(res))
