/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named fault-injection points, for tests of what a crash or a slow step
 * between two steps leaves behind.  Inert unless the environment asks:
 *
 *   VTPMD_CRASH_AT=point[,point...]     SIGKILL this process at the point
 *   VTPMD_DELAY_AT=point=ms[,point=ms]  sleep at the point
 *   VTPMD_PAUSE_DIR=dir                 at a point P for which dir/P exists,
 *                                       create dir/P.paused and wait until
 *                                       dir/P is removed
 *
 * Points are named "<operation>.<step>" (docs/reliability.md lists them);
 * "*" as a delay point matches every point.  Read once at start-up.
 */
#pragma once

void vtpm_inject_init(void);
void vtpm_inject(const char *point);
