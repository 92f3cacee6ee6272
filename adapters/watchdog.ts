/**
 * The fence guard's hold on a hardware watchdog (/dev/watchdog, or a watchdog multiplexer's FIFO):
 * opened when the guard is armed, written every check while armed, and closed with the magic 'V'
 * (which stops the device without a reset) when the guard is disarmed or has fired (its guests are
 * dead then: a reset adds nothing). What the watchdog is for is the rest: a guard that is killed or
 * hangs while armed stops writing, and the hardware resets the host.
 */
import { closeSync, constants, openSync, statSync, writeSync } from 'node:fs';
import { AcpError } from '../runtime/errors.js';

export class Watchdog {
  private fd: number | null = null;
  private lastError = '';

  constructor(
    private readonly path: string,
    private readonly say: (event: Record<string, unknown>) => void,
  ) {}

  get open(): boolean {
    return this.fd !== null;
  }

  /** Opens the device (once) and writes to it. Non-blocking: a FIFO with no reader is reported, and tried again at the next call. */
  keepAlive(): void {
    try {
      if (this.fd === null) {
        this.fd = openSync(this.path, constants.O_WRONLY | constants.O_APPEND | constants.O_NONBLOCK);
        this.lastError = '';
        this.say({ event: 'watchdog-open', path: this.path });
      }
      writeSync(this.fd, '\0');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      // A full FIFO (its reader is slow) is no failure: the device is alive.
      if (code === 'EAGAIN') return;
      if (code !== this.lastError) this.say({ event: 'watchdog-unavailable', path: this.path, error: code });
      this.lastError = code;
      this.closeQuietly();
    }
  }

  /** Stops the watchdog cleanly (the magic close). */
  release(why: string): void {
    if (this.fd === null) return;
    try {
      writeSync(this.fd, 'V');
    } catch {
      // Closed below all the same; a device that missed the 'V' may reset the host, which is safe.
    }
    this.closeQuietly();
    this.say({ event: 'watchdog-closed', path: this.path, why });
  }

  private closeQuietly(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {
      // Already gone.
    }
    this.fd = null;
  }
}

/** The watchdog the fence guard is to keep alive: checked here, so a wrong path stops the start with a clear error. */
export function checkWatchdogPath(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  if (!path.startsWith('/') || path.split('/').includes('..')) throw new AcpError('ACP_ERR_CLI_USAGE', `the watchdog must be an absolute path without '..', not '${path}'`);
  let stats;
  try {
    stats = statSync(path);
  } catch {
    throw new AcpError('ACP_ERR_CLI_USAGE', `no watchdog device at ${path}: load the host's watchdog driver (e.g. softdog) or leave the watchdog off`);
  }
  if (!stats.isCharacterDevice() && !stats.isFIFO()) throw new AcpError('ACP_ERR_CLI_USAGE', `${path} is not a watchdog: give a character device such as /dev/watchdog, or a watchdog multiplexer's FIFO`);
  return path;
}
