/**
 * A system's serial console and display on this node: its console log read from an offset, what
 * a console's user typed sent to the guest's serial port, and whether its VNC display may show.
 */
import { replyLater, type ActorContext } from '../../runtime/actor.js';
import { AcpError } from '../../runtime/errors.js';
import { readConsole } from '../../adapters/guest-state.js';
import { guestFiles } from '../vmm/index.js';
import type { Running } from './schema.js';
import type { GuestVmms } from './vmms.js';

/** The hypervisor's parts that the console uses. */
export interface ConsoleHost {
  readonly ctx: ActorContext;
  readonly node: string;
  readonly home: string;
  readonly vmms: GuestVmms;
  requireEntry(id: string): Running;
}

export class GuestConsole {
  constructor(private readonly h: ConsoleHost) {}

  /** Part of the console log (system.console), from `offset` (bytes). */
  read(systemId: string, offset: number, maxBytes: number) {
    const { node } = this.h;
    const read = readConsole(guestFiles(this.h.home, systemId).consoleLog, offset, maxBytes);
    if (read === undefined) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' has no console log on node '${node}' (it has not run here)`);
    return { type: 'system.console', id: systemId, node, ...read };
  }

  /** What a console's user typed (system.console.input), for the guest's serial port. */
  input(systemId: string, data: string) {
    const { ctx, node } = this.h;
    const entry = this.h.requireEntry(systemId);
    if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot type into system '${systemId}': it is ${entry.state} on ${node} (start it first)`);
    return replyLater(ctx.ref(this.h.vmms.path(systemId)).ask({ type: 'vmm.console.input', data }, { timeoutMs: 10_000 }).then(() => ({ type: 'system.console.sent', id: systemId, node })));
  }

  /** Whether the web UI may show the system's display here (system.display). */
  display(systemId: string) {
    const { node } = this.h;
    const entry = this.h.requireEntry(systemId);
    if (entry.spec.display !== 'vnc' || entry.spec.driver !== 'qemu') throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `system '${systemId}' has no display (give it display: 'vnc' and the qemu driver, then restart it)`);
    if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `system '${systemId}' is ${entry.state} on ${node}: its display shows while it runs`);
    return { type: 'system.display', id: systemId, node, display: 'vnc' };
  }
}
