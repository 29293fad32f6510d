/* Unit tests for lib/arena.c: alignment, separation of blocks, large
 * allocations, reset reusing the first chunk, free. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdalign.h>
#include <string.h>

#include "arena.h"

#define ALIGN alignof(max_align_t)

static void test_alignment_and_separation(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 256);
    enum { N = 500 };
    unsigned char *p[N];
    size_t sz[N];
    for (int i = 0; i < N; i++) {
        sz[i] = (size_t)(i % 37) + 1;
        p[i] = arena_alloc(&a, sz[i]);
        assert_non_null(p[i]);
        if ((uintptr_t)p[i] % ALIGN != 0)
            fail_msg("allocation %d of %zu bytes is not aligned to %zu", i, sz[i], ALIGN);
        memset(p[i], i & 0xff, sz[i]);
    }
    /* No block overlaps another: every pattern is intact. */
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < sz[i]; k++)
            if (p[i][k] != (unsigned char)(i & 0xff))
                fail_msg("allocation %d was overwritten at byte %zu", i, k);
    arena_free(&a);
    assert_null(a.head);
}

static void test_zero_and_default_chunk(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    assert_true(a.chunk_size > 0);
    void *x = arena_alloc(&a, 0);
    void *y = arena_alloc(&a, 0);
    assert_non_null(x);
    assert_non_null(y);
    assert_true((uintptr_t)x % ALIGN == 0);
    arena_free(&a);
}

static void test_large(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 64);
    char *small1 = arena_alloc(&a, 8);
    memset(small1, 'a', 8);
    size_t big = 1 << 20;
    unsigned char *b = arena_alloc(&a, big);
    assert_true((uintptr_t)b % ALIGN == 0);
    memset(b, 0xab, big); /* ASan would catch a short block */
    char *small2 = arena_alloc(&a, 8);
    memset(small2, 'b', 8);
    unsigned char *b2 = arena_alloc(&a, 100000);
    memset(b2, 0xcd, 100000);
    assert_int_equal(b[0], 0xab);
    assert_int_equal(b[big - 1], 0xab);
    assert_memory_equal(small1, "aaaaaaaa", 8);
    assert_memory_equal(small2, "bbbbbbbb", 8);
    arena_free(&a);
}

static void test_reset_reuses_first_chunk(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    void *first = arena_alloc(&a, 16);
    for (int round = 0; round < 50; round++) {
        /* Fill several chunks, with a large block among them. */
        for (int i = 0; i < 100; i++) {
            char *s = arena_alloc(&a, 100);
            memset(s, 'x', 100);
        }
        memset(arena_alloc(&a, 50000), 'y', 50000);
        arena_reset(&a);
        assert_non_null(a.head);
        /* The first chunk is kept and rewound. */
        void *again = arena_alloc(&a, 16);
        assert_ptr_equal(again, first);
        memset(again, 'z', 16);
    }
    arena_reset(&a);
    arena_reset(&a); /* twice is harmless */
    arena_free(&a);
    /* A freed arena can be used again. */
    char *s = arena_strdup(&a, "again");
    assert_string_equal(s, "again");
    arena_free(&a);
    /* Resetting an arena that never allocated is harmless. */
    struct arena e;
    arena_init(&e, 128);
    arena_reset(&e);
    assert_null(e.head);
    arena_free(&e);
}

static void test_strdup(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 64);
    char *s = arena_strdup(&a, "hello, world");
    assert_string_equal(s, "hello, world");
    char *t = arena_strndup(&a, "abcdef", 3);
    assert_string_equal(t, "abc");
    char *u = arena_strndup(&a, "a\0b", 3);
    assert_memory_equal(u, "a\0b", 4);
    char *e = arena_strdup(&a, "");
    assert_string_equal(e, "");
    char longer[300];
    memset(longer, 'L', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    char *l = arena_strdup(&a, longer); /* larger than a chunk */
    assert_string_equal(l, longer);
    assert_string_equal(s, "hello, world");
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_separation),
        cmocka_unit_test(test_zero_and_default_chunk),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_reset_reuses_first_chunk),
        cmocka_unit_test(test_strdup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
