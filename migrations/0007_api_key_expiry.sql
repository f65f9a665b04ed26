-- Optional key expiry, and lookup by the key's public prefix so the secret part is compared in
-- constant time by the server instead of by an index lookup on its hash.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
CREATE INDEX api_keys_prefix_idx ON api_keys (key_prefix);
