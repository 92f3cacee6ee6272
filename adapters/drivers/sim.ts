import { appendFile } from 'node:fs/promises';
import { AcpError } from '../../runtime/errors.js';
import type { GuestExit, GuestHandle, GuestSpec, GuestPaths, IncomingGuest, MigrationCredentials, MigrationListen, SystemDriver } from './driver.js';

/** How long a simulated guest takes to boot. */
const BOOT_MS = 20;

/**
 * Simulated guests: no process, a console log with the same ready line as the test guest, and the
 * same answers as a real one. For development and for scale (thousands per node).
 */
export const simDriver: SystemDriver = {
  name: 'sim',
  async start(id: string, spec: GuestSpec, paths: GuestPaths): Promise<GuestHandle> {
    if (spec.display === 'vnc') throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `system '${id}' asks for a VNC display, but a simulated guest has none: drop display, or use the qemu driver`);
    await new Promise((resolve) => setTimeout(resolve, BOOT_MS));
    await appendFile(paths.consoleLog, `ACP sim guest ${id} (${spec.vcpus} vcpu, ${spec.memoryMiB} MiB) booted\nACP-GUEST-READY\n`);
    return simGuest(id, paths, Date.now());
  },
  async incoming(id: string, _spec: GuestSpec, paths: GuestPaths, _listen: MigrationListen, _credentials: MigrationCredentials, transferred: unknown): Promise<IncomingGuest> {
    // State transfer: the guest keeps the boot time it had on the source.
    const bootedAt = typeof (transferred as { bootedAt?: unknown } | null)?.bootedAt === 'number' ? (transferred as { bootedAt: number }).bootedAt : Date.now();
    await appendFile(paths.consoleLog, `ACP sim guest ${id} arrived, up ${Date.now() - bootedAt} ms\n`);
    return { handle: simGuest(id, paths, bootedAt) };
  },
};

function simGuest(id: string, paths: GuestPaths, bootedAt: number): GuestHandle {
  let finish: (exit: GuestExit) => void = () => undefined;
  const exited = new Promise<GuestExit>((resolve) => {
    finish = resolve;
  });
  let gone = false;
  return {
    pid: undefined,
    accelerator: 'sim',
    migrate: async () => undefined,
    awaitRunning: async () => undefined,
    transferable: () => ({ bootedAt }),
    pause: async () => undefined,
    resume: async () => undefined,
    // As a terminal in cooked mode would: what is typed is echoed, a carriage return as a new line.
    consoleInput: async (data) => {
      if (gone) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `sim guest ${id} is stopped`);
      await appendFile(paths.consoleLog, data.replace(/\r\n?/g, '\n'));
    },
    reset: async () => {
      await appendFile(paths.consoleLog, `ACP sim guest ${id} reset after ${Date.now() - bootedAt} ms\nACP-GUEST-READY\n`);
    },
    stop: async (graceful) => {
      if (gone) return;
      gone = true;
      await appendFile(paths.consoleLog, `ACP sim guest ${id} ${graceful ? 'powered off' : 'stopped'}\n`).catch(() => undefined);
      finish({ crashed: false, reason: graceful ? 'powered off' : 'stopped' });
    },
    exited,
  };
}
