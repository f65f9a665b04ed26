-- Artifacts: what agents in sandboxes publish for human review. The bytes live in the object
-- store at sandboxes/<sandbox_id>/artifacts/<id>; this row records them. Events (published,
-- reviewed, removed) go to audit_events like every other change.
CREATE TABLE artifacts (
    id               uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    sandbox_id       uuid        NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    conversation_id  text,
    type             text        NOT NULL CHECK (type IN ('file', 'diff', 'log', 'image', 'text', 'other')),
    title            text        NOT NULL,
    content_type     text        NOT NULL,
    sandbox_path     text,
    size_bytes       bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256           text        NOT NULL,
    preview          text        NOT NULL DEFAULT '',
    publisher        text        NOT NULL,
    review_state     text        NOT NULL DEFAULT 'PENDING'
                                 CHECK (review_state IN ('PENDING', 'APPROVED', 'REJECTED')),
    reviewer         text,
    review_comment   text,
    review_time      timestamptz,
    create_time      timestamptz NOT NULL,
    -- AIP-155: one publication per request id and publisher of a tenant.
    request_id       text,
    -- bumped on every change; the etag is derived from it
    version          bigint      NOT NULL DEFAULT 1,
    -- set while the reconciler (or a tenant purge) removes it: no longer listed or reviewable
    removing_since   timestamptz
);
CREATE UNIQUE INDEX artifacts_request_id_key ON artifacts (tenant, publisher, request_id)
    WHERE request_id IS NOT NULL;
-- The listings, newest first with a keyset on (create_time, id).
CREATE INDEX artifacts_tenant_created_idx ON artifacts (tenant, create_time DESC, id DESC);
CREATE INDEX artifacts_sandbox_created_idx ON artifacts (tenant, sandbox_id, create_time DESC, id DESC);
CREATE INDEX artifacts_conversation_created_idx ON artifacts (tenant, conversation_id, create_time DESC, id DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX artifacts_review_state_created_idx ON artifacts (tenant, review_state, create_time DESC, id DESC);
-- Retention: artifacts of destroyed sandboxes are found through the sandbox.
CREATE INDEX artifacts_sandbox_idx ON artifacts (sandbox_id);
CREATE INDEX sandboxes_destroyed_at_idx ON sandboxes (destroyed_at) WHERE state = 'DESTROYED';
