/**
 * Whether the host itself is going down, and how: what a node's `conditional` shutdown policy turns
 * on (a reboot freezes its HA systems, a power-off fails them over, as in pve-ha-manager). Asked of
 * systemd (`systemctl list-jobs`): a queued reboot.target or kexec.target is a reboot, a queued
 * poweroff.target or halt.target a power-off. A host without systemd, or whose systemctl does not
 * answer within the timeout, is taken as not going down (only acpd stops).
 */
import { execProgram } from './exec.js';
import { existsSync } from 'node:fs';

export type HostShutdown = 'reboot' | 'poweroff' | null;

const TIMEOUT_MS = 3000;

/** The kind of host shutdown a `systemctl list-jobs --no-legend` listing shows, or null. */
export function hostShutdownOf(listing: string): HostShutdown {
  const units = listing
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[1])
    .filter((unit): unit is string => unit !== undefined);
  if (units.some((unit) => unit === 'reboot.target' || unit === 'kexec.target')) return 'reboot';
  if (units.some((unit) => unit === 'poweroff.target' || unit === 'halt.target')) return 'poweroff';
  return null;
}

/** Asks systemd whether the host is rebooting or powering off now (at once null where systemd is not init, as sd_booted() tells). */
export function hostShutdown(): Promise<HostShutdown> {
  if (!existsSync('/run/systemd/system')) return Promise.resolve(null);
  return execProgram('systemctl', ['list-jobs', '--no-legend', '--no-pager'], { timeoutMs: TIMEOUT_MS, maxBuffer: 1024 * 1024 }).then((result) =>
    result.outcome === 'ok' ? hostShutdownOf(result.stdout) : null,
  );
}
