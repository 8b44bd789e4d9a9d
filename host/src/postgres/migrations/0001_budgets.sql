-- Budgets, reservations, the ledger and its rollups, shared by every replica.
--
-- Every per-tenant table's primary key starts with tenant_id, so Citus can distribute them
-- all by it, co-located (see the README's "PostgreSQL" section). Money is bigint
-- micro-dollars; times are bigint milliseconds since the Unix epoch, as in the embedded
-- store, except lease expiries, which are the database's own clock.

-- One row per (tenant, scope, period): settled spend and what requests in flight hold.
-- scope is 'total', 'user:<end user>' or 'tag:<tag>'; period_id is the day ('2026-12-05'),
-- the month ('2026-12') or 'total', and every settlement counts in all three, so a budget
-- whose period changes reads spend that was counted all along.
CREATE TABLE budget_counters (
    tenant_id text NOT NULL,
    scope text NOT NULL,
    period_id text NOT NULL,
    spent bigint NOT NULL DEFAULT 0,
    reserved bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, scope, period_id),
    CHECK (spent >= 0 AND reserved >= 0)
) WITH (fillfactor = 50);

-- Money held for a request in flight, owned by one replica until its lease expires.
CREATE TABLE reservations (
    tenant_id text NOT NULL,
    request_id text NOT NULL,
    unix_millis bigint NOT NULL,
    period_id text NOT NULL,
    periods text[] NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    -- every scope whose counters hold the amount: 'total' and the sub-budgets
    scopes text[] NOT NULL,
    end_user text,
    tags text[] NOT NULL,
    -- the concurrency caps this request counts under ('tenant', 'token:<hash>')
    caps text[] NOT NULL DEFAULT '{}',
    replica_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX reservations_by_expiry ON reservations (expires_at);
CREATE INDEX reservations_by_replica ON reservations (replica_id);

CREATE TABLE ledger (
    tenant_id text NOT NULL,
    unix_millis bigint NOT NULL,
    request_id text NOT NULL,
    public_id text NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    cost_micro bigint NOT NULL,
    latency_ms bigint NOT NULL,
    outcome text NOT NULL,
    end_user text,
    tags text[] NOT NULL,
    policy_hash text NOT NULL,
    PRIMARY KEY (tenant_id, unix_millis, request_id)
);

-- Daily totals per dimension ('all', 'model', 'provider', 'user', 'tag'), written with
-- each settlement so usage reports read a few rows a day instead of the ledger.
CREATE TABLE rollups (
    tenant_id text NOT NULL,
    day text NOT NULL,
    dimension text NOT NULL,
    value text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cached_tokens bigint NOT NULL DEFAULT 0,
    cost_micro bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, dimension, value)
);

-- Every function that writes a tenant's counters first takes this transaction-scoped
-- lock, so one tenant's reserves and settlements serialise (they all touch its 'total'
-- rows anyway) and no two transactions can deadlock on its rows. Batches over several
-- tenants take the locks in the order of this key.
CREATE FUNCTION tg_lock_tenant(p_tenant text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext(p_tenant));
$$;

-- Holds p_amount in every (scope, period) cell if each scope's limit (NULL: none) has room
-- in p_period_id, and each concurrency cap (p_caps[i] at most p_cap_limits[i] requests
-- holding a reservation at once, over every replica) has a free slot. One round trip, one
-- transaction. Returns ok, or the refusing scope's figures for the error message (a
-- refused cap: refused_scope 'cap:<name>', spent = requests in flight, limit = the cap).
CREATE FUNCTION tg_reserve(
    p_tenant text, p_request text, p_unix_millis bigint, p_period_id text, p_periods text[],
    p_amount bigint, p_scopes text[], p_limits bigint[], p_end_user text, p_tags text[],
    p_replica text, p_lease_ms bigint, p_caps text[], p_cap_limits bigint[])
RETURNS TABLE (ok boolean, refused_scope text, spent bigint, reserved bigint, limit_micro bigint)
LANGUAGE plpgsql AS $$
DECLARE
    cell record;
    i int;
BEGIN
    PERFORM tg_lock_tenant(p_tenant);
    -- Under the tenant's lock, so the count cannot move until this commits.
    FOR i IN 1 .. coalesce(cardinality(p_caps), 0) LOOP
        SELECT count(*) INTO cell FROM reservations r WHERE r.tenant_id = p_tenant AND p_caps[i] = ANY(r.caps);
        IF cell.count >= p_cap_limits[i] THEN
            RETURN QUERY SELECT false, 'cap:' || p_caps[i], cell.count::bigint, 0::bigint, p_cap_limits[i];
            RETURN;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        IF p_limits[i] IS NOT NULL THEN
            SELECT c.spent, c.reserved INTO cell FROM budget_counters c
             WHERE c.tenant_id = p_tenant AND c.scope = p_scopes[i] AND c.period_id = p_period_id;
            IF FOUND AND cell.spent + cell.reserved + p_amount > p_limits[i] THEN
                RETURN QUERY SELECT false, p_scopes[i], cell.spent, cell.reserved, p_limits[i];
                RETURN;
            ELSIF NOT FOUND AND p_amount > p_limits[i] THEN
                RETURN QUERY SELECT false, p_scopes[i], 0::bigint, 0::bigint, p_limits[i];
                RETURN;
            END IF;
        END IF;
    END LOOP;
    INSERT INTO reservations VALUES (p_tenant, p_request, p_unix_millis, p_period_id, p_periods,
        p_amount, p_scopes, p_end_user, p_tags, coalesce(p_caps, '{}'), p_replica, now() + p_lease_ms * interval '1 millisecond');
    INSERT INTO budget_counters AS c (tenant_id, scope, period_id, reserved)
        SELECT p_tenant, s, p, p_amount FROM unnest(p_scopes) s, unnest(p_periods) p
    ON CONFLICT (tenant_id, scope, period_id) DO UPDATE SET reserved = c.reserved + EXCLUDED.reserved;
    RETURN QUERY SELECT true, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint;
END $$;

-- Replaces a reservation with its actual cost and writes the ledger record and rollups.
-- p_item: {tenant_id, request_id, spend_scopes, day, record: {ledger columns}}. Returns
-- false, changing nothing, when the reservation is gone (settled already, or charged by
-- crash recovery after its lease expired): a settlement counts once.
CREATE FUNCTION tg_settle_one(p_item jsonb, p_only_expired boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    r reservations;
    rec jsonb := p_item->'record';
    cost bigint := (rec->>'cost_microdollars')::bigint;
    spend_scopes text[] := ARRAY(SELECT jsonb_array_elements_text(p_item->'spend_scopes'));
    tags text[] := ARRAY(SELECT jsonb_array_elements_text(rec->'tags'));
BEGIN
    PERFORM tg_lock_tenant(p_item->>'tenant_id');
    DELETE FROM reservations
     WHERE tenant_id = p_item->>'tenant_id' AND request_id = p_item->>'request_id'
       AND (NOT p_only_expired OR expires_at < now())
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE budget_counters SET reserved = reserved - r.amount
     WHERE tenant_id = r.tenant_id AND scope = ANY(r.scopes) AND period_id = ANY(r.periods);
    INSERT INTO budget_counters AS c (tenant_id, scope, period_id, spent)
        SELECT r.tenant_id, s, p, cost FROM unnest(spend_scopes) s, unnest(r.periods) p
    ON CONFLICT (tenant_id, scope, period_id) DO UPDATE SET spent = c.spent + EXCLUDED.spent;
    INSERT INTO ledger VALUES (r.tenant_id, (rec->>'unix_millis')::bigint, r.request_id, rec->>'tenant_id',
        rec->>'provider', rec->>'model', (rec->>'prompt_tokens')::bigint, (rec->>'completion_tokens')::bigint,
        (rec->>'cached_tokens')::bigint, COALESCE((rec->>'cache_write_tokens')::bigint, 0), cost,
        (rec->>'latency_ms')::bigint, rec->>'outcome', rec->>'end_user', tags, rec->>'policy_hash')
    ON CONFLICT DO NOTHING;
    INSERT INTO rollups AS o (tenant_id, day, dimension, value, requests, prompt_tokens, completion_tokens, cached_tokens, cost_micro)
        SELECT r.tenant_id, p_item->>'day', d.dimension, d.value, 1, (rec->>'prompt_tokens')::bigint,
               (rec->>'completion_tokens')::bigint, (rec->>'cached_tokens')::bigint, cost
          FROM (SELECT 'all' AS dimension, '' AS value
                UNION ALL SELECT 'model', (rec->>'provider') || '/' || (rec->>'model')
                UNION ALL SELECT 'provider', rec->>'provider'
                UNION ALL SELECT 'user', rec->>'end_user' WHERE rec->>'end_user' IS NOT NULL
                UNION ALL SELECT 'tag', t FROM unnest(tags) t) d
    ON CONFLICT (tenant_id, day, dimension, value) DO UPDATE SET
        requests = o.requests + 1,
        prompt_tokens = o.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = o.completion_tokens + EXCLUDED.completion_tokens,
        cached_tokens = o.cached_tokens + EXCLUDED.cached_tokens,
        cost_micro = o.cost_micro + EXCLUDED.cost_micro;
    RETURN true;
END $$;

-- A replica's batch of settlements in one transaction (one commit, one disk sync), in
-- tenant-lock order. Returns, per item in the order given, whether it was applied.
CREATE FUNCTION tg_settle_batch(p_items jsonb) RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
    applied boolean[] := array_fill(false, ARRAY[jsonb_array_length(p_items)]);
    item record;
BEGIN
    FOR item IN SELECT value, ordinality FROM jsonb_array_elements(p_items) WITH ORDINALITY
                 ORDER BY hashtext(value->>'tenant_id'), ordinality LOOP
        applied[item.ordinality] := tg_settle_one(item.value, false);
    END LOOP;
    RETURN applied;
END $$;

-- A live replica extends the leases of the reservations it owns.
CREATE FUNCTION tg_renew_leases(p_replica text, p_lease_ms bigint) RETURNS bigint LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE reservations SET expires_at = now() + p_lease_ms * interval '1 millisecond'
         WHERE replica_id = p_replica RETURNING 1)
    SELECT count(*) FROM renewed;
$$;

-- Charges up to p_max reservations whose lease expired (their replica died or stopped
-- renewing) at their reserved amount, with a crash_recovered ledger record, exactly once
-- even with every replica sweeping at the same time. Returns how many it charged.
CREATE FUNCTION tg_recover_expired(p_max int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    r reservations;
    charged int := 0;
BEGIN
    FOR r IN SELECT * FROM reservations WHERE expires_at < now()
              ORDER BY hashtext(tenant_id), request_id LIMIT p_max LOOP
        IF tg_settle_one(jsonb_build_object(
               'tenant_id', r.tenant_id,
               'request_id', r.request_id,
               'day', to_char(to_timestamp(r.unix_millis / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
               'spend_scopes', to_jsonb(ARRAY['total']
                   || CASE WHEN r.end_user IS NULL THEN ARRAY[]::text[] ELSE ARRAY['user:' || r.end_user] END
                   || ARRAY(SELECT 'tag:' || t FROM unnest(r.tags) t)),
               'record', jsonb_build_object(
                   'tenant_id', split_part(r.tenant_id, '#', 1), 'unix_millis', r.unix_millis,
                   'provider', '', 'model', '', 'prompt_tokens', 0, 'completion_tokens', 0,
                   'cached_tokens', 0, 'cache_write_tokens', 0, 'cost_microdollars', r.amount,
                   'latency_ms', 0, 'outcome', 'crash_recovered', 'end_user', r.end_user,
                   'tags', to_jsonb(r.tags), 'policy_hash', '')), true) THEN
            charged := charged + 1;
        END IF;
    END LOOP;
    RETURN charged;
END $$;
