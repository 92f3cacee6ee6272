/**
 * DPDK VPP, through `vppctl`: whether VPP runs here, and the command lines that make a VLAN
 * sub-interface. VPP's CLI prints text, not JSON, so only its exit status and its errors count.
 */

import { AcpError, errorMessage } from '../runtime/errors.js';
import { run } from './iproute2.js';

export type VppAvailability = { readonly ok: true; readonly version: string } | { readonly ok: false; readonly why: string };

/** Whether `vppctl` is installed and a VPP answers it (`vppctl show version`). */
export async function vppAvailable(): Promise<VppAvailability> {
  try {
    const version = (await run('vppctl', ['show', 'version'], 5000)).trim();
    // vppctl exits 0 with this message when no VPP listens on its socket.
    if (/clib_socket_init|connection refused|no such file/i.test(version)) return { ok: false, why: `vppctl is installed but no VPP is running (vppctl show version: ${version.slice(0, 120)})` };
    return { ok: true, version };
  } catch (error) {
    if (error instanceof AcpError && error.code === 'ACP_ERR_NETWORK_TOOL_MISSING') return { ok: false, why: 'vppctl is not installed on this node (install VPP and start it)' };
    return { ok: false, why: `vppctl cannot reach a running VPP: ${errorMessage(error)}` };
  }
}

function checkInterface(name: string): string {
  // VPP's interface names (GigabitEthernet0/8/0) carry slashes: letters, digits, / . _ - only.
  if (!/^[A-Za-z0-9][A-Za-z0-9/._-]{0,63}$/.test(name)) throw new AcpError('ACP_ERR_NETWORK_COMMAND', `refusing to run vppctl on '${name}': not a VPP interface name`);
  return name;
}

/** The vppctl argument lists that make `<uplink>.<vid>` and bring it up (exported for the unit tests). */
export function vppCreateCommands(uplink: string, vid: number): string[][] {
  if (!Number.isInteger(vid) || vid < 1 || vid > 4094) throw new AcpError('ACP_ERR_NETWORK_COMMAND', `a VLAN id is 1-4094, not ${vid}`);
  const parent = checkInterface(uplink);
  return [
    ['create', 'sub-interfaces', parent, String(vid)],
    ['set', 'interface', 'state', `${parent}.${vid}`, 'up'],
  ];
}

export function vppDeleteCommands(uplink: string, vid: number): string[][] {
  return [['delete', 'sub-interface', `${checkInterface(uplink)}.${vid}`]];
}

/** Runs the commands in order; the first failure is the error (it names the command). */
export async function vppRun(commands: readonly string[][]): Promise<void> {
  for (const args of commands) await run('vppctl', args);
}

