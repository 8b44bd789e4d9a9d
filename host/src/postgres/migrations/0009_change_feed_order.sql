-- The change feed in commit-safe order. A row's id is taken when it is inserted, but
-- writers commit in any order: a reader that had moved past id 101 never saw 100 when its
-- writer committed later, and that replica kept a stale cache (a live tenant refused, a
-- revoked token served) until it restarted. Each row now carries its writing
-- transaction's id; readers take only rows of transactions older than every one still
-- running (`pg_snapshot_xmin`), in (tx, id) order, so nothing can commit behind their
-- position. Existing rows get this migration's transaction id, which is older than any
-- transaction after it.
ALTER TABLE changes ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX changes_in_feed_order ON changes (tx, id);
