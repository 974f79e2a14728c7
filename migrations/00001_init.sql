-- +goose Up

-- API keys: only a keyed hash of the secret is kept (HMAC-SHA256 with
-- API_SALT); the prefix is a short display aid. Keys are revoked, never
-- deleted, so that usage and audit records keep a meaning.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE,
    owner        text        NOT NULL CHECK (length(owner) BETWEEN 1 AND 64),
    role         text        NOT NULL CHECK (role IN ('admin', 'user')),
    tier         text        NOT NULL CHECK (tier IN ('free', 'basic', 'pro')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- Listing an owner's keys, newest first (ids are UUIDv7, so id order is time order).
CREATE INDEX api_keys_owner_id ON api_keys (owner, id DESC);

-- Module bytes, stored once per SHA-256 however many modules share them.
CREATE TABLE module_blobs (
    sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes      bytea       NOT NULL,
    size_bytes bigint      NOT NULL CHECK (size_bytes = length(bytes)),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The bytes are already compressed as far as they will go for most modules,
-- and workers read them whole: skip TOAST compression.
ALTER TABLE module_blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- Modules: a tenant's named reference to a blob. An ad-hoc module (sent with
-- an execute request, not kept) has an expires_at and never appears in lists.
CREATE TABLE modules (
    id         uuid        PRIMARY KEY,
    owner      text        NOT NULL,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    sha256     text        NOT NULL REFERENCES module_blobs (sha256),
    size_bytes bigint      NOT NULL,
    exports    text[]      NOT NULL,
    wasi       boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX modules_owner_id ON modules (owner, id DESC) WHERE expires_at IS NULL;
CREATE INDEX modules_id ON modules (id DESC) WHERE expires_at IS NULL;
CREATE INDEX modules_sha256 ON modules (sha256);
CREATE INDEX modules_expires_at ON modules (expires_at) WHERE expires_at IS NOT NULL;

-- Executions: one usage record per run, written in batches off the request
-- path. No foreign keys: a record outlives the module it ran.
CREATE TABLE executions (
    id                uuid             PRIMARY KEY,
    owner             text             NOT NULL,
    key_id            uuid,
    module_id         uuid,
    status            text             NOT NULL,
    exit_code         integer,
    duration_ms       double precision NOT NULL DEFAULT 0,
    queue_ms          double precision NOT NULL DEFAULT 0,
    memory_peak_bytes bigint           NOT NULL DEFAULT 0,
    bytes_in          bigint           NOT NULL DEFAULT 0,
    bytes_out         bigint           NOT NULL DEFAULT 0,
    worker            text,
    request_id        text,
    created_at        timestamptz      NOT NULL
);
CREATE INDEX executions_owner_created_at ON executions (owner, created_at DESC);
CREATE INDEX executions_created_at ON executions (created_at);

-- +goose Down
DROP TABLE executions;
DROP TABLE modules;
DROP TABLE module_blobs;
DROP TABLE api_keys;
