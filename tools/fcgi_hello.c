/* fcgi_hello: the FastCGI ceiling for benchmarks. The least a libfcgi
 * responder can do: threads blocked in FCGX_Accept_r on fd 0 (spawn-fcgi),
 * answering {"status":"ok"} with the same headers access sends. Threads
 * from $HELLO_THREADS (default 16). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcgiapp.h>

static void *hello_thread(void *arg)
{
    static const char resp[] = "Status: 200 OK\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 15\r\n"
                               "Cache-Control: no-store\r\n"
                               "\r\n"
                               "{\"status\":\"ok\"}";
    FCGX_Request req;
    (void)arg;
    FCGX_InitRequest(&req, 0, 0);
    while (FCGX_Accept_r(&req) >= 0) {
        FCGX_PutStr(resp, (int)sizeof(resp) - 1, req.out);
        FCGX_Finish_r(&req);
    }
    return NULL;
}

int main(void)
{
    const char *env = getenv("HELLO_THREADS");
    int n = env ? atoi(env) : 16;
    if (n < 1 || n > 1024)
        n = 16;
    signal(SIGPIPE, SIG_IGN);
    FCGX_Init();
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    if (t == NULL)
        return 1;
    for (int i = 1; i < n; i++)
        pthread_create(&t[i], NULL, hello_thread, NULL);
    hello_thread(NULL);
    return 0;
}
