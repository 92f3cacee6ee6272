/**
 * The layers point one way (docs/design.md, Layout): runtime/ imports nothing of ours above it,
 * supervisors/ only runtime/, adapters/ nothing from actors/ or node/; actors reach the OS only
 * through adapters (no node:fs, node:child_process, node:net or node:dgram in actors/); and a
 * production file over 400 lines says why at its top ("Over 400 lines ..." in its first comment).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const LAYERS = ['runtime', 'supervisors', 'adapters', 'actors', 'node', 'cli', 'webapi'] as const;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const path = join(dir, name);
    if (name === 'ui' && dir === 'webapi') continue;
    if (statSync(join(root, path)).isDirectory()) out.push(...sources(path));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** The top-level folder of each relative import in `file`. */
function importedLayers(file: string): { specifier: string; layer: string | undefined }[] {
  const text = readFileSync(join(root, file), 'utf8');
  const found: { specifier: string; layer: string | undefined }[] = [];
  for (const match of text.matchAll(/^(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)) {
    const specifier = match[1]!;
    if (!specifier.startsWith('.')) {
      found.push({ specifier, layer: undefined });
      continue;
    }
    const target = relative(root, join(root, file, '..', specifier));
    found.push({ specifier, layer: target.split('/')[0] });
  }
  return found;
}

const forbidden: Record<string, readonly string[]> = {
  runtime: ['supervisors', 'adapters', 'actors', 'node', 'cli', 'webapi'],
  supervisors: ['adapters', 'actors', 'node', 'cli', 'webapi'],
  adapters: ['actors', 'supervisors', 'node', 'cli', 'webapi'],
  actors: ['node', 'cli', 'webapi'],
};

test('imports point down: runtime, supervisors and adapters import nothing above them; actors nothing of node, cli or webapi', (t) => {
  const wrong: string[] = [];
  for (const [layer, above] of Object.entries(forbidden)) {
    for (const file of sources(layer)) {
      for (const { specifier, layer: target } of importedLayers(file)) {
        if (target !== undefined && above.includes(target)) wrong.push(`${file} imports ${specifier}`);
      }
    }
  }
  t.deepEqual(wrong, []);
  t.true(LAYERS.every((layer) => sources(layer).length > 0), 'every layer has sources (the walk found them)');
});

test('actors reach the OS only through adapters: no node:fs, node:child_process, node:net or node:dgram in actors/', (t) => {
  const wrong: string[] = [];
  for (const file of sources('actors')) {
    for (const { specifier } of importedLayers(file)) {
      if (/^node:(fs|fs\/promises|child_process|net|dgram)$/.test(specifier)) wrong.push(`${file} imports ${specifier}`);
    }
  }
  t.deepEqual(wrong, []);
});

test('a production file over 400 lines says at its top why it is one file', (t) => {
  const long: string[] = [];
  for (const layer of LAYERS) {
    for (const file of sources(layer)) {
      const text = readFileSync(join(root, file), 'utf8');
      const lines = text.split('\n').length;
      if (lines > 400 && !/Over 400 lines/.test(text.slice(0, 3000))) long.push(`${file}: ${lines} lines`);
    }
  }
  t.deepEqual(long, []);
});

test('services get narrow capabilities: only the listeners (agent, API, web API) use the gateway, and no service imports the ActorSystem class', (t) => {
  const listeners = /^(actors\/agent\/|actors\/api\/|webapi\/)/;
  const wrong: string[] = [];
  for (const layer of ['actors', 'webapi']) {
    for (const file of sources(layer)) {
      const text = readFileSync(join(root, file), 'utf8');
      if (/deps\.gateway|gateway:/.test(text) && !listeners.test(file)) wrong.push(`${file} uses the gateway`);
      if (/import[^;]*\bActorSystem\b[^;]*from/.test(text)) wrong.push(`${file} imports ActorSystem`);
    }
  }
  t.deepEqual(wrong, []);
});
