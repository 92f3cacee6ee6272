import { appendFile } from 'node:fs/promises';
import type { SystemObject } from '../../actors/model.js';
import type { GuestExit, GuestHandle, GuestPaths, SystemDriver } from './driver.js';

/** How long a simulated guest takes to boot. */
const BOOT_MS = 20;

/**
 * Simulated guests: no process, a console log with the same ready line as the test guest, and the
 * same answers as a real one. For development and for scale (thousands per node).
 */
export const simDriver: SystemDriver = {
  name: 'sim',
  async start(id: string, spec: SystemObject, paths: GuestPaths): Promise<GuestHandle> {
    const bootedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, BOOT_MS));
    await appendFile(paths.consoleLog, `ACP sim guest ${id} (${spec.vcpus} vcpu, ${spec.memoryMiB} MiB) booted\nACP-GUEST-READY\n`);
    let finish: (exit: GuestExit) => void = () => undefined;
    const exited = new Promise<GuestExit>((resolve) => {
      finish = resolve;
    });
    let gone = false;
    return {
      pid: undefined,
      accelerator: 'sim',
      pause: async () => undefined,
      resume: async () => undefined,
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
  },
};
