import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
