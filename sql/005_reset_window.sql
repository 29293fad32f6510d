-- 005: two facts on the user's row that concurrent `recover` requests
-- must agree on (SPEC §9). Both are written by recover's one UPDATE of the
-- row, so two requests serialise on it and the second re-evaluates its WHERE
-- on the first's version; facts read from other tables come from the
-- statement's snapshot, where both requests could pass.
--  reset_sent:  times of the reset messages of the last hour (at most 3).
--  reset_token: hash of the newest reset token; recover/confirm accepts no
--               other, so a newer reset makes the older ones unusable even
--               when both were requested at once.
ALTER TABLE users ADD COLUMN reset_sent timestamptz[] NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN reset_token bytea;
