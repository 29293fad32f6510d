-- 003: the account's life cycle (SPEC §9): verified emails, verification
-- and reset tokens, the transactional outbox, the new audit event types.

ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- Verification and reset tokens: only the BLAKE2b-256 hash of the 256-bit
-- token is stored. A token is consumed by one UPDATE ... WHERE used_at IS
-- NULL AND expires_at > now() RETURNING, so of two concurrent uses one wins.
-- Deleting the user deletes its tokens.
CREATE TABLE account_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
-- A new reset request invalidates the older unused ones of the account.
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose) WHERE used_at IS NULL;
-- The janitor's scan of expired tokens.
CREATE INDEX account_tokens_expires_idx ON account_tokens (expires_at);

-- The outbox: every message and event, written in the transaction of the
-- change it reports. Delivery threads claim due `pending` rows with FOR
-- UPDATE SKIP LOCKED and push next_at past their delivery (a lease), so no
-- two processes send one row at the same time. `held`: mail_transport =
-- none. No foreign key on user_id: the event of a deleted account is still
-- delivered.
CREATE TABLE outbox (
    id         uuid PRIMARY KEY,  -- also the webhook-id receivers deduplicate on
    kind       text NOT NULL CHECK (kind IN ('message', 'event')),
    type       text NOT NULL,
    user_id    uuid,
    payload    jsonb NOT NULL,
    state      text NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'held', 'delivered', 'dead')),
    attempts   integer NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    done_at    timestamptz,
    last_error text
);
CREATE INDEX outbox_due_idx ON outbox (next_at) WHERE state = 'pending';
CREATE INDEX outbox_done_idx ON outbox (done_at) WHERE state IN ('delivered', 'dead');
-- At most 3 reset messages per account and hour (SPEC §9).
CREATE INDEX outbox_user_type_idx ON outbox (user_id, type, created_at);

ALTER TABLE audit_events DROP CONSTRAINT audit_events_type_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_type_check CHECK (type IN ('signup',
    'login_succeeded', 'login_failed', 'refresh', 'refresh_reuse_detected', 'logout',
    'password_changed', 'session_revoked', 'password_change_failed', 'login_throttled',
    'email_verified', 'password_reset_requested', 'password_reset', 'account_deleted',
    'mfa_enabled', 'mfa_disabled', 'mfa_failed', 'recovery_code_used', 'client_created',
    'client_deleted', 'client_key_added', 'client_key_revoked', 'account_disabled',
    'account_enabled'));
