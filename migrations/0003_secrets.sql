-- Secret vault: per-tenant data keys wrapped by master keys, versioned encrypted values.
-- Applied with search_path set to the patchbay schema; names are unqualified on purpose.

-- One data key per tenant, wrapped by the master key named in master_key_id. Deleting the
-- row crypto-shreds the tenant: the cascade removes its ciphertexts, and any copy of them
-- (a backup, a dump) can no longer be decrypted without this key.
create table data_key (
    tenant         text primary key,
    master_key_id  text not null,
    wrapped_key    bytea not null,
    created_at     timestamptz not null default now(),
    rewrapped_at   timestamptz
);

-- Rotation looks for the data keys not yet wrapped by the newest master key.
create index data_key_master_key_idx on data_key (master_key_id, tenant);

-- A non-secret fingerprint of each master key id's material, recorded the first time the id
-- wraps anything, so reusing an id for other key material is refused instead of silently
-- mixing keys.
create table master_key (
    id             text primary key,
    fingerprint    bytea not null,
    first_used_at  timestamptz not null default now()
);

-- A secret and its version counter; a secret cannot exist without its tenant's data key.
create table secret (
    tenant          text not null references data_key (tenant) on delete cascade,
    name            text not null,
    last_version    integer not null check (last_version > 0),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (tenant, name)
);

-- Each version's ciphertext: format byte, nonce, AES-256-GCM ciphertext and tag, with the
-- tenant, name and version as associated data (so a copy to another row does not decrypt).
create table secret_version (
    tenant      text not null,
    name        text not null,
    version     integer not null check (version > 0),
    ciphertext  bytea not null,
    created_at  timestamptz not null default now(),
    primary key (tenant, name, version),
    foreign key (tenant, name) references secret (tenant, name) on delete cascade
);
