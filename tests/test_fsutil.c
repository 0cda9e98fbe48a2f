/* SPDX-License-Identifier: Apache-2.0 */
/* vtpm_fs_confine: boot paths (kernel, initrd, disk) stay inside
 * [libvirt] images_dir, whatever `..` or symlinks say (docs/security.md,
 * "Security review"); vtpm_fs_list_uuids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "fsutil.h"

typedef struct {
    char *top;    /* tmp dir */
    char *images; /* top/images: the confining directory */
} fx;

static char *
at(const fx *f, const char *rel)
{
    return g_build_filename(f->top, rel, NULL);
}

static void
touch(const fx *f, const char *rel)
{
    g_autofree char *p = at(f, rel);

    assert_true(g_file_set_contents(p, "x", 1, NULL));
}

static void
link_to(const fx *f, const char *target, const char *rel)
{
    g_autofree char *p = at(f, rel);

    assert_int_equal(symlink(target, p), 0);
}

static int
setup(void **state)
{
    fx *f = g_new0(fx, 1);

    f->top = g_dir_make_tmp("vtpmd-fsutil-XXXXXX", NULL);
    assert_non_null(f->top);
    /* Resolved, so that expected outputs compare with realpath()'s. */
    {
        g_autofree char *r = realpath(f->top, NULL);

        g_free(f->top);
        f->top = g_steal_pointer(&r);
    }
    f->images = at(f, "images");
    assert_int_equal(g_mkdir(f->images, 0755), 0);
    {
        g_autofree char *sub = at(f, "images/sub");
        g_autofree char *sib = at(f, "images2");

        assert_int_equal(g_mkdir(sub, 0755), 0);
        assert_int_equal(g_mkdir(sib, 0755), 0);
    }
    touch(f, "images/vmlinuz");
    touch(f, "images/sub/initrd.img");
    touch(f, "images2/vmlinuz");
    touch(f, "secret");
    link_to(f, "../secret", "images/up-link");
    link_to(f, "/etc/hostname", "images/abs-link");
    link_to(f, "vmlinuz", "images/in-link");
    link_to(f, "..", "images/dir-link");
    link_to(f, "images", "images-alias");
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->top);

    assert_int_equal(system(cmd), 0);
    g_free(f->images);
    g_free(f->top);
    g_free(f);
    return 0;
}

static void
expect_ok(const char *dir, const char *path, const char *want)
{
    g_autofree char *out = NULL;
    vtpm_error err = { 0 };

    if (vtpm_fs_confine(dir, path, "args.instance.boot.kernel", &out, &err) < 0)
        fail_msg("%s refused: %s", path, err.message);
    assert_string_equal(out, want);
}

static void
expect_refused(const char *dir, const char *path, const char *why)
{
    char *sentinel = (char *)&sentinel;
    char *out = sentinel;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_fs_confine(dir, path, "args.instance.boot.initrd", &out, &err),
                     -(int)VTPM_FAULT_BAD_REQUEST);
    assert_int_equal(err.code, VTPM_FAULT_BAD_REQUEST);
    if (!g_str_has_prefix(err.message, "args.instance.boot.initrd: ") || !strstr(err.message, why))
        fail_msg("%s: '%s' does not name the field and say '%s'", path, err.message, why);
    assert_ptr_equal(out, sentinel);
}

static void
test_inside(void **state)
{
    fx *f = *state;
    g_autofree char *k = at(f, "images/vmlinuz");
    g_autofree char *i = at(f, "images/sub/initrd.img");
    g_autofree char *dotted = at(f, "images/sub/../vmlinuz");
    g_autofree char *via_link = at(f, "images/in-link");
    g_autofree char *alias = at(f, "images-alias");
    g_autofree char *via_alias = at(f, "images-alias/vmlinuz");

    expect_ok(f->images, k, k);
    expect_ok(f->images, i, i);
    /* `..` that stays inside, and a link to a file inside: the resolved
     * path is what libvirt gets. */
    expect_ok(f->images, dotted, k);
    expect_ok(f->images, via_link, k);
    /* images_dir itself may be a symlink (resolved too). */
    expect_ok(alias, via_alias, k);
    expect_ok(alias, k, k);
}

static void
test_escapes_refused(void **state)
{
    fx *f = *state;
    g_autofree char *dotdot = at(f, "images/../secret");
    g_autofree char *deep = at(f, "images/sub/../../secret");
    g_autofree char *up_link = at(f, "images/up-link");
    g_autofree char *abs_link = at(f, "images/abs-link");
    g_autofree char *dir_link = at(f, "images/dir-link/secret");
    g_autofree char *sibling = at(f, "images2/vmlinuz");
    g_autofree char *itself = at(f, "images/.");
    g_autofree char *sub = at(f, "images/sub/..");
    g_autofree char *missing = at(f, "images/nope");

    expect_refused(f->images, dotdot, "is outside the images directory");
    expect_refused(f->images, deep, "is outside the images directory");
    expect_refused(f->images, "/etc/hostname", "is outside the images directory");
    expect_refused(f->images, up_link, "is outside the images directory");
    expect_refused(f->images, abs_link, "is outside the images directory");
    expect_refused(f->images, dir_link, "is outside the images directory");
    /* A name that merely starts with the directory's name. */
    expect_refused(f->images, sibling, "is outside the images directory");
    /* The directory itself is not a file in it. */
    expect_refused(f->images, f->images, "is outside the images directory");
    expect_refused(f->images, itself, "is outside the images directory");
    expect_refused(f->images, sub, "is outside the images directory");
    expect_refused(f->images, missing, "No such file or directory");
    expect_refused("/nonexistent-images", "/etc/hostname", "images directory /nonexistent-images");
}

/* vtpm_fs_list_uuids: the per-instance records under kept_dir are named
 * by canonical UUIDs; anything else there (a temporary file of
 * vtpm_fs_write_atomic, an upper-case or short name) is not one. */
static void
test_list_uuids(void **state)
{
    fx *f = *state;
    g_autofree char *missing = at(f, "nope");
    g_autoptr(GPtrArray) none = vtpm_fs_list_uuids(missing);
    g_autoptr(GPtrArray) got = NULL;

    assert_int_equal(none->len, 0);
    touch(f, "images/6f1c7e2a-1b2c-4d5e-8f90-a1b2c3d4e5f6");
    touch(f, "images/6F1C7E2A-1B2C-4D5E-8F90-A1B2C3D4E5F6");
    touch(f, "images/6f1c7e2a-1b2c-4d5e-8f90-a1b2c3d4e5f6.tmp");
    touch(f, "images/6f1c7e2a1b2c4d5e8f90a1b2c3d4e5f6");
    touch(f, "images/.6f1c7e2a-1b2c-4d5e-8f90-a1b2c3d4e5f6");
    got = vtpm_fs_list_uuids(f->images);
    assert_int_equal(got->len, 1);
    assert_string_equal(g_ptr_array_index(got, 0), "6f1c7e2a-1b2c-4d5e-8f90-a1b2c3d4e5f6");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_inside),
        T(test_escapes_refused),
        T(test_list_uuids),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
