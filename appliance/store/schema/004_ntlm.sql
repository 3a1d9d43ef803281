-- ucupdates schema, version 4: NT hashes of local phone users, for NTLM on the external zone.

-- nt_hash is the MD4 of the UTF-16LE password, as 32 hex digits, or NULL for a user whose
-- password was set before this version (NTLM works for them after their next password
-- change; HTTP Basic works either way). It is password-equivalent: whoever reads it can
-- answer NTLM challenges as the user, so it lives beside password_hash with the same care.
ALTER TABLE users ADD COLUMN nt_hash TEXT CHECK (nt_hash IS NULL OR length(nt_hash) = 32);
