/**
 * A system's serial console in xterm.js: the guest's output read from its console log on the node
 * it runs on (system.console from an offset, as `acp system console --follow`), and what the user
 * types sent to the guest's serial port (system.console.input; operator role).
 */
import { Terminal } from '@xterm/xterm';
import { h } from './dom.js';
import type { TaskLog } from './tasks.js';
import { WireError, type Message, type Wire } from './wire.js';

const FOLLOW_MS = 250;

export class SerialConsole {
  readonly element: HTMLElement;
  private readonly terminal: Terminal;
  private offset = 0;
  private timer: number | undefined;
  private stopped = false;
  private readonly status: HTMLElement;

  constructor(
    private readonly wire: Wire,
    private readonly hypervisor: string,
    private readonly id: string,
    interactive: boolean,
    private readonly tasks: TaskLog,
  ) {
    this.status = h('span.console-status');
    const screen = h('div.terminal-screen');
    this.element = h('div.console', { dataset: { system: id } }, screen, h('p.hint', {}, interactive ? 'Click the console and type: keys go to the guest\'s serial port.' : 'Read only: typing needs the operator role.', ' ', this.status));
    this.terminal = new Terminal({ convertEol: true, rows: 20, cols: 100, fontSize: 13, disableStdin: !interactive, theme: { background: '#0b0f17' } });
    this.terminal.open(screen);
    if (interactive) {
      let queue = Promise.resolve();
      this.terminal.onData((data) => {
        queue = queue.then(() =>
          this.wire.ask(this.hypervisor, { type: 'system.console.input', id: this.id, data }, 10_000).then(
            () => undefined,
            (error: unknown) => void this.tasks.run(`console input to ${this.id}`, () => Promise.reject(error)),
          ),
        );
      });
    }
    void this.follow();
  }

  private async follow(): Promise<void> {
    if (this.stopped) return;
    try {
      const chunk = await this.wire.ask<Message & { data: string; offset: number; size: number }>(this.hypervisor, { type: 'system.console', id: this.id, offset: this.offset }, 10_000);
      if (chunk.data.length > 0) this.terminal.write(chunk.data);
      this.offset = chunk.offset;
      this.status.textContent = '';
      this.element.dataset.bytes = String(this.offset);
    } catch (error) {
      this.status.textContent = error instanceof WireError ? error.message : String(error);
    }
    if (!this.stopped) this.timer = window.setTimeout(() => void this.follow(), FOLLOW_MS);
  }

  destroy(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.terminal.dispose();
  }
}
