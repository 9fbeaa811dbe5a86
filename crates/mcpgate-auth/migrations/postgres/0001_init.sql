-- The built-in authorization server's state on PostgreSQL (see src/store/mod.rs for the
-- semantics, and migrations/sqlite for the same schema on SQLite).
--
-- Timestamps are seconds since the Unix epoch (BIGINT), supplied by the caller. Secrets (codes,
-- refresh tokens, session ids, client secrets) are only ever stored hashed. Scope sets are
-- space-separated TEXT, sorted, as `ScopeSet` prints them.
--
-- `client_id` columns outside `clients` carry no foreign key on purpose: metadata-document
-- (CIMD) clients are fetched, never stored in `clients`, yet they get consents, codes and grants.
--
-- Several instances share these tables. Writers that touch more than one of the grant tables lock
-- rows in one order — token_families, then refresh_tokens, then authorization_codes — so that
-- they queue behind each other instead of deadlocking (see src/store/postgres.rs).

CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Registrations are never purged with expired rows.
CREATE TABLE clients (
    client_id   TEXT   NOT NULL PRIMARY KEY,
    secret_hash TEXT,
    metadata    JSONB  NOT NULL,
    source      TEXT   NOT NULL CHECK (source IN ('dynamic', 'admin')),
    created_at  BIGINT NOT NULL
);

-- `scopes` is the space-separated, sorted scope set the user approved for the client.
CREATE TABLE consents (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL,
    scopes     TEXT   NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX consents_client_id ON consents (client_id);

-- `prompt` is the space-separated list of `prompt` values, in request order.
CREATE TABLE pending_authorizations (
    id             TEXT   NOT NULL PRIMARY KEY,
    client_id      TEXT   NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    state          TEXT,
    code_challenge TEXT   NOT NULL,
    resource       TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    prompt         TEXT   NOT NULL,
    csrf_token     TEXT   NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX pending_authorizations_client_id ON pending_authorizations (client_id);
CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at);

CREATE TABLE browser_sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX browser_sessions_user_id ON browser_sessions (user_id);
CREATE INDEX browser_sessions_expires_at ON browser_sessions (expires_at);

-- A grant. `user_id` has no foreign key: when a user is deleted their families stay, revoked, so
-- the resource server's denylist keeps refusing the access tokens already issued from them.
-- `last_used_at` (the last refresh) decides when a dead family may be purged.
CREATE TABLE token_families (
    family_id    TEXT   NOT NULL PRIMARY KEY,
    client_id    TEXT   NOT NULL,
    user_id      TEXT,
    scope        TEXT   NOT NULL,
    resource     TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX token_families_user_id ON token_families (user_id);
CREATE INDEX token_families_client_id ON token_families (client_id);
CREATE INDEX token_families_revoked_at ON token_families (revoked_at);

-- `used_at` makes codes single-use; `replayed_at` records a second presentation so that a family
-- linked after the replay (the first exchange still in flight) is created already revoked.
CREATE TABLE authorization_codes (
    code_hash      TEXT   NOT NULL PRIMARY KEY,
    client_id      TEXT   NOT NULL,
    user_id        TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT   NOT NULL,
    code_challenge TEXT   NOT NULL,
    resource       TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    replayed_at    BIGINT,
    family_id      TEXT   REFERENCES token_families (family_id) ON DELETE SET NULL
);
CREATE INDEX authorization_codes_user_id ON authorization_codes (user_id);
CREATE INDEX authorization_codes_client_id ON authorization_codes (client_id);
CREATE INDEX authorization_codes_family_id ON authorization_codes (family_id);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);

-- Rotated tokens stay until they expire: presenting one again is how a replay is detected.
CREATE TABLE refresh_tokens (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    family_id  TEXT   NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    scope      TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    successor  TEXT
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE revoked_jtis (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_jtis_expires_at ON revoked_jtis (expires_at);

-- `private_pkcs8` is the PKCS#8 DER private key; `public_jwk` its public JWK. `seq` orders keys
-- created in the same second by insertion (SQLite's rowid).
CREATE TABLE signing_keys (
    seq           BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY,
    kid           TEXT   NOT NULL PRIMARY KEY,
    alg           TEXT   NOT NULL,
    private_pkcs8 BYTEA  NOT NULL,
    public_jwk    JSONB  NOT NULL,
    created_at    BIGINT NOT NULL,
    activate_at   BIGINT NOT NULL,
    retire_at     BIGINT
);
CREATE INDEX signing_keys_retire_at ON signing_keys (retire_at);
