/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every handler shares: configuration, the libvirt connection, the
 * cached host capabilities.  Handlers run in the worker pool, several at
 * once (never two for the same instance), so everything here is either
 * immutable after start-up or guarded.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "caps.h"
#include "config.h"
#include "ek.h"
#include "keywrap.h"
#include "virt.h"

typedef struct vtpm_broker vtpm_broker;
typedef struct vtpm_checkpointer vtpm_checkpointer;

/* An immutable capabilities snapshot; shared by reference. */
typedef struct {
    vtpm_caps *caps;
    GBytes *packed; /* the get_capabilities result map, packed */
    /* NULL when libvirt answered the probe; else why it could not be asked.
     * Such a snapshot says nothing about the host, only about the moment. */
    char *unreachable;
} vtpm_caps_snapshot;

typedef struct vtpm_worker {
    vtpm_config *cfg;        /* immutable after start */
    vtpm_virt *virt;
    vtpm_broker *amqp;         /* for publishing capability changes */
    vtpm_proto_limits limits;
    char *virt_type;         /* resolved "qemu" | "kvm" (worker/accel.h) */
    char *virt_type_reason;  /* why: configured, or what auto found */
    vtpm_keyring *keys;      /* deployment keys; immutable after start */
    vtpm_checkpointer *ckpt; /* NULL: checkpoints off (worker/checkpointer.h) */
    vtpm_ek_ca *ek_ca;       /* [vtpm] ek_ca_cert/key; NULL: unset; immutable after start */
    /* The PCR banks this host's swtpm implements (bits of vtpm_pcr_bank),
     * probed at start when swtpm is enabled; why not, when it failed. */
    unsigned pcr_banks;
    char *pcr_banks_error;

    GMutex caps_lock;
    vtpm_caps_snapshot *caps; /* guarded by caps_lock; never NULL after start */
} vtpm_worker;

int vtpm_worker_init(vtpm_worker *w, vtpm_config *cfg, vtpm_error *err);
void vtpm_worker_clear(vtpm_worker *w);

/* A reference to the current snapshot (release with
 * vtpm_caps_snapshot_unref). */
vtpm_caps_snapshot *vtpm_worker_caps(vtpm_worker *w);
void vtpm_caps_snapshot_unref(vtpm_caps_snapshot *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_caps_snapshot, vtpm_caps_snapshot_unref)

/* Probe libvirt and the host again; replace the snapshot.  When the traits
 * or reasons changed (or @announce), publish the snapshot to the topic
 * exchange with routing key capabilities.<host>.  Never fails.  A libvirt
 * that cannot be asked keeps the last probed snapshot (an outage is not a
 * change of what the host can do); only when there is none yet does the
 * snapshot become one without traits that says why. */
void vtpm_worker_refresh_caps(vtpm_worker *w, bool announce);

/* Publish the current snapshot (on every broker (re)connect). */
void vtpm_worker_announce_caps(vtpm_worker *w);
