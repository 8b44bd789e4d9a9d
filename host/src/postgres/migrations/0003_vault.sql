-- Credentials and the data keys that seal them (the vault), shared by every replica.
--
-- The database only ever holds ciphertext. Each tenant's data key is wrapped by the
-- gateway's master key, which stays in the replicas (TOLLGATE_MASTER_KEY); each credential
-- is sealed under its tenant's data key. Both are XChaCha20-Poly1305, stored as
-- nonce (24 bytes) || ciphertext, with associated data binding the tenant's storage id,
-- the credential's name and the key version, exactly as in the embedded store: bytes
-- copied to another row fail to open.

-- One wrapped data key per tenant (storage id). Deleting the row shreds every credential
-- of the tenant.
CREATE TABLE data_keys (
    tenant_id text PRIMARY KEY,
    sealed bytea NOT NULL,
    -- the master-key version the key was wrapped at (bound into its associated data)
    key_version int NOT NULL
);

-- Sealed credentials, by name. provider and created_at are public metadata.
CREATE TABLE credentials (
    tenant_id text NOT NULL,
    name text NOT NULL,
    provider text NOT NULL,
    sealed bytea NOT NULL,
    -- the credential format version bound into its associated data
    key_version int NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Global, not per tenant: one row for the whole gateway (a Citus reference table). The
-- master-key version, and a check value sealed under the current master key so a replica
-- given another key is refused at start even before any data key exists. Its row lock
-- orders data-key creation (FOR SHARE) against a rotation's re-wrap (FOR UPDATE), so every
-- data key is wrapped under the one master key the check names.
CREATE TABLE vault_meta (
    one bool PRIMARY KEY DEFAULT true CHECK (one),
    master_version int NOT NULL,
    -- NULL until the first replica starts
    master_check bytea
);
INSERT INTO vault_meta (master_version) VALUES (1);
