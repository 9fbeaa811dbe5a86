-- Proxy mode: users sign in at an upstream identity provider.

-- An upstream sign-in in flight, created only once the user approved the MCP client. Keyed by
-- the SHA-256 of the `state` sent upstream; taken (deleted) by the callback, so it is single-use.
-- `browser_hash` is the SHA-256 of the cookie that binds the sign-in to the browser that started
-- it. `pending` is the authorization request (JSON) the sign-in completes.
CREATE TABLE upstream_logins (
    state_hash    TEXT    NOT NULL PRIMARY KEY,
    browser_hash  TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    code_verifier TEXT    NOT NULL,
    pending       TEXT    NOT NULL CHECK (json_valid(pending)),
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX upstream_logins_expires_at ON upstream_logins (expires_at);

-- The upstream tokens of a user, sealed with AES-256-GCM under the configured key (never clear).
CREATE TABLE upstream_tokens (
    user_id    TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed     BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
