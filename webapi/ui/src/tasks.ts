/** The task log: each action the user starts, its progress and its result or error message; an action already under way is not started twice. */
import { h } from './dom.js';
import { WireError } from './wire.js';

export class TaskLog {
  readonly element = h('section#tasks', { 'aria-label': 'Task log' }, h('h2', {}, 'Tasks'), h('ol'));
  /** Titles of the tasks under way: the same action again (a double click) waits for the first to end. */
  private readonly running = new Set<string>();

  async run<T>(title: string, work: () => Promise<T>): Promise<T | undefined> {
    if (this.running.has(title)) return undefined;
    this.running.add(title);
    try {
      return await this.logged(title, work);
    } finally {
      this.running.delete(title);
    }
  }

  private async logged<T>(title: string, work: () => Promise<T>): Promise<T | undefined> {
    const status = h('span.task-status.running', {}, 'running');
    const detail = h('span.task-detail');
    const started = new Date();
    const item = h('li.task', {}, h('time', {}, started.toLocaleTimeString()), ' ', h('b', {}, title), ' ', status, ' ', detail);
    this.element.querySelector('ol')!.prepend(item);
    try {
      const result = await work();
      status.textContent = 'done';
      status.className = 'task-status ok';
      detail.textContent = `${Date.now() - started.getTime()} ms`;
      return result;
    } catch (error) {
      status.textContent = 'failed';
      status.className = 'task-status failed';
      detail.textContent = error instanceof WireError ? `${error.code}: ${error.message}` : String((error as Error).message ?? error);
      return undefined;
    }
  }
}
