#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int net_listen_unix(const char *path, int backlog, unsigned mode, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    /* bind(2) creates the file with 0777 & ~umask: with umask 0777 it is
     * born 0000 (nobody but root may connect), and only chmod opens it, to
     * exactly `mode`. No moment where it is more open than asked. */
    mode_t old = umask(0777);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (rc != 0) {
        snprintf(err, errlen, "listen on unix:%s: bind: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    /* chmod follows symlinks: refuse if the path was swapped meanwhile. */
    errno = 0;
    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode) || chmod(path, (mode_t)(mode & 0777)) != 0 ||
        listen(fd, backlog) != 0) {
        snprintf(err, errlen, "listen on unix:%s: %s", path,
                 errno ? strerror(errno) : "not a socket after bind");
        close(fd);
        return -1;
    }
    return fd;
}

static int net_listen_tcp(const char *spec, int backlog, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || colon[1] == '\0') {
        snprintf(err, errlen, "--listen '%s': expected unix:PATH or HOST:PORT", spec);
        return -1;
    }
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= sizeof(host)) {
        snprintf(err, errlen, "--listen: host too long");
        return -1;
    }
    memcpy(host, spec, hl);
    host[hl] = '\0';
    port = colon + 1;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(hl ? host : NULL, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "--listen '%s': %s", spec, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
            break;
        snprintf(err, errlen, "listen on %s: %s", spec, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int net_listen(const char *spec, int backlog, unsigned mode, char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot listen on %s", spec);
    if (strncmp(spec, "unix:", 5) == 0)
        return net_listen_unix(spec + 5, backlog, mode, err, errlen);
    return net_listen_tcp(spec, backlog, err, errlen);
}

int net_is_listening(int fd)
{
    int val = 0;
    socklen_t len = sizeof(val);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) != 0)
        return 0;
    return val != 0;
}

int net_set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
        return -1;
    return 0;
}
