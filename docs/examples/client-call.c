/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvtpmclient by example (docs/client.md): list the workers, or destroy
 * an instance's domain and vTPM on one of them, retrying what may be
 * retried.
 *
 *   client-call URL hosts
 *   client-call URL destroy HOST UUID
 *
 * URL is a broker URL as vtpmd's [amqp] url (amqp://guest:guest@127.0.0.1/
 * for instance).  Exit: 0 ok, 1 a fault (printed), 2 usage.
 *
 *   cc -std=c99 client-call.c $(pkg-config --cflags --libs vtpmclient)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <vtpm/client.h>

static int
print_fault(const char *what, const vtpm_client_fault *f)
{
    fprintf(stderr, "%s: %s: %s (%s, %s", what, f->name, f->message,
            f->details.source == VTPM_CLIENT_SOURCE_WORKER ? "from the worker" : "from the client",
            f->retryable ? "retryable" : "not retryable");
    if (f->details.attempts)
        fprintf(stderr, ", %u attempts", f->details.attempts);
    if (f->details.message_id[0])
        fprintf(stderr, ", message_id %s", f->details.message_id);
    fprintf(stderr, ")\n");
    return 1;
}

/* Every worker that answers a broadcast within 2 s. */
static int
list_hosts(vtpm_client *c)
{
    vtpm_client_replies *l = NULL;
    vtpm_client_fault f;

    if (vtpm_client_capabilities_all(c, 2000, &l, &f) < 0)
        return print_fault("get_capabilities", &f);
    for (size_t i = 0; i < vtpm_client_replies_count(l); i++)
        printf("%s\n", vtpm_client_replies_host(l, i));
    vtpm_client_replies_free(l);
    return 0;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* destroy {instance: {uuid}}: sent again while the fault is retryable
 * (libvirtd restarting, the worker busy, no reply yet), always with the
 * same message_id, for at most a minute. */
static int
destroy(vtpm_client *c, const char *host, const char *uuid)
{
    vtpm_client_args *a = vtpm_client_args_new();
    vtpm_client_call_opts o = { .timeout_ms = 60000, .deadline_ms = now_ms() + 60000 };
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;
    const void *args;
    size_t len, n = 0;
    int rc;

    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "instance");
    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "uuid");
    vtpm_client_args_str(a, uuid);
    rc = vtpm_client_args_data(a, &args, &len, &f);
    if (rc == 0)
        rc = vtpm_client_call_with_retry(c, host, "destroy", args, len, &o, NULL, &r, &f);
    vtpm_client_args_free(a);
    if (rc < 0)
        return print_fault("destroy", &f);
    /* The result is a msgpack map ({destroyed, vtpm_state}): unpack it with
     * any msgpack library. */
    vtpm_client_reply_result(r, NULL, &n, NULL);
    printf("destroyed %s on %s after %u attempt(s); result: %zu bytes of msgpack\n", uuid, host,
           f.details.attempts, n);
    vtpm_client_reply_free(r);
    return 0;
}

int
main(int argc, char **argv)
{
    vtpm_client_options opts = { 0 };
    vtpm_client *c = NULL;
    vtpm_client_fault f;
    int rc;

    if (!(argc == 3 && strcmp(argv[2], "hosts") == 0) &&
        !(argc == 5 && strcmp(argv[2], "destroy") == 0)) {
        fprintf(stderr, "usage: %s URL hosts | URL destroy HOST UUID\n", argv[0]);
        return 2;
    }
    opts.url = argv[1];
    if (vtpm_client_connect(&opts, &c, &f) < 0)
        return print_fault("connect", &f);
    rc = argc == 3 ? list_hosts(c) : destroy(c, argv[3], argv[4]);
    vtpm_client_free(c);
    return rc;
}
