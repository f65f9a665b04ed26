-- The reconciler and warm pools.

-- Which replica is working on a sandbox in a transitional state (EXPIRED, DESTROYING, FAILED,
-- a READY member being reset): the `replicas.id` of the worker, NULL when nobody is. A worker
-- holds a session advisory lock on its id while it lives, so others can tell a crashed worker's
-- leftovers from work in progress.
ALTER TABLE sandboxes ADD COLUMN worker integer;
-- Claimed from its template's warm pool (rather than provisioned for the create).
ALTER TABLE sandboxes ADD COLUMN from_pool boolean NOT NULL DEFAULT false;
-- When the reconciler first saw the sandbox idle; it is destroyed as idle only if it is still
-- idle a while later (touches buffered in another replica's memory have been written by then).
ALTER TABLE sandboxes ADD COLUMN idle_noticed_at timestamptz;

-- Ready pool members, oldest first (claims take the oldest).
CREATE INDEX sandboxes_pool_ready_idx ON sandboxes (template, created_at, id)
    WHERE state = 'READY' AND tenant = '';
-- Expiry and idle scans.
CREATE INDEX sandboxes_running_expire_idx ON sandboxes (expire_at) WHERE state = 'RUNNING';
CREATE INDEX sandboxes_running_activity_idx ON sandboxes (last_activity_at) WHERE state = 'RUNNING';
-- Transitional states the reconciler finishes.
CREATE INDEX sandboxes_transitional_idx ON sandboxes (state, updated_at)
    WHERE state IN ('PENDING', 'CREATING', 'EXPIRED', 'DESTROYING', 'FAILED');
-- Pool sizes per template.
CREATE INDEX sandboxes_template_live_idx ON sandboxes (template, state)
    WHERE state IN ('READY', 'RUNNING');

-- Live replicas: each holds pg_advisory_lock(<replicas lock class>, id) on a connection of its
-- own for as long as it runs.
CREATE TABLE replicas (
    id          serial      PRIMARY KEY,
    hostname    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);

-- Warm-pool statistics, sharded so concurrent claims do not queue on one row; a template's
-- figures are the sums over its shards.
CREATE TABLE pool_stats (
    template text     NOT NULL,
    shard    smallint NOT NULL,
    hits     bigint   NOT NULL DEFAULT 0,
    misses   bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (template, shard)
);

-- How far the logs behind resume tokens have been pruned: resuming after a position below
-- `pruned_through` would miss events that are gone.
CREATE TABLE log_horizons (
    log            text   PRIMARY KEY CHECK (log IN ('audit_events', 'guild_route_changes')),
    pruned_through bigint NOT NULL
);
INSERT INTO log_horizons (log, pruned_through) VALUES ('audit_events', 0), ('guild_route_changes', 0);
CREATE INDEX audit_events_created_idx ON audit_events (created_at);
CREATE INDEX guild_route_changes_created_idx ON guild_route_changes (created_at);
