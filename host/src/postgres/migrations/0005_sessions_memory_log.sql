-- Policy memory, conversation sessions and the policy log, shared by every replica.
--
-- Every table's primary key starts with tenant_id (the tenant's storage id: its
-- incarnation), so Citus can distribute them all by it, co-located with the budgets.
-- Times are bigint milliseconds since the Unix epoch, as in the embedded store. Text a
-- client or a policy wrote (turn contents, log messages, memory keys) is bytea: PostgreSQL
-- text cannot hold a NUL character, which a JSON string or a policy's string can.

-- A policy's key-value memory. Keys are compared and ordered byte by byte, as in the
-- embedded store.
CREATE TABLE memory (
    tenant_id text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- The memory quota's counter: bytes of memory keys plus values, plus the session turns
-- (each counted as the embedded store counts its record). Every quota-counted write of a
-- tenant locks this row first (tg_memory_lock), so one tenant's writes serialise here from
-- every replica and read the sizes they replace under the lock.
CREATE TABLE memory_usage (
    tenant_id text PRIMARY KEY,
    used_bytes bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0)
);

-- Conversation turns. seq is an identity, not the last number plus one: two replicas
-- appending to one session cannot collide. bytes is what the turn was charged to the
-- quota, given back when its session is deleted.
CREATE TABLE session_turns (
    tenant_id text NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    role text NOT NULL,
    content bytea NOT NULL,
    unix_millis bigint NOT NULL,
    request_id text NOT NULL,
    bytes bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (tenant_id, session_id, seq)
);

-- Each tenant's newest policy log lines, trimmed to the number kept on every append.
CREATE TABLE policy_log (
    tenant_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    unix_millis bigint NOT NULL,
    level text NOT NULL,
    message bytea NOT NULL,
    request_id text NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- Locks the tenant's usage row for the rest of the transaction, creating it on first use.
CREATE FUNCTION tg_memory_lock(p_tenant text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM memory_usage WHERE tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO memory_usage (tenant_id) VALUES (p_tenant) ON CONFLICT (tenant_id) DO NOTHING;
        PERFORM 1 FROM memory_usage WHERE tenant_id = p_tenant FOR UPDATE;
    END IF;
END $$;

-- Writes p_value under p_key (deletes it when p_value is NULL) if the tenant's total stays
-- within p_quota bytes, or shrinks. Returns false, changing nothing, if it would not. One
-- round trip, one transaction: the usage row is locked, the size replaced is read under
-- that lock, then one conditional update of the usage row and the upsert.
CREATE FUNCTION tg_memory_put(p_tenant text, p_key bytea, p_value bytea, p_quota bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_old bigint;
    v_new bigint := CASE WHEN p_value IS NULL THEN 0 ELSE octet_length(p_key) + octet_length(p_value) END;
BEGIN
    PERFORM tg_memory_lock(p_tenant);
    SELECT octet_length(m.key) + octet_length(m.value) INTO v_old FROM memory m WHERE m.tenant_id = p_tenant AND m.key = p_key;
    v_old := coalesce(v_old, 0);
    UPDATE memory_usage u SET used_bytes = greatest(u.used_bytes - v_old, 0) + v_new
     WHERE u.tenant_id = p_tenant AND (v_new <= v_old OR greatest(u.used_bytes - v_old, 0) + v_new <= p_quota);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_value IS NULL THEN
        DELETE FROM memory m WHERE m.tenant_id = p_tenant AND m.key = p_key;
    ELSE
        INSERT INTO memory (tenant_id, key, value) VALUES (p_tenant, p_key, p_value)
            ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value;
    END IF;
    RETURN true;
END $$;

-- Appends turns to a session, all or none, if the tenant's total stays within p_quota.
-- Returns false, changing nothing, if it would not. The usage row is locked before the
-- turns are numbered, so one append's turns take consecutive numbers in their session.
CREATE FUNCTION tg_session_append(
    p_tenant text, p_session text, p_roles text[], p_contents bytea[], p_millis bigint[],
    p_request_ids text[], p_bytes bigint[], p_quota bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_added bigint := (SELECT coalesce(sum(b), 0) FROM unnest(p_bytes) AS b);
BEGIN
    PERFORM tg_memory_lock(p_tenant);
    UPDATE memory_usage u SET used_bytes = u.used_bytes + v_added
     WHERE u.tenant_id = p_tenant AND u.used_bytes + v_added <= p_quota;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_roles), 0) LOOP
        INSERT INTO session_turns (tenant_id, session_id, role, content, unix_millis, request_id, bytes)
            VALUES (p_tenant, p_session, p_roles[i], p_contents[i], p_millis[i], p_request_ids[i], p_bytes[i]);
    END LOOP;
    RETURN true;
END $$;

-- Deletes a session and gives its bytes back to the quota. Returns the turns deleted.
CREATE FUNCTION tg_session_delete(p_tenant text, p_session text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_turns bigint;
    v_bytes bigint;
BEGIN
    PERFORM tg_memory_lock(p_tenant);
    WITH gone AS (DELETE FROM session_turns s WHERE s.tenant_id = p_tenant AND s.session_id = p_session RETURNING s.bytes)
    SELECT count(*), coalesce(sum(gone.bytes), 0) INTO v_turns, v_bytes FROM gone;
    UPDATE memory_usage u SET used_bytes = greatest(u.used_bytes - v_bytes, 0) WHERE u.tenant_id = p_tenant;
    RETURN v_turns;
END $$;

-- Appends one batch of policy log lines (any tenants; each tenant's in the order given),
-- then trims each tenant's log to its newest p_keeps lines (the smallest given for it).
-- Each tenant's log lock (an advisory lock in its own key space, 'plog') is taken in
-- tenant order before anything is written: concurrent appends from several replicas
-- leave no log longer than it keeps, and cannot deadlock.
CREATE FUNCTION tg_log_append(
    p_tenants text[], p_keeps int[], p_millis bigint[], p_levels text[], p_messages bytea[], p_request_ids text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_tenant text;
    v_keep int;
BEGIN
    FOR v_tenant IN SELECT DISTINCT t COLLATE "C" FROM unnest(p_tenants) AS t ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1886154599, hashtext(v_tenant));
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_tenants), 0) LOOP
        INSERT INTO policy_log (tenant_id, unix_millis, level, message, request_id)
            VALUES (p_tenants[i], p_millis[i], p_levels[i], p_messages[i], p_request_ids[i]);
    END LOOP;
    FOR v_tenant, v_keep IN SELECT t, min(k) FROM unnest(p_tenants, p_keeps) AS x(t, k) GROUP BY t LOOP
        DELETE FROM policy_log l WHERE l.tenant_id = v_tenant AND l.seq <= (
            SELECT o.seq FROM policy_log o WHERE o.tenant_id = v_tenant ORDER BY o.seq DESC OFFSET v_keep LIMIT 1);
    END LOOP;
END $$;
