/* problem: RFC 9457 problem documents in the shape of SPEC §4:
 * {"type":"about:blank","title":…,"status":…,"code":…,"detail":…[,"field":…]}
 * Thread-safe (pure). */
#ifndef ACCESS_PROBLEM_H
#define ACCESS_PROBLEM_H

#include "buf.h"

/* The reason phrase of an HTTP status ("Not Found"), "Unknown" if none. */
const char *problem_title(int status);
/* Append the problem document to b. detail and field may be NULL. */
void problem_render(struct buf *b, int status, const char *code, const char *detail,
                    const char *field);

#endif
