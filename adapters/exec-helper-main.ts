/**
 * The exec helper's process (adapters/exec.ts): runs the programs its parent asks for and answers
 * over the IPC channel. It is small, so forking from it is cheap; a fork from the daemon itself
 * holds the daemon's event loop for as long as copying its page tables takes. When the parent
 * goes, so does the helper, and the programs it is still running.
 */
import type { ChildProcess } from 'node:child_process';
import { runDirect, type ExecRequest } from './exec.js';

const running = new Set<ChildProcess>();

process.on('message', (request: ExecRequest) => {
  let child: ChildProcess | undefined;
  child = runDirect(request, (result) => {
    if (child) running.delete(child);
    if (process.connected) process.send?.({ id: request.id, ...result });
  });
  if (child) running.add(child);
});

// Ctrl-C or systemd's SIGTERM reaches the whole process group: the daemon then stops cleanly and
// may still run programs on its way down, so the helper goes only when its parent does.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => undefined);

process.on('disconnect', () => {
  for (const child of running) child.kill('SIGKILL');
  process.exit(0);
});
