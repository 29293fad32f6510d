-- 004: API clients with Ed25519 keys and the OAuth 2.0 endpoints (SPEC §11),
-- administration and disabled accounts (SPEC §12).

-- A disabled account cannot log in; disabling also revokes its sessions.
ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;

-- API clients. user_id is the owner; NULL for the clients made on the
-- command line (the only ones that may hold the admin scope). scopes is
-- space-separated. version orders cache writes (lib/l2.h ranks);
-- tokens_after: tokens of this client issued before it (its jti is a
-- UUIDv7, which carries the issue time) are refused: set when a key is
-- revoked, so a revoked key stops the tokens it obtained.
CREATE TABLE clients (
    id           uuid PRIMARY KEY,
    user_id      uuid REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    scopes       text NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    tokens_after timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clients_user_created_idx ON clients (user_id, created_at DESC, id DESC);

-- Public keys only; kid is the RFC 7638 thumbprint. A revoked key stays
-- (revoked_at set) so the same key cannot come back unnoticed.
CREATE TABLE client_keys (
    client_id  uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kid        text NOT NULL,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (client_id, kid)
);

-- Client access tokens revoked through /oauth/revoke, until their exp.
CREATE TABLE revoked_client_tokens (
    jti        uuid PRIMARY KEY,
    client_id  uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_client_tokens_expires_idx ON revoked_client_tokens (expires_at);

-- Every audit type of SPEC §4 version 2 (a superset of 001's list).
ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_type_check CHECK (type IN ('signup',
    'login_succeeded', 'login_failed', 'refresh', 'refresh_reuse_detected', 'logout',
    'password_changed', 'session_revoked', 'password_change_failed', 'login_throttled',
    'email_verified', 'password_reset_requested', 'password_reset', 'account_deleted',
    'mfa_enabled', 'mfa_disabled', 'mfa_failed', 'recovery_code_used', 'client_created',
    'client_deleted', 'client_key_added', 'client_key_revoked', 'account_disabled',
    'account_enabled'));
