-- The audit chain, policy wasm and who uploaded it, shared by every replica.
--
-- Global tables (no tenant_id key) carry a COMMENT starting 'global:' saying why; every
-- other table's primary key starts with tenant_id, so Citus can distribute it by tenant.
-- blake3 values are bytea (32 bytes); times are bigint milliseconds since the Unix epoch.

-- The gateway's one audit chain. Global: every record names its predecessor's hash, so
-- appends from all tenants and replicas are serialised through audit_head (admin rate, so
-- one serialisation point is fine); on Citus it stays a coordinator-local table. Per-tenant
-- chains would shard, but then verification would be per tenant.
CREATE TABLE audit (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    unix_millis bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    -- the tenant's public id ('' for gateway-wide actions) and incarnation ('' when none)
    tenant_id text NOT NULL,
    incarnation text NOT NULL,
    -- json, not jsonb: kept exactly as written, so the record's hash recomputes from it
    -- (jsonb reorders keys and drops duplicates)
    detail json NOT NULL,
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);
COMMENT ON TABLE audit IS 'global: one blake3 chain for the whole gateway (coordinator-local on Citus)';
CREATE INDEX audit_by_tenant ON audit (tenant_id, seq);

-- The chain's last link. An append locks this one row (SELECT ... FOR UPDATE), links its
-- record to it and moves it, in one transaction; verify also checks the chain ends here,
-- so deleting records from the end is seen.
CREATE TABLE audit_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);
COMMENT ON TABLE audit_head IS 'global: the head of the one audit chain (coordinator-local on Citus)';
INSERT INTO audit_head (one, seq, hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- Uploaded policy wasm by blake3 of its bytes. Global: content-addressed, shared by every
-- tenant that uploads the same bytes (a reference table on Citus). Compiled artifacts are
-- not here: they are specific to the engine and CPU, so each replica keeps its own.
CREATE TABLE policies (
    hash bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    wasm bytea NOT NULL,
    uploaded_millis bigint NOT NULL
);
COMMENT ON TABLE policies IS 'global: policy wasm by content hash, shared by every uploader (a reference table on Citus)';

-- Each owner's claim on a blob: a tenant's storage id (its incarnation), or '#operator'.
-- The foreign key keeps a claim from outliving its blob and a blob from being removed
-- while anyone still claims it, whichever replicas race.
CREATE TABLE policy_uploads (
    tenant_id text NOT NULL,
    hash bytea NOT NULL REFERENCES policies (hash),
    bytes bigint NOT NULL CHECK (bytes >= 0),
    uploaded_millis bigint NOT NULL,
    PRIMARY KEY (tenant_id, hash)
);
-- The foreign key's check when a blob is removed.
CREATE INDEX policy_uploads_by_hash ON policy_uploads (hash);

-- Serialises one owner's upload claims across replicas, so its quota check and record are
-- one step. The two-key form keeps this lock space apart from tg_lock_tenant's one-key
-- locks (a tenant's reserves never wait for its uploads); 4 names this migration.
CREATE FUNCTION tg_lock_uploads(p_owner text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(4, hashtext(p_owner));
$$;
