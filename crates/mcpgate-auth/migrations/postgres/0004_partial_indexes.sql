-- Most families are live (`revoked_at` NULL) and most codes are either unexchanged or linked
-- once (`family_id` NULL until then), and every query on these two columns looks for non-NULL
-- values (`revoked_at >= ?`, `family_id = ?`, the foreign key's `ON DELETE SET NULL`). Leaving
-- the NULLs out of their indexes spares the token endpoint an index write per new grant and per
-- new code, and keeps both indexes the size of what they are for.
DROP INDEX token_families_revoked_at;
CREATE INDEX token_families_revoked_at ON token_families (revoked_at) WHERE revoked_at IS NOT NULL;

DROP INDEX authorization_codes_family_id;
CREATE INDEX authorization_codes_family_id ON authorization_codes (family_id)
    WHERE family_id IS NOT NULL;
