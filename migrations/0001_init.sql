-- API keys: only a SHA-256 of the key is stored; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant      text        NOT NULL,
    subject     text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'router')),
    key_hash    bytea       NOT NULL UNIQUE,
    key_prefix  text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant, created_at DESC);

CREATE TABLE sandboxes (
    id                  uuid        PRIMARY KEY,
    tenant              text        NOT NULL,
    owner               text        NOT NULL,
    name                text,
    template            text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('PENDING', 'CREATING', 'READY', 'RUNNING',
                                        'EXPIRED', 'DESTROYING', 'DESTROYED', 'FAILED')),
    labels              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_id          text,
    request_fingerprint text,
    last_error          text,
    destroy_reason      text,
    -- bumped on every change; the etag is derived from it
    version             bigint      NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    expire_at           timestamptz NOT NULL,
    max_expire_at       timestamptz NOT NULL,
    last_activity_at    timestamptz NOT NULL,
    destroyed_at        timestamptz
);
-- A name belongs to at most one live sandbox of a tenant; destroyed ones free it.
CREATE UNIQUE INDEX sandboxes_live_name_key ON sandboxes (tenant, name)
    WHERE name IS NOT NULL AND state IN ('PENDING', 'CREATING', 'READY', 'RUNNING');
-- AIP-155: a request id identifies one create request per tenant.
CREATE UNIQUE INDEX sandboxes_request_id_key ON sandboxes (tenant, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX sandboxes_tenant_created_idx ON sandboxes (tenant, created_at DESC, id DESC);
CREATE INDEX sandboxes_owner_live_idx ON sandboxes (tenant, owner)
    WHERE state IN ('PENDING', 'CREATING', 'READY', 'RUNNING');

CREATE TABLE audit_events (
    id          bigserial   PRIMARY KEY,
    tenant      text        NOT NULL,
    sandbox_id  uuid,
    actor       text        NOT NULL,
    event_type  text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_sandbox_idx ON audit_events (sandbox_id, id DESC);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant, id DESC);
