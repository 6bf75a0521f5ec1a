WITH builtin AS (
  SELECT p.proname, p.proacl, p.prokind
  FROM pg_catalog.pg_proc p
  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.oid < 16384
), excluded AS (
  SELECT DISTINCT proname FROM builtin
  WHERE proacl IS NOT NULL
     OR prokind = 'p'
     OR proname LIKE ANY (ARRAY[
        '%to\_xml%', '%xmlschema%', 'ts\_rewrite', 'ts\_stat',
        'lo\_%', 'loread', 'lowrite',
        'pg\_read\_%', 'pg\_ls\_%', 'pg\_stat\_file', 'pg\_file\_%', 'pg\_logdir\_ls', 'pg\_current\_logfile',
        'set\_config',
        'pg\_advisory\_%', 'pg\_try\_advisory\_%', 'pg\_lock\_status', 'pg\_blocking\_pids',
        'pg\_safe\_snapshot\_blocking\_pids', 'pg\_isolation\_test\_session\_is\_blocked',
        'pg\_cancel\_backend', 'pg\_terminate\_backend', 'pg\_signal\_backend',
        'pg\_stat\_get\_activity', 'pg\_stat\_get\_backend\_%', 'pg\_stat\_get\_progress\_info',
        'pg\_%replication%', 'pg\_logical\_%', 'pg\_create\_%slot', 'pg\_drop\_%slot', 'pg\_copy\_%slot',
        'pg\_%backup%', 'pg\_export\_snapshot', 'pg\_import\_system\_collations', 'pg\_stat\_reset%',
        'binary\_upgrade\_%', 'pg\_truncate\_visibility\_map', 'pg\_nextoid', 'pg\_log\_backend\_memory\_contexts',
        'pg\_promote', 'pg\_reload\_conf', 'pg\_rotate\_logfile', 'pg\_switch\_wal', 'pg\_wal\_replay\_%',
        'pg\_create\_restore\_point', 'dblink%',
        -- Effects a read-only transaction still allows: index maintenance,
        -- transaction ids, the session's random seed.
        'brin\_%summarize%', 'gin\_clean\_pending\_list', 'txid\_current%',
        'pg\_current\_xact\_id%', 'setseed',
        -- Statistics of named relations (live and dead rows, scans, blocks)
        -- and tuple lookups by id: facts of tables the policy may block.
        'pg\_stat\_get\_%', 'currtid%'])
)
SELECT DISTINCT b.proname::text COLLATE "C" AS proname FROM builtin b
WHERE b.proname NOT IN (SELECT proname FROM excluded)
ORDER BY 1;
