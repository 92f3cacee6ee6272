import { readFileSync } from 'node:fs';

/**
 * The entries of a JSON-lines log that a live process may be writing: every complete line, parsed.
 * A last line without its newline is still being written and is left out, so a reader racing the
 * writer sees fewer entries, never a parse error. A missing file has none.
 */
export function logEntries<T>(path: string): T[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as T);
}
