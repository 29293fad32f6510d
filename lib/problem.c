#include "problem.h"

#include "json.h"

const char *problem_title(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

void problem_render(struct buf *b, int status, const char *code, const char *detail,
                    const char *field)
{
    buf_puts(b, "{\"type\":\"about:blank\",\"title\":");
    json_put_cstr(b, problem_title(status));
    buf_printf(b, ",\"status\":%d,\"code\":", status);
    json_put_cstr(b, code);
    if (detail != NULL) {
        buf_puts(b, ",\"detail\":");
        json_put_cstr(b, detail);
    }
    if (field != NULL) {
        buf_puts(b, ",\"field\":");
        json_put_cstr(b, field);
    }
    buf_putc(b, '}');
}
