"""psycopg2 client for Warden's PostgreSQL tests.

usage: WARDEN_PG_DSN='host=... user=... password=...' pg_client.py SQL

Connects with the libpq connection string in WARDEN_PG_DSN (kept out of argv
so the password does not show in `ps`), runs SQL, and prints one JSON object:
ok, rows (values as strings, NULL as null), columns, ssl (whether the
connection is encrypted), server_version, error (class and message).
"""
import json
import os
import sys

res = {"ok": False}
try:
    import psycopg2

    conn = psycopg2.connect(os.environ["WARDEN_PG_DSN"])
    try:
        res["ssl"] = bool(conn.info.ssl_in_use)
        res["server_version"] = conn.server_version
        with conn.cursor() as cur:
            cur.execute(sys.argv[1])
            if cur.description is not None:
                res["columns"] = [d[0] for d in cur.description]
                res["rows"] = [
                    [None if v is None else str(v) for v in row]
                    for row in cur.fetchall()
                ]
        conn.commit()
        res["ok"] = True
    finally:
        conn.close()
except Exception as e:  # reported, not raised: the test reads the JSON
    res["error"] = "%s: %s" % (type(e).__name__, str(e).strip())
print(json.dumps(res))
