/**
 * README, verbatim: every shell block marked `<!-- readme-test: NAME [node] [qemu] -->` runs as a
 * user would paste it, in bash with `set -e`, against a fresh HOME, and must exit 0. `node`: the
 * test starts a fresh node first (acp up --detach); `qemu`: the block needs QEMU and the test
 * guest. A line whose comment says "until Ctrl-C" streams: it gets SIGINT after a few seconds.
 * When README changes, this test runs what it now says.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { killHomeGuests } from '../adapters/drivers/qemu.js';
import { guestImageDir } from '../adapters/guest-image.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(root, 'dist', 'cli', 'acp.js');
const STREAM_SECONDS = 4;

interface Block {
  name: string;
  flags: Set<string>;
  script: string;
}

function readmeBlocks(): Block[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const blocks: Block[] = [];
  for (const match of readme.matchAll(/<!-- readme-test: ([^>]*?) -->\n```sh\n([\s\S]*?)```/g)) {
    const [name = '', ...flags] = match[1]!.trim().split(/\s+/);
    blocks.push({ name, flags: new Set(flags), script: match[2]! });
  }
  return blocks;
}

/** A streaming line gets SIGINT after a few seconds; what it printed until then is what counts. */
function prepare(script: string): string {
  return script
    .split('\n')
    .map((line) => (/#.*until Ctrl-C/.test(line) ? `timeout -s INT ${STREAM_SECONDS} ${line.replace(/\s+#.*$/, '')} || [ $? -eq 124 ]` : line))
    .join('\n');
}

/** Every home under `dir` with a daemon: stopped with its guests, whatever the block did. */
function stopAll(dir: string): void {
  const walk = (at: string, depth: number): string[] => {
    if (depth > 3 || !existsSync(at)) return [];
    const found = existsSync(join(at, 'run', 'acpd.pid')) ? [at] : [];
    for (const entry of readdirSync(at, { withFileTypes: true })) if (entry.isDirectory()) found.push(...walk(join(at, entry.name), depth + 1));
    return found;
  };
  for (const home of walk(dir, 0)) {
    try {
      execFileSync(process.execPath, [CLI, '--home', home, 'down', '--stop-systems', '--timeout', '1000'], { stdio: 'ignore', timeout: 60_000 });
    } catch {
      // Already gone: down says so, or it failed and the pidfile names a dead process.
    }
    // Guests outlive their daemon: none outlives the test.
    killHomeGuests(home);
  }
}

const blocks = readmeBlocks();
const missingQemu = guestMissing();

test('README marks its user-facing blocks for this test', (t) => {
  t.deepEqual(blocks.map((block) => block.name).sort(), ['cdb', 'chaos', 'first-node', 'logs', 'storage', 'systems', 'tokens', 'two-homes', 'web']);
});

test('README says which services do their work: every service of the tree, none left as a placeholder', (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const paragraph = /\*\*Services so far\.\*\*([^]*?)\n\n/.exec(readme)?.[1] ?? '';
  t.not(paragraph, '', 'README has a **Services so far.** paragraph');
  for (const service of ['Framework', 'API', 'Agent', 'CDB', 'Hypervisor', 'Monitor', 'Network', 'Storage', 'Web API']) {
    t.true(paragraph.includes(service), `'Services so far' does not name ${service}`);
  }
  t.false(/holds its place|arrives with its issue/.test(paragraph), `a working service is described as a placeholder: ${paragraph}`);
});

for (const block of blocks) {
  const register = block.flags.has('qemu') ? runsWhen(missingQemu) : test;
  register.serial(`README block '${block.name}' runs verbatim: every command exits 0${block.flags.has('qemu') && missingQemu ? ` (skipped: ${missingQemu})` : ''}`, async (t) => {
    t.timeout(240_000);
    const home = mkdtempSync(join(tmpdir(), 'acp-readme-'));
    t.teardown(() => {
      stopAll(home);
      rmSync(home, { recursive: true, force: true });
    });
    // `acp` on the PATH, as `npm link` would make it.
    const bin = join(home, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'acp'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
    chmodSync(join(bin, 'acp'), 0o755);
    const env: NodeJS.ProcessEnv = {
      PATH: `${bin}:${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: home,
      ACP_GUEST_DIR: guestImageDir(),
      LANG: 'C.UTF-8',
      ...(process.env.ACP_QEMU ? { ACP_QEMU: process.env.ACP_QEMU } : {}),
    };
    const setup = block.flags.has('node') ? 'acp up --detach >/dev/null\n' : '';
    const script = `set -euo pipefail\n${setup}${prepare(block.script)}`;
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile('bash', ['-c', script], { cwd: root, env, timeout: 200_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
    t.is(result.code, 0, `README block '${block.name}' failed:\n${result.stderr.slice(-3000)}\n--- stdout ---\n${result.stdout.slice(-2000)}`);
  });
}
