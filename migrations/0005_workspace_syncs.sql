-- The last completed push and the last completed pull of each sandbox's workspace
-- (GetSyncStatus), kept with the sandbox row and removed with it.
CREATE TABLE workspace_syncs (
    sandbox_id        uuid        NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    direction         text        NOT NULL CHECK (direction IN ('push', 'pull')),
    files_scanned     bigint      NOT NULL,
    files_transferred bigint      NOT NULL,
    files_deleted     bigint      NOT NULL,
    bytes_transferred bigint      NOT NULL,
    duration_us       bigint      NOT NULL,
    finished_at       timestamptz NOT NULL,
    PRIMARY KEY (sandbox_id, direction)
);
