#include "statements.h"

#include <pthread.h>
#include <string.h>

#include "accounts.h"
#include "lifecycle.h"
#include "mfa.h"
#include "outbox.h"
#include "reqdb.h"

static struct db_stmt statements_table[STATEMENTS_COUNT];
static pthread_once_t statements_once = PTHREAD_ONCE_INIT;

static void statements_build(void)
{
    memcpy(statements_table, reqdb_statements(),
           (size_t)REQDB_STMT__COUNT * sizeof(struct db_stmt));
    memcpy(statements_table + LIFECYCLE_STMT_BASE, lifecycle_statements,
           sizeof(lifecycle_statements));
    memcpy(statements_table + OUTBOX_STMT_BASE, outbox_statements, sizeof(outbox_statements));
    memcpy(statements_table + MFA_STMT_BASE, mfa_statements, sizeof(mfa_statements));
}

const struct db_stmt *statements_all(void)
{
    pthread_once(&statements_once, statements_build);
    return statements_table;
}
