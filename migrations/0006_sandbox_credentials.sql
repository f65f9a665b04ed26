-- Per-sandbox credentials (template options `postgres_role` and `redis_acl`): the generated
-- passwords of a sandbox's PostgreSQL login role and Redis ACL user, so that any replica can
-- answer GetConnectionDetails. Only sandboxd's own role can read this table; whoever can read
-- it could already change those passwords (sandboxd creates the roles and users), so keeping
-- them here gives nobody a power they did not have. PostgreSQL itself only ever receives a
-- SCRAM verifier and Redis a SHA-256 of the password.
--
-- No foreign key: the row is written in the provisioning transaction before the sandbox row
-- (outside the quota lock), and the orphan sweep removes rows whose sandbox is gone.
CREATE TABLE sandbox_credentials (
    sandbox_id        uuid        PRIMARY KEY,
    -- NULL when the sandbox has no login role (or it is a warm-pool member not yet claimed).
    postgres_password text,
    -- NULL when the sandbox has no Redis ACL user.
    redis_password    text,
    issued_at         timestamptz NOT NULL DEFAULT now()
);

-- Sandbox roles must not create objects outside their own schema. PostgreSQL 15 no longer
-- grants CREATE on the public schema to PUBLIC in new databases; a database created by an
-- older version (or by pg_upgrade) still does, so it is revoked here. Only when it is granted,
-- and only a warning when sandboxd may not change it (it does not own the schema): the README's
-- isolation section tells the operator to do it then.
DO $$
BEGIN
    IF has_schema_privilege('public', 'public', 'CREATE') THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'sandboxd could not revoke CREATE on schema public from PUBLIC; sandbox roles may create tables there';
END
$$;
