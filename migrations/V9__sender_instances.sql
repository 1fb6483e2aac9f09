-- SPEC §13: WHATSAPP_MAX_MPS holds for all instances together. Each instance
-- sharing a PostgreSQL keeps its row here fresh (`seen_at`, every quarter
-- second) and paces at its share of the cap among the rows seen lately
-- (src/pacer.rs, src/roster.rs). A row not refreshed for a few seconds is an
-- instance that died; a stopping instance deletes its own. SQLite (one
-- instance, by its lock file) never writes here.
CREATE TABLE sender_instances (
    id VARCHAR(64) PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL
);

-- One row, upserted first in every refresh: its row lock makes refreshes of
-- the roster take turns, so two instances starting at once cannot both see
-- themselves alone and both take the whole cap. No row until the first
-- refresh (an empty table is what `copy-to` expects of a new database).
CREATE TABLE sender_roster_turn (
    id INTEGER NOT NULL PRIMARY KEY,
    turns BIGINT NOT NULL
);
