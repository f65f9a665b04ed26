-- On a single Redis, a sandbox's keys can only be found by walking the whole keyspace, so
-- destroy no longer does that itself: a DESTROYED sandbox whose keys are still to be removed has
-- keys_purged_at NULL, and one keyspace pass removes the keys of all of them at once. On Redis
-- Cluster (and before this migration) keys are removed before DESTROYED commits, and
-- keys_purged_at is set with it.
ALTER TABLE sandboxes ADD COLUMN keys_purged_at timestamptz;
UPDATE sandboxes SET keys_purged_at = coalesce(destroyed_at, updated_at) WHERE state = 'DESTROYED';
CREATE INDEX sandboxes_keys_pending_idx ON sandboxes (destroyed_at)
    WHERE state = 'DESTROYED' AND keys_purged_at IS NULL;

-- The keyspace pass (pending purges, and Redis orphans every orphan interval) runs in one
-- replica at a time: the one whose claim of this row succeeded. `next_at` spaces the passes
-- (purge interval, and at least 9x the last pass's SCAN time); a pass whose holder died (its
-- liveness lock is gone) may be taken over at once.
CREATE TABLE keyspace_passes (
    name             text        PRIMARY KEY,
    holder           integer,
    running          boolean     NOT NULL DEFAULT false,
    next_at          timestamptz NOT NULL DEFAULT now(),
    next_orphans_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO keyspace_passes (name) VALUES ('redis');

-- The warm-pool figures count in-use members every pass; without this they read every row.
CREATE INDEX sandboxes_pool_in_use_idx ON sandboxes (template) WHERE state = 'RUNNING' AND from_pool;
