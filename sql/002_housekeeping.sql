-- 002: housekeeping (SPEC §13) and refresh-token reuse recorded once per
-- session.

-- Set by the first detected reuse of one of the session's refresh tokens:
-- later replays are still refused but write no second audit event.
ALTER TABLE sessions ADD COLUMN reuse_detected_at timestamptz;

-- The janitor's scans (lib/janitor.c): dead sessions past their retention,
-- used refresh tokens by age, audit events by age. Each is a range scan on
-- one of these, LIMIT 1000 per statement.
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_used_issued_idx ON refresh_tokens (issued_at)
    WHERE used_at IS NOT NULL;
CREATE INDEX audit_events_created_idx ON audit_events (created_at);
