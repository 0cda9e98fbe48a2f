/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Start-up safety, as Nova's libvirt driver does it (_check_vtpm_support
 * in init_host): a host whose configuration cannot serve the vTPMs it
 * has, or offers vTPMs it cannot create, refuses to start, with a message
 * that names the fix, rather than failing later one request at a time.
 *
 *   - [libvirt] swtpm_enabled = true: swtpm, swtpm_setup and swtpm_ioctl
 *     (what libvirt runs) must be on PATH, and swtpm_user / swtpm_group
 *     must exist on this host.
 *   - [libvirt] swtpm_enabled = false: no domain of [libvirt] uri may have
 *     an emulated TPM (a <tpm> with <backend type='emulator'>); this
 *     vtpmd would not manage their state.
 */
#pragma once

#include <stdbool.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"
#include "config.h"

/* With swtpm enabled: the binaries on $PATH, the user and the group.
 * Nothing to check when it is disabled.  TPMUnsupported, naming the
 * package or the configuration key to fix. */
int vtpm_preflight_swtpm(const vtpm_config *cfg, vtpm_error *err);

/* With swtpm disabled: no domain on @conn has an emulated TPM.
 * InstanceConflict naming them (up to 3) and the fix; HypervisorError
 * when libvirt cannot list them.  Nothing to check when it is enabled. */
int vtpm_preflight_domains(virConnectPtr conn, const vtpm_config *cfg, vtpm_error *err);

/* Whether domain XML @xml has a <devices><tpm> with an emulator backend.
 * Internal on XML that does not parse. */
int vtpm_preflight_xml_has_vtpm(const char *xml, bool *out, vtpm_error *err);
