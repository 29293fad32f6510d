#include "admin.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
/* The admin view of a user: the profile plus disabled and sessions_active. */
#define AD_COLS                                                                                    \
    "u.id, u.email, u.name, " TS(                                                                  \
        "u.created_at") ", u.disabled, (SELECT count(*) FROM sessions s "                          \
                        "WHERE s.user_id = u.id AND s.revoked_at IS NULL "                         \
                        "AND s.expires_at > now()), (extract(epoch FROM "                          \
                        "u.created_at) * 1000000)::bigint, u.version"

const struct db_stmt admin_statements[ADMIN_STMT__COUNT] = {
    [AD_USERS_PAGE] = {"admin_users_page",
                       "SELECT " AD_COLS
                       " FROM users u WHERE ($1::bigint IS NULL OR (u.created_at, "
                       "u.id) < ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', "
                       "$2::uuid)) ORDER BY u.created_at DESC, u.id DESC LIMIT $3",
                       3, 1},
    [AD_USER_BY_EMAIL] = {"admin_user_by_email",
                          "SELECT " AD_COLS " FROM users u WHERE lower(u.email) = lower($1)", 1, 1},
    [AD_USER] = {"admin_user", "SELECT " AD_COLS " FROM users u WHERE u.id = $1", 1, 1},
    /* The old disabled flag comes back too: only a change is audited. */
    [AD_USER_SET] =
        {"admin_user_set",
         "WITH old AS (SELECT id, disabled FROM users WHERE id = $1 FOR UPDATE), upd AS "
         "(UPDATE users u SET name = coalesce($2, u.name), disabled = "
         "coalesce($3::boolean, u.disabled), version = u.version + 1, updated_at = "
         "now() FROM old WHERE u.id = old.id RETURNING u.*) SELECT " AD_COLS
         ", old.disabled FROM upd u, old",
         3, 0},
    [AD_USER_DELETE] =
        {"admin_user_delete",
         "WITH s AS (SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS "
         "NULL), c AS (SELECT id FROM clients WHERE user_id = $1), d AS (DELETE FROM "
         "users WHERE id = $1 RETURNING id) SELECT 'd', id::text FROM d UNION ALL "
         "SELECT 's', id::text FROM s WHERE EXISTS (SELECT 1 FROM d) UNION ALL "
         "SELECT 'c', id::text FROM c WHERE EXISTS (SELECT 1 FROM d)",
         1, 0},
    [AD_REVOKE_ALL] = {"admin_revoke_all",
                       "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at "
                       "IS NULL RETURNING id",
                       1, 1},
    [AD_DISABLED] = {"admin_disabled", "SELECT disabled FROM users WHERE id = $1", 1, 1},
};
