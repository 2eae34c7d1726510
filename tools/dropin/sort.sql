-- tools/dropin/sort.sql: sqlite3 with sort worker threads (PRAGMA threads)
-- and a small page cache, so that CREATE INDEX and ORDER BY sort in
-- several threads that merge through files.  Run by tools/check-dropin.sh
-- plain and under the drop-in pthread layer; the output depends on no timing.
PRAGMA threads = 4;
PRAGMA cache_size = -512;
CREATE TEMP TABLE t(k INTEGER, v TEXT);
WITH RECURSIVE g(i, x) AS (
    SELECT 1, 12345
    UNION ALL
    SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM g WHERE i < 200000
)
INSERT INTO t SELECT x, printf('%08x-%d', x, i) FROM g;
CREATE INDEX t_k ON t(k);
SELECT count(*), sum(k) % 1000000007, min(v), max(v) FROM t;
SELECT k, v FROM t ORDER BY k LIMIT 3 OFFSET 100000;
SELECT v FROM t ORDER BY v DESC LIMIT 3;
SELECT count(*) FROM (SELECT k FROM t GROUP BY k % 1000 HAVING count(*) > 190);
