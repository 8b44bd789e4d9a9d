-- Tenants, their tokens, and the change feed that keeps every replica's caches current.

-- One row per tenant id (its live or in-between incarnation). Looked up without a tenant
-- key from every replica's cache loader, so on Citus it is a reference table.
CREATE TABLE tenants (
    tenant_id text PRIMARY KEY,
    incarnation text NOT NULL,
    record jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens by blake3 hash: authentication looks them up by hash alone, so this is a
-- reference table too; tenant_id (the incarnation) is indexed for listing and revoking.
CREATE TABLE tokens (
    token_hash bytea PRIMARY KEY,
    tenant_id text NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX tokens_by_tenant ON tokens (tenant_id);

-- Every change a replica must see (tenant written or removed, token revoked, ...), in
-- commit order of its id. Writers insert a row and `NOTIFY tollgate_changes` in the same
-- transaction; replicas LISTEN, and poll every second as the backstop. Rows older than an
-- hour are pruned; a replica that fell further behind reloads everything. Global (a
-- coordinator table on Citus).
CREATE TABLE changes (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    key text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION tg_changed(p_kind text, p_key text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO changes (kind, key) VALUES (p_kind, p_key);
    SELECT pg_notify('tollgate_changes', p_kind);
$$;
