/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "inject.h"

static GHashTable *crash_at; /* point -> unused */
static GHashTable *delay_at; /* point -> ms */
static GOnce once = G_ONCE_INIT;

static gpointer
load(gpointer data)
{
    const char *c = g_getenv("VTPMD_CRASH_AT");
    const char *d = g_getenv("VTPMD_DELAY_AT");

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
    if (crash_at || delay_at)
        g_warning("fault injection active: VTPMD_CRASH_AT=%s VTPMD_DELAY_AT=%s", c ? c : "",
                  d ? d : "");
    return NULL;
}

void
vtpm_inject_init(void)
{
    g_once(&once, load, NULL);
}

void
vtpm_inject(const char *point)
{
    gpointer ms;

    vtpm_inject_init();
    if (delay_at && (g_hash_table_lookup_extended(delay_at, point, NULL, &ms) ||
                     g_hash_table_lookup_extended(delay_at, "*", NULL, &ms)))
        g_usleep((gulong)GPOINTER_TO_UINT(ms) * 1000);
    if (crash_at && g_hash_table_contains(crash_at, point)) {
        g_warning("fault injection: crashing at %s", point);
        /* SIGKILL, not abort(): no handler, no core, no flushing — what a
         * power cut or the OOM killer leaves. */
        kill(getpid(), SIGKILL);
    }
}
