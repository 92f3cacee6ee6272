import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isValidName } from '../runtime/path.js';

/**
 * A system's last published state, kept beside its guest in the node's run dir
 * (`<home>/run/vmm/<id>/state.json`): the CDB holds meta in memory only, so this is what tells a
 * restarted daemon which guests ran here, since when, and their history.
 */
export function saveGuestState(runDir: string, state: unknown): void {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const file = join(runDir, 'state.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(state), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** Every system's saved state under `vmmDir` (`<home>/run/vmm`), by id; unreadable ones are left out. */
export function loadGuestStates(vmmDir: string): Map<string, unknown> {
  const states = new Map<string, unknown>();
  let names: string[];
  try {
    names = readdirSync(vmmDir);
  } catch {
    return states;
  }
  for (const name of names.filter(isValidName)) {
    try {
      states.set(name, JSON.parse(readFileSync(join(vmmDir, name, 'state.json'), 'utf8')) as unknown);
    } catch {
      // never saved, or torn: nothing known
    }
  }
  return states;
}

/** Makes a guest's run dir and its console log's dir, private to root. */
export function prepareGuestDirs(runDir: string, consoleLog: string): void {
  mkdirSync(dirname(consoleLog), { recursive: true, mode: 0o700 });
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
}

/** The ids with a run dir under `vmmDir` (`<home>/run/vmm`), valid names only. */
export function guestRunDirs(vmmDir: string): string[] {
  return existsSync(vmmDir) ? readdirSync(vmmDir).filter(isValidName) : [];
}

/** Up to `maxBytes` of a console log from `offset` (clamped to its size); undefined when there is none. */
export function readConsole(file: string, offset: number, maxBytes: number): { data: string; offset: number; size: number } | undefined {
  const size = existsSync(file) ? statSync(file).size : undefined;
  if (size === undefined) return undefined;
  const from = Math.min(offset, size);
  const length = Math.min(maxBytes, size - from);
  const buffer = Buffer.alloc(length);
  if (length > 0) {
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buffer, 0, length, from);
    } finally {
      closeSync(fd);
    }
  }
  return { data: buffer.toString('utf8'), offset: from + length, size };
}
