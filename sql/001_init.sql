-- 001: every table the SPEC needs: users, sessions with hashed refresh
-- tokens, audit events. Applied by `access.fcgi migrate` in one transaction.

-- Users. Emails are unique case-insensitively: the unique index is on
-- lower(email), and login looks users up by lower(email) so it uses it.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    version       bigint NOT NULL DEFAULT 1,  -- bumped on every change; part of cache keys/ETags
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- Sessions: one per login; the id is the JWT `sid` claim.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    ip           text NOT NULL DEFAULT '',
    user_agent   text NOT NULL DEFAULT ''
);
-- Listing own sessions newest first with keyset pagination on (created_at, id),
-- and counting live ones for max_sessions_per_user.
CREATE INDEX sessions_user_created_idx ON sessions (user_id, created_at DESC, id DESC);

-- Refresh tokens: only a hash of the 256-bit token is stored. A used token
-- stays (used_at set) so a second use is recognised as reuse.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Security events, written in batches by the audit writer; the id makes a
-- replay of the spool file idempotent.
CREATE TABLE audit_events (
    id         uuid PRIMARY KEY,
    user_id    uuid,
    type       text NOT NULL CHECK (type IN ('signup', 'login_succeeded', 'login_failed',
                   'refresh', 'refresh_reuse_detected', 'logout', 'password_changed',
                   'session_revoked')),
    created_at timestamptz NOT NULL DEFAULT now(),
    ip         text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_user_created_idx ON audit_events (user_id, created_at DESC, id DESC);
