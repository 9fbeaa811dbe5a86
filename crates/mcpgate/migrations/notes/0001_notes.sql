CREATE TABLE IF NOT EXISTS notes (
    owner_issuer  TEXT    NOT NULL,
    owner_subject TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    content       TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (owner_issuer, owner_subject, id)
);
