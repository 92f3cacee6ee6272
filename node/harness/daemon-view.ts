/** A harness node's daemon seen from outside: its pidfile, its log, the CLI run in its namespace, and what it reports. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { AcpClient } from '../client.js';
import { homePaths } from '../../runtime/config.js';
import type { HarnessCliResult } from './options.js';

const CLI = fileURLToPath(new URL('../../cli/acp.js', import.meta.url));

export function readPid(home: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(homePaths(home).pidfile, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function logTail(home: string, lines = 15): string {
  try {
    return readFileSync(homePaths(home).logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** AcpClient does not say whether its connection has closed; its private field does. */
export function isClosed(client: AcpClient): boolean {
  return (client as unknown as { closedError?: unknown }).closedError !== undefined;
}

export function nodeStates(nodes: unknown): Map<string, string> {
  const states = new Map<string, string>();
  if (Array.isArray(nodes)) {
    for (const entry of nodes as { node?: unknown; name?: unknown; state?: unknown }[]) {
      const name = typeof entry?.node === 'string' ? entry.node : entry?.name;
      if (typeof name === 'string' && typeof entry.state === 'string') states.set(name, entry.state);
    }
  } else if (nodes && typeof nodes === 'object') {
    for (const [name, entry] of Object.entries(nodes as Record<string, { state?: unknown } | string>)) {
      const state = typeof entry === 'string' ? entry : entry?.state;
      if (typeof state === 'string') states.set(name, state);
    }
  }
  return states;
}

export function runIn(ns: string, home: string, args: readonly string[], timeoutMs: number): Promise<HarnessCliResult> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, CLI, '--home', home, ...args], { timeout: timeoutMs, env: { ...process.env, ACP_HOME: '' } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: error && !stderr ? error.message : stderr });
    });
  });
}
