"""What a stored click costs the writer, by the parts of its commit.

  python3 bench/clicks/cost.py DATABASE [ROUNDS]

DATABASE is a server's database after a bench run (`BENCH_KEEP=1 cargo run
--release -p bench -- --one-core --only webhooks` keeps it, under
`/tmp/orderlink-bench-*/serve/o.db`): its orders, tokens and invite clicks.
On a copy, the clicks are written again the way the click log writes them
(batches of 128, INSERTs of 16 rows, one transaction per batch, WAL), into
an `invite_clicks` made four ways: with and without its two REFERENCES
(before and after V16), each committed with `synchronous=FULL` and NORMAL
(a synced and an unsynced batch). Prints CPU seconds of this process per
click (user and system; Python's own share is the same in every variant, so
compare differences) and bytes of WAL written per click, alternating the
variants ROUNDS times (default 7), then each variant's median.
"""
import os, shutil, sqlite3, statistics, sys, tempfile, time

COLUMNS = "id, token_id, order_id, clicked_at, user_agent, is_preview"


def table(references):
    token = " REFERENCES whatsapp_tokens (id)" if references else ""
    order = " REFERENCES orders (id)" if references else ""
    return f"""
        DROP TABLE IF EXISTS invite_clicks;
        CREATE TABLE invite_clicks (
            id VARCHAR(36) NOT NULL PRIMARY KEY,
            token_id VARCHAR(36) NOT NULL{token},
            order_id VARCHAR(64) NOT NULL{order},
            clicked_at BIGINT NOT NULL,
            user_agent VARCHAR(512),
            is_preview BOOLEAN NOT NULL
        );
        CREATE INDEX invite_clicks_order ON invite_clicks (order_id);
        CREATE INDEX invite_clicks_time ON invite_clicks (clicked_at, is_preview, order_id);
    """


def run(source, clicks, references, synchronous):
    work = tempfile.mkdtemp()
    try:
        path = os.path.join(work, "c.db")
        shutil.copy(source, path)
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA foreign_keys = OFF")
        c.executescript(table(references))
        c.execute("VACUUM")
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.execute("PRAGMA wal_autocheckpoint = 0")
        c.execute("PRAGMA temp_store = MEMORY")
        c.execute(f"PRAGMA synchronous = {synchronous}")
        c.execute("PRAGMA foreign_keys = ON")
        # The writer has the parents' pages at hand: read them once first.
        c.execute("SELECT COUNT(*) FROM orders").fetchone()
        c.execute("SELECT COUNT(*) FROM whatsapp_tokens").fetchone()
        sixteen = f"INSERT INTO invite_clicks ({COLUMNS}) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * 16)
        one = f"INSERT INTO invite_clicks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        start = time.process_time()
        for b in range(0, len(clicks), 128):
            batch = clicks[b:b + 128]
            c.execute("BEGIN")
            for k in range(0, len(batch), 16):
                rows = batch[k:k + 16]
                if len(rows) == 16:
                    c.execute(sixteen, [v for r in rows for v in r])
                else:
                    for r in rows:
                        c.execute(one, r)
            c.execute("COMMIT")
        spent = time.process_time() - start
        wal = os.path.getsize(path + "-wal")
        c.close()
        return spent / len(clicks), wal / len(clicks)
    finally:
        shutil.rmtree(work)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    source = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as c:
        clicks = c.execute(f"SELECT {COLUMNS} FROM invite_clicks ORDER BY rowid").fetchall()
    if not clicks:
        sys.exit(f"{source} holds no invite clicks")
    variants = [(True, "FULL"), (False, "FULL"), (True, "NORMAL"), (False, "NORMAL")]
    print(f"{len(clicks)} clicks from {source}, CPU µs per click (this process, user + system)")
    spent = {v: [] for v in variants}
    for r in range(rounds):
        for references, synchronous in variants:
            seconds, wal = run(source, clicks, references, synchronous)
            us = seconds * 1e6
            spent[(references, synchronous)].append(us)
            print(f"  round {r + 1}: {name(references, synchronous)} {us:5.2f} µs, {wal:.0f} bytes of WAL")
    for v, values in spent.items():
        print(f"  median of {rounds}: {name(*v)} {statistics.median(values):5.2f} µs")


def name(references, synchronous):
    refs = ("with" if references else "without") + " references"
    return f"{refs:19} synchronous={synchronous:6}"


main()
