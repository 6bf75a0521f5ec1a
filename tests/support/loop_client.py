"""Load client for Warden's crash-safety test.

usage: loop_client.py HOST PORT SECONDS [SOURCE_IP]

Opens connection after connection to HOST:PORT for SECONDS, sends 16 bytes
and waits for them back. Prints the local port of every connection whose
echo came back complete (one per line, flushed at once), so the test knows
exactly which connections a client saw answered. Errors (the agent being
killed) are counted, not fatal.
"""
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
# A source address of its own (e.g. 127.0.0.2) lets the server tell a
# direct connection from Warden's, whose ports come from the same range.
source = (sys.argv[4], 0) if len(sys.argv) > 4 else None
deadline = time.monotonic() + seconds
payload = b"0123456789abcdef"
errors = 0
while time.monotonic() < deadline:
    try:
        s = socket.create_connection((host, port), timeout=5, source_address=source)
        local = s.getsockname()[1]
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            b = s.recv(64)
            if not b:
                break
            got += b
        s.close()
        if got == payload:
            print(local, flush=True)
    except OSError:
        errors += 1
        time.sleep(0.01)
print(f"errors {errors}", flush=True)
