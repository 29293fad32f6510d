/* Unit tests for lib/buf.c: appends, NUL termination, printf growth,
 * reset and free. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_append(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_puts(&b, "abc");
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_true(b.cap > b.len);
    buf_putc(&b, 'd');
    buf_append(&b, "e\0f", 3);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "abcde\0f", 8); /* NUL after len too */
    buf_append(&b, NULL, 0);
    assert_int_equal(b.len, 7);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void test_empty_append_terminates(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_puts(&b, "");
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    buf_free(&b);
}

static void test_growth(void **state)
{
    (void)state;
    struct buf b = {0};
    for (int i = 0; i < 10000; i++)
        buf_putc(&b, (char)('a' + i % 26));
    assert_int_equal(b.len, 10000);
    assert_true(b.cap >= 10001);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(b.data[i], 'a' + i % 26);
    assert_int_equal(b.data[10000], '\0');
    buf_free(&b);
}

static void test_printf(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_printf(&b, "%d-%s-%05.1f", 42, "x", 3.14159);
    assert_string_equal(b.data, "42-x-003.1");
    assert_int_equal(b.len, 10);
    buf_printf(&b, "%s", "");
    assert_int_equal(b.len, 10);

    /* Far past the initial capacity in one call. */
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('A' + i % 26);
    big[n] = '\0';
    buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, 10 + n + 2);
    assert_int_equal(strlen(b.data), b.len);
    assert_memory_equal(b.data, "42-x-003.1[", 11);
    assert_memory_equal(b.data + 11, big, n);
    assert_string_equal(b.data + 11 + n, "]");
    /* Many small printfs across several growths. */
    buf_reset(&b);
    for (int i = 0; i < 5000; i++)
        buf_printf(&b, "%04d,", i);
    assert_int_equal(b.len, 5000 * 5);
    assert_memory_equal(b.data + 5 * 1234, "1234,", 5);
    assert_string_equal(b.data + 5 * 4999, "4999,");
    free(big);
    buf_free(&b);
}

static void test_reset_keeps_memory(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_reset(&b); /* on an empty buffer */
    assert_int_equal(b.len, 0);
    buf_puts(&b, "some text that is here");
    char *data = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    buf_puts(&b, "new");
    assert_string_equal(b.data, "new");
    buf_free(&b);
}

static void test_reserve(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_puts(&b, "x");
    buf_reserve(&b, 5000);
    assert_true(b.cap >= b.len + 5000 + 1);
    char *data = b.data;
    for (int i = 0; i < 5000; i++)
        buf_putc(&b, 'y');
    assert_ptr_equal(b.data, data); /* no reallocation within the reserve */
    assert_int_equal(b.len, 5001);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_empty_append_terminates),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_reset_keeps_memory),
        cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
