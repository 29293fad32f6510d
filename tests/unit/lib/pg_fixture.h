/* The PostgreSQL group fixture shared by unit tests that talk to a real,
 * migrated database (ACCESS_TEST_PG, a libpq URI; make test points it at the
 * local stack): one connection, and a marker unique to the run that the
 * tests put in their audit rows' detail ("m") so the teardown deletes
 * exactly what they wrote. Include once, in the test file. */
#ifndef ACCESS_TEST_PG_FIXTURE_H
#define ACCESS_TEST_PG_FIXTURE_H

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static PGconn *pg;
static char marker[48];

static int pg_fixture_setup(const char *what)
{
    pg = PQconnectdb(getenv("ACCESS_TEST_PG"));
    if (PQstatus(pg) != CONNECTION_OK) {
        print_error("ACCESS_TEST_PG: %s\n", PQerrorMessage(pg));
        return -1;
    }
    snprintf(marker, sizeof(marker), "%s-test-%ld-%ld", what, (long)getpid(), (long)time(NULL));
    return 0;
}

static int pg_teardown(void **state)
{
    (void)state;
    const char *p[] = {marker};
    PQclear(PQexecParams(pg, "DELETE FROM audit_events WHERE detail->>'m' = $1", 1, NULL, p, NULL,
                         NULL, 0));
    PQfinish(pg);
    return 0;
}

#endif
