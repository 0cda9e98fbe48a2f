/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Held lines beyond this are written at once: a loop turn of hundreds of
 * requests must not wait for its flush. */
#define HOLD_MAX 65536

static struct {
    GMutex lock;
    FILE *file;         /* NULL: stderr */
    char *path;
    GLogLevelFlags max; /* most verbose level written */
    int pid;            /* cached: one syscall less per line */
    GString *held;      /* VTPM_BATCH lines not written yet */
} logs = { .max = G_LOG_LEVEL_INFO };

static const char *
level_name(GLogLevelFlags l)
{
    if (l & G_LOG_LEVEL_ERROR)
        return "error";
    if (l & G_LOG_LEVEL_CRITICAL)
        return "critical";
    if (l & G_LOG_LEVEL_WARNING)
        return "warning";
    if (l & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO))
        return "info";
    return "debug";
}

static int
level_rank(GLogLevelFlags l)
{
    if (l & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
        return 0;
    if (l & G_LOG_LEVEL_WARNING)
        return 1;
    if (l & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO))
        return 2;
    return 3;
}

bool
vtpm_log_parse_level(const char *name, GLogLevelFlags *out)
{
    static const struct { const char *name; GLogLevelFlags level; } levels[] = {
        { "debug", G_LOG_LEVEL_DEBUG },     { "info", G_LOG_LEVEL_INFO },
        { "warning", G_LOG_LEVEL_WARNING }, { "error", G_LOG_LEVEL_CRITICAL },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(levels); i++) {
        if (g_ascii_strcasecmp(name, levels[i].name) == 0) {
            *out = levels[i].level;
            return true;
        }
    }
    return false;
}

/* With logs.lock held. */
static void
write_held(FILE *f)
{
    if (!logs.held || !logs.held->len)
        return;
    fwrite(logs.held->str, 1, logs.held->len, f);
    g_string_truncate(logs.held, 0);
}

static GLogWriterOutput
writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer user)
{
    const char *msg = NULL;
    bool hold = false;
    char ts[32];
    struct timespec now;
    struct tm tm;
    FILE *f;

    (void)user;
    if (level_rank(level) > level_rank(logs.max))
        return G_LOG_WRITER_HANDLED;
    for (gsize i = 0; i < n; i++) {
        if (strcmp(fields[i].key, "MESSAGE") == 0)
            msg = fields[i].value;
        else if (strcmp(fields[i].key, "VTPM_BATCH") == 0)
            hold = true;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    g_mutex_lock(&logs.lock);
    f = logs.file ? logs.file : stderr;
    if (hold) {
        g_string_append_printf(logs.held, "%s.%03ldZ vtpmd[%d]: %s: %s\n", ts,
                               now.tv_nsec / 1000000, logs.pid, level_name(level),
                               msg ? msg : "");
        if (logs.held->len >= HOLD_MAX) {
            write_held(f);
            fflush(f);
        }
    } else {
        write_held(f);
        fprintf(f, "%s.%03ldZ vtpmd[%d]: %s: %s\n", ts, now.tv_nsec / 1000000, logs.pid,
                level_name(level), msg ? msg : "");
        fflush(f);
    }
    g_mutex_unlock(&logs.lock);
    return G_LOG_WRITER_HANDLED;
}

void
vtpm_log_flush(void)
{
    FILE *f;

    if (!logs.held)
        return; /* not installed (unit tests): GLib's writer holds nothing */
    g_mutex_lock(&logs.lock);
    if (logs.held->len) {
        f = logs.file ? logs.file : stderr;
        write_held(f);
        fflush(f);
    }
    g_mutex_unlock(&logs.lock);
}

int
vtpm_log_reopen(void)
{
    FILE *f;

    if (!logs.path)
        return 0;
    f = fopen(logs.path, "ae");
    if (!f)
        return -errno;
    g_mutex_lock(&logs.lock);
    if (logs.file) {
        /* What is held belongs to the old file, which is where a reader
         * of the rotated log looks for it. */
        write_held(logs.file);
        fclose(logs.file);
    }
    logs.file = f;
    g_mutex_unlock(&logs.lock);
    return 0;
}

int
vtpm_log_init(const char *path, GLogLevelFlags max)
{
    int rc;

    logs.max = max;
    logs.pid = (int)getpid();
    g_free(logs.path);
    logs.path = g_strdup(path);
    if ((rc = vtpm_log_reopen()) < 0)
        return rc;
    logs.held = g_string_sized_new(4096);
    g_log_set_writer_func(writer, NULL, NULL);
    return 0;
}

const char *
vtpm_log_path(void)
{
    return logs.path;
}
