-- +goose Up

-- Audit events: one row per security-relevant event (API.md, "Audit"),
-- written in batches off the request path. No foreign keys: an event
-- outlives the key, owner and module it names. The id is a UUIDv7 whose
-- millisecond timestamp is `at`'s, so that time ranges are id ranges and
-- every query below is a range scan of one index, newest first.
-- detail holds a few words of context (a refusal's reason, a key's role);
-- never a secret.
CREATE TABLE audit_events (
    id         uuid        PRIMARY KEY,
    at         timestamptz NOT NULL,
    key_id     uuid,
    owner      text,
    action     text        NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target_id  text        CHECK (length(target_id) <= 128),
    outcome    text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    client_ip  text        CHECK (length(client_ip) <= 64),
    request_id text        CHECK (length(request_id) <= 128),
    detail     jsonb       NOT NULL DEFAULT '{}' CHECK (octet_length(detail::text) <= 4096)
);
-- GET /api/audit pages by id (the primary key serves the unfiltered list
-- and the retention job); these serve the owner= and action= filters.
CREATE INDEX audit_events_owner_id ON audit_events (owner, id DESC);
CREATE INDEX audit_events_action_id ON audit_events (action, id DESC);

-- The usage figures and the retention job read executions through the
-- indexes of 00001 (owner, created_at) and (created_at): nothing to add.

-- +goose Down
DROP TABLE audit_events;
