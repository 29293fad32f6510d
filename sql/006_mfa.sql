-- 006: the second factor (SPEC §10).
--  mfa_enabled:    shown in the user shape; login stops at mfa_required.
--  totp_secret:    the active TOTP secret, sealed with secrets_key
--                  (XChaCha20-Poly1305: 24-byte nonce || ciphertext || tag);
--                  never stored in clear.
--  totp_pending:   an enrolment not yet confirmed, sealed the same way.
--  totp_last_step: the last accepted time step; a code is accepted only by
--                  the conditional UPDATE that raises it, so a step is used
--                  once per account across workers and hosts.
ALTER TABLE users ADD COLUMN mfa_enabled boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN totp_secret bytea;
ALTER TABLE users ADD COLUMN totp_pending bytea;
ALTER TABLE users ADD COLUMN totp_last_step bigint;

-- The access tokens of a session opened with a second factor carry
-- amr ["pwd","otp"], after refreshes too.
ALTER TABLE sessions ADD COLUMN amr_otp boolean NOT NULL DEFAULT false;

-- Recovery codes: keyed BLAKE2b-256 of the code (key derived from
-- secrets_key); a use is one DELETE ... RETURNING, so one of two concurrent
-- uses wins.
CREATE TABLE recovery_codes (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- Login's second step: BLAKE2b-256 of the mfa_token, 300 s, single-use,
-- spent after 5 wrong codes.
CREATE TABLE mfa_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    used_at    timestamptz
);
CREATE INDEX mfa_tokens_expires_idx ON mfa_tokens (expires_at);
CREATE INDEX mfa_tokens_user_idx ON mfa_tokens (user_id);
