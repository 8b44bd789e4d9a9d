-- Deleted tenant incarnations whose late writes are still to be purged, shared by every
-- replica (on the embedded store they are `dead-tenant:` keys in the data dir's `meta`).
--
-- A delete records the incarnation here before it purges. Requests of that incarnation
-- still in flight on any replica may write after the purge, so every replica purges each
-- dead incarnation again at its start and on the schedule after its death (REPURGE_AFTER
-- in tenant_lifecycle.rs), counts the passes made in `passes`, and removes the row after
-- the last one. A replica that dies mid-schedule thus leaves no late write behind: any
-- other replica carries the schedule on. `died_at` is the database's clock, so replicas'
-- clocks need not agree.
--
-- tenant_id is the dead incarnation's storage id. Every replica reads the whole table (a
-- few rows: the tenants deleted in the last hour), but its key leads with tenant_id like
-- every per-tenant table, so Citus distributes it with the rest of the tenant's rows.
CREATE TABLE tenant_tombstones (
    tenant_id text PRIMARY KEY,
    died_at timestamptz NOT NULL DEFAULT now(),
    passes int NOT NULL DEFAULT 0 CHECK (passes >= 0)
);

-- Creations and deletions a dead replica left unfinished are found by how long their
-- tenant record has gone unchanged: `tenants.updated_at` (0002), which every write of the
-- record sets, by the database's clock.
