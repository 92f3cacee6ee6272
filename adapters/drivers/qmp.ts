import { connect, type Socket } from 'node:net';
import { AcpError, errorMessage } from '../../runtime/errors.js';

const QMP_COMMAND_MS = 5000;

/**
 * A QMP client on QEMU's Unix socket: JSON lines; every command carries an id that its answer
 * echoes, and has a deadline (a hung QEMU must not hang its VMM); asynchronous events are skipped.
 */
export class Qmp {
  private buffer = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();
  private greeted: (() => void) | undefined;
  private closedError: Error | undefined;
  private resolveClosed: () => void = () => undefined;
  /** Settles when the connection closes (QEMU exited, or this end closed it). */
  readonly closed = new Promise<void>((resolve) => {
    this.resolveClosed = resolve;
  });
  /** QMP's SHUTDOWN event, once QEMU sent it: `guest` when the guest powered itself off. */
  shutdown: { guest: boolean } | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.data(chunk));
    socket.on('close', () => {
      this.fail(new AcpError('ACP_ERR_VMM_FAILED', 'the QMP connection to QEMU closed'));
      this.resolveClosed();
    });
    socket.on('error', (error) => this.fail(new AcpError('ACP_ERR_VMM_FAILED', `QMP: ${error.message}`)));
  }

  static async open(path: string, until: number): Promise<Qmp> {
    for (;;) {
      let qmp: Qmp | undefined;
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const attempt = connect(path, () => resolve(attempt));
          attempt.once('error', reject);
        });
        const opened = new Qmp(socket);
        qmp = opened;
        // The greeting first, then capabilities negotiation.
        await new Promise<void>((resolve, reject) => {
          opened.greeted = resolve;
          setTimeout(() => reject(new Error('no QMP greeting')), 5000).unref();
        });
        await opened.execute('qmp_capabilities');
        return opened;
      } catch (error) {
        qmp?.close();
        if (Date.now() > until) throw new AcpError('ACP_ERR_VMM_FAILED', `QEMU's QMP socket ${path} did not answer: ${errorMessage(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>, timeoutMs = QMP_COMMAND_MS): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new AcpError('ACP_ERR_VMM_FAILED', `QEMU did not answer '${command}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private data(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: { event?: string; data?: { guest?: unknown }; return?: unknown; error?: { desc?: string }; QMP?: unknown; id?: unknown };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        this.socket.destroy(new Error(`QEMU sent a line that is not JSON: ${line.slice(0, 80)}`));
        return;
      }
      if (message.QMP !== undefined) {
        this.greeted?.();
        continue;
      }
      if (message.event === 'SHUTDOWN') this.shutdown = { guest: message.data?.guest === true };
      if (message.event !== undefined || typeof message.id !== 'number') continue;
      const waiter = this.waiting.get(message.id);
      if (!waiter) continue;
      this.waiting.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.error) waiter.reject(new AcpError('ACP_ERR_VMM_FAILED', `QEMU refused: ${message.error.desc ?? 'an error'}`));
      else waiter.resolve(message.return);
    }
  }

  private fail(error: Error): void {
    this.closedError ??= error;
    for (const waiter of this.waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.waiting.clear();
  }
}

