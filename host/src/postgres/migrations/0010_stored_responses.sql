-- Stored Responses API answers (`POST /v1/responses` with `store` not false), so a later
-- request can continue the conversation with `previous_response_id`.
--
-- Keyed by tenant_id first (the tenant's storage id: its incarnation), like the sessions,
-- so one tenant can never name another's response and Citus can co-locate them. Each row
-- holds only what that response added (its input and output as chat messages, JSON in
-- bytea: a JSON string may hold a NUL character) and the id it continued; a conversation
-- is read by following previous_id. bytes is what the row was charged to the tenant's
-- memory quota (memory_usage), counted as the embedded store counts its record.
CREATE TABLE stored_responses (
    tenant_id text NOT NULL,
    response_id text COLLATE "C" NOT NULL,
    previous_id text COLLATE "C",
    messages bytea NOT NULL,
    unix_millis bigint NOT NULL,
    bytes bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (tenant_id, response_id)
);

-- Stores one response if the tenant's total stays within p_quota. Returns false, changing
-- nothing, if it would not (or the id is already stored). The usage row is locked first,
-- as for session appends, so quota checks of one tenant serialise across replicas.
CREATE FUNCTION tg_response_put(
    p_tenant text, p_id text, p_previous text, p_messages bytea, p_millis bigint, p_bytes bigint, p_quota bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tg_memory_lock(p_tenant);
    IF EXISTS (SELECT 1 FROM stored_responses r WHERE r.tenant_id = p_tenant AND r.response_id = p_id) THEN
        RETURN false;
    END IF;
    UPDATE memory_usage u SET used_bytes = u.used_bytes + p_bytes
     WHERE u.tenant_id = p_tenant AND u.used_bytes + p_bytes <= p_quota;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO stored_responses (tenant_id, response_id, previous_id, messages, unix_millis, bytes)
        VALUES (p_tenant, p_id, p_previous, p_messages, p_millis, p_bytes);
    RETURN true;
END $$;

-- Deletes one stored response and gives its bytes back to the quota. Returns whether it
-- was stored.
CREATE FUNCTION tg_response_delete(p_tenant text, p_id text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_bytes bigint;
BEGIN
    PERFORM tg_memory_lock(p_tenant);
    DELETE FROM stored_responses r WHERE r.tenant_id = p_tenant AND r.response_id = p_id RETURNING r.bytes INTO v_bytes;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE memory_usage u SET used_bytes = greatest(u.used_bytes - v_bytes, 0) WHERE u.tenant_id = p_tenant;
    RETURN true;
END $$;
