-- Discord guild → sandbox routes. A guild maps to at most one sandbox; only RUNNING sandboxes
-- hold routes (leaving RUNNING removes them in the same transaction).
CREATE TABLE guild_routes (
    guild_id      text        PRIMARY KEY CHECK (guild_id ~ '^[1-9][0-9]{0,19}$'),
    sandbox_id    uuid        NOT NULL REFERENCES sandboxes (id),
    tenant        text        NOT NULL,
    registered_by text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX guild_routes_sandbox_idx ON guild_routes (sandbox_id);
CREATE INDEX guild_routes_tenant_idx ON guild_routes (tenant, guild_id);

-- Every route change, in commit order (writers serialize on an advisory lock), for replicas'
-- routing tables and for WatchGuildRoutes resume tokens.
CREATE TABLE guild_route_changes (
    id               bigserial   PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('ADDED', 'REMOVED')),
    guild_id         text        NOT NULL,
    sandbox_id       uuid        NOT NULL,
    tenant           text        NOT NULL,
    registered_by    text        NOT NULL,
    route_created_at timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
