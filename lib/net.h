/* net: listening sockets for --listen (as Redis' anet: helpers that fill a
 * caller's err buffer). Thread-safe. */
#ifndef ACCESS_NET_H
#define ACCESS_NET_H

#include <stddef.h>

/* Open a listening socket for "unix:PATH" (a stale socket file is replaced;
 * the new one gets `mode`, e.g. 0660 for the web server's group, and is
 * never more open than that while it exists, whatever the umask) or
 * "HOST:PORT" / "[V6]:PORT" (mode unused). Changes the process umask for
 * the moment of bind(2): call it before starting threads. Returns the fd or
 * -1 with err filled. */
int net_listen(const char *spec, int backlog, unsigned mode, char *err, size_t errlen);
/* 1 when fd is a listening stream socket (fd 0 from spawn-fcgi/lighttpd). */
int net_is_listening(int fd);
/* Put fd in blocking (on = 0) or non-blocking mode; 0 or -1. */
int net_set_nonblock(int fd, int on);

#endif
