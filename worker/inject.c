/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "inject.h"

static GHashTable *crash_at; /* point -> unused */
static GHashTable *delay_at; /* point -> ms */
static char *pause_dir;
static GOnce once = G_ONCE_INIT;

static gpointer
load(gpointer data)
{
    const char *c = g_getenv("VTPMD_CRASH_AT");
    const char *d = g_getenv("VTPMD_DELAY_AT");
    const char *pd = g_getenv("VTPMD_PAUSE_DIR");

    if (c && *c) {
        g_auto(GStrv) v = g_strsplit(c, ",", 64);

        crash_at = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        for (char **p = v; *p; p++)
            if (**p)
                g_hash_table_add(crash_at, g_strstrip(g_strdup(*p)));
    }
    if (d && *d) {
        g_auto(GStrv) v = g_strsplit(d, ",", 64);

        delay_at = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        for (char **p = v; *p; p++) {
            char *eq = strchr(*p, '=');
            guint64 ms;

            if (!eq || !g_ascii_string_to_unsigned(eq + 1, 10, 0, 600000, &ms, NULL))
                continue;
            g_hash_table_insert(delay_at, g_strndup(*p, eq - *p), GUINT_TO_POINTER((guint)ms));
        }
    }
    if (pd && *pd)
        pause_dir = g_strdup(pd);
    if (crash_at || delay_at || pause_dir)
        g_warning("fault injection active: VTPMD_CRASH_AT=%s VTPMD_DELAY_AT=%s "
                  "VTPMD_PAUSE_DIR=%s",
                  c ? c : "", d ? d : "", pd ? pd : "");
    return NULL;
}

void
vtpm_inject_init(void)
{
    g_once(&once, load, NULL);
}

/* Hold this thread while <pause_dir>/<point> exists, having created
 * <point>.paused to say so: the test does something to the world outside
 * (kills libvirtd) at exactly this step, then removes the file.  Only this
 * thread waits; the rest of vtpmd (the broker connection, libvirt's event
 * loop) runs on, as it would while a step is slow. */
static void
pause_at(const char *point)
{
    g_autofree char *arm = g_build_filename(pause_dir, point, NULL);
    g_autofree char *mark = NULL;
    int fd;

    if (access(arm, F_OK) != 0)
        return;
    mark = g_strconcat(arm, ".paused", NULL);
    g_warning("fault injection: pausing at %s until %s is removed", point, arm);
    fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        g_warning("fault injection: cannot create %s: %s", mark, g_strerror(errno));
    else
        close(fd);
    while (access(arm, F_OK) == 0)
        g_usleep(20 * 1000);
    (void)unlink(mark);
    g_warning("fault injection: resuming at %s", point);
}

void
vtpm_inject(const char *point)
{
    gpointer ms;

    vtpm_inject_init();
    if (delay_at && (g_hash_table_lookup_extended(delay_at, point, NULL, &ms) ||
                     g_hash_table_lookup_extended(delay_at, "*", NULL, &ms)))
        g_usleep((gulong)GPOINTER_TO_UINT(ms) * 1000);
    if (pause_dir)
        pause_at(point);
    if (crash_at && g_hash_table_contains(crash_at, point)) {
        g_warning("fault injection: crashing at %s", point);
        /* SIGKILL, not abort(): no handler, no core, no flushing — what a
         * power cut or the OOM killer leaves. */
        kill(getpid(), SIGKILL);
    }
}
