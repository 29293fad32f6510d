/* net: listening sockets for --listen (as Redis' anet: helpers that fill a
 * caller's err buffer). Thread-safe. */
#ifndef ACCESS_NET_H
#define ACCESS_NET_H

#include <stddef.h>

/* Open a listening socket for "unix:PATH" (a stale socket file is replaced,
 * mode 0666 so the web server's user can connect) or "HOST:PORT" /
 * "[V6]:PORT". Returns the fd or -1 with err filled. */
int net_listen(const char *spec, int backlog, char *err, size_t errlen);
/* 1 when fd is a listening stream socket (fd 0 from spawn-fcgi/lighttpd). */
int net_is_listening(int fd);
/* Put fd in blocking (on = 0) or non-blocking mode; 0 or -1. */
int net_set_nonblock(int fd, int on);

#endif
