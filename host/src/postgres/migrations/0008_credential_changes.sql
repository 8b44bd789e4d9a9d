-- Writes to the vault (0003) on the change feed (0002), so every replica's cache of
-- credentials and unwrapped data keys (postgres/vault_cache.rs) drops what changed within
-- a second. Triggers rather than calls in the writing code: no writer can forget one, and
-- an operator's write by hand counts too (deleting a tenant's data_keys row to shred it
-- during an incident reaches every replica like the gateway's own shred).
--
-- Kinds and keys:
--   'credential', the tenant's storage id: one of its credentials was written or deleted;
--   'data_key',   the tenant's storage id: its data key was created or deleted (shredded);
--   'vault',      '': data keys were rewritten in bulk (a master-key rotation re-wraps
--                 them all in one statement) or a table was truncated: drop everything.
--
-- Only admin writes fire these; the request path only reads the vault, so it never
-- NOTIFYs. On Citus, where a trigger on a distributed table runs on a worker, away from
-- the coordinator's `changes`, these become calls in the writing transactions.

CREATE FUNCTION tg_vault_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM tg_changed(TG_ARGV[0], OLD.tenant_id);
    ELSE
        PERFORM tg_changed(TG_ARGV[0], NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tg_vault_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tg_changed('vault', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER credentials_changed AFTER INSERT OR UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION tg_vault_row_changed('credential');
CREATE TRIGGER credentials_truncated AFTER TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION tg_vault_rewritten();

-- Creation and shredding are one tenant each. An update is a rotation's re-wrap of every
-- tenant's key in one statement: one row says so, not one per tenant (a burst of
-- thousands would overflow the replicas' feed and make them reload everything anyway).
CREATE TRIGGER data_keys_changed AFTER INSERT OR DELETE ON data_keys
    FOR EACH ROW EXECUTE FUNCTION tg_vault_row_changed('data_key');
CREATE TRIGGER data_keys_rewritten AFTER UPDATE OR TRUNCATE ON data_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tg_vault_rewritten();
