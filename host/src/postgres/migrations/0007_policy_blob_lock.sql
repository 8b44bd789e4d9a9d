-- One lock per policy blob across replicas: every change to what holds a blob takes it
-- (an upload recording its claim, an assignment checking the blob is stored and writing
-- the tenant, a delete deciding nothing holds the blob and removing it), so a delete on
-- one replica cannot take a blob an assignment on another has just checked.
--
-- A session lock, not a transaction's: the check and the writes it guards run in several
-- transactions on other connections. The connection holding it is kept out of use until
-- the work is done, then unlocks (`pg_advisory_unlock_all`) or is closed, which also
-- releases it. The two-key form with 7 (this migration) keeps the space apart from the
-- other advisory locks; the second key is the blake3 hash's first 32 bits.
CREATE FUNCTION tg_lock_policy_blob(p_hash bytea) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_lock(7, ('x' || encode(substring(p_hash FROM 1 FOR 4), 'hex'))::bit(32)::int);
$$;
