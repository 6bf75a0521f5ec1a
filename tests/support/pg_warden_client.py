"""psycopg2 through Warden, for tests/e2e_pg.rs.

usage: pg_warden_client.py   (libpq settings from PG* variables; no password)

Runs, in one connection: a query, a server-side (named) cursor read in
batches, and a DELETE that Warden refuses; prints one JSON object:
rows (the query's), cursor_rows (count and first id), delete_pgcode,
delete_error, after (a query after the refusal, once rolled back), error.
"""
import json

res = {}
try:
    import psycopg2

    conn = psycopg2.connect("")
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, name FROM customers WHERE id <= %s ORDER BY id", (2,))
        res["rows"] = [[str(v) for v in row] for row in cur.fetchall()]
        conn.rollback()
        named = conn.cursor(name="warden_cursor")
        named.itersize = 100
        named.execute("SELECT g FROM generate_series(1, 1000) g")
        first = named.fetchmany(10)
        rest = named.fetchall()
        res["cursor_rows"] = len(first) + len(rest)
        res["cursor_first"] = first[0][0]
        named.close()
        conn.rollback()
        try:
            cur = conn.cursor()
            cur.execute("DELETE FROM orders WHERE id = %s", (1,))
            res["delete_pgcode"] = None
        except psycopg2.Error as e:
            res["delete_pgcode"] = e.pgcode
            res["delete_error"] = str(e).strip()
            conn.rollback()
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM orders")
        res["after"] = cur.fetchone()[0]
    finally:
        conn.close()
except Exception as e:  # reported, not raised: the test reads the JSON
    res["error"] = "%s: %s" % (type(e).__name__, str(e).strip())
print(json.dumps(res))
