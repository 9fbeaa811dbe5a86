-- Stateful MCP sessions (Streamable HTTP, `Mcp-Session-Id`), so that an instance other than the
-- one that opened a session can continue it.
--
-- Keyed by the SHA-256 (hex) of the session id: a session id is a bearer-like value, and a copy
-- of the database must not hand them out. `state` is rmcp's `SessionState` (the client's
-- `initialize` parameters) as JSON. The session is bound to the principal that opened it
-- (issuer, subject, client) and to the grant it was opened under; any other principal is answered
-- as if the session did not exist. `expires_at` moves forward as the session is used
-- (`last_seen_at`); expired rows are purged with the rest of the expired state.
CREATE TABLE mcp_sessions (
    id_hash      TEXT    NOT NULL PRIMARY KEY,
    state        TEXT    NOT NULL CHECK (json_valid(state)),
    issuer       TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    client_id    TEXT,
    grant_id     TEXT,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX mcp_sessions_expires_at ON mcp_sessions (expires_at);
CREATE INDEX mcp_sessions_grant_id ON mcp_sessions (grant_id);
