#include "reqid.h"

#include <stdint.h>
#include <string.h>

#include "uuid.h"

int reqid_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > REQID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int reqid_choose(const char *caller, char out[REQID_MAX + 1])
{
    if (caller != NULL) {
        size_t len = strnlen(caller, REQID_MAX + 1);
        if (reqid_valid(caller, len)) {
            memcpy(out, caller, len);
            out[len] = '\0';
            return 1;
        }
    }
    uint8_t id[16];
    uuid_v7(id);
    uuid_format(id, out);
    return 0;
}
