SELECT DISTINCT o.oprname::text COLLATE "C" AS oprname FROM pg_catalog.pg_operator o
WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oid < 16384
ORDER BY 1;
