/* Unit tests for lib/reqdb.c: the statement table of the whole service
 * (accounts, clients, oauth, admin) is complete, every name is unique, and
 * every statement's highest $N is its declared parameter count. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "reqdb.h"

static int max_param(const char *sql)
{
    int max = 0;
    for (const char *p = strchr(sql, '$'); p != NULL; p = strchr(p + 1, '$')) {
        int n = atoi(p + 1);
        if (n > max)
            max = n;
    }
    return max;
}

static void test_table(void **state)
{
    (void)state;
    const struct db_stmt *t = reqdb_statements();
    for (size_t i = 0; i < REQDB_STMT__COUNT; i++) {
        if (t[i].name == NULL || t[i].sql == NULL)
            fail_msg("statement %zu is not registered", i);
        if (max_param(t[i].sql) != t[i].nparams)
            fail_msg("%s: highest $N is %d, nparams %d", t[i].name, max_param(t[i].sql),
                     t[i].nparams);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                fail_msg("statement name %s twice", t[i].name);
    }
    assert_string_equal(t[REQDB_CL_INSERT].name, "client_insert");
    assert_string_equal(t[REQDB_OA_REVOKE_JTI].name, "oauth_revoke_jti");
    assert_string_equal(t[REQDB_AD_USERS_PAGE].name, "admin_users_page");
    assert_string_equal(t[STMT_PING].name, accounts_statements[STMT_PING].name);
    /* The same table every time (the pool keeps the pointer). */
    assert_ptr_equal(reqdb_statements(), t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_table)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
