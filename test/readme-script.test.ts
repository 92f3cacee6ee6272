import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { allRunning, makeHome, startDaemon } from './helpers/node.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The first ```js block after README's "## Scripts" heading: what a user would copy. */
function readmeScript(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Scripts'));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error("README's Scripts section has no js block");
  return match[1]!;
}

test("README's script runs against a live node and prints the pong's incarnation and every service running", async (t) => {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  // A project of the user's, outside the repository, with the package installed as README says.
  const dir = mkdtempSync(join(tmpdir(), 'acp-script-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'my-scripts', version: '1.0.0', private: true, type: 'module' }));
  await new Promise<void>((resolve, reject) => {
    execFile('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', root], { cwd: dir, timeout: 120_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`npm install ${root} failed: ${stderr || error.message}`));
      else resolve();
    });
  });
  writeFileSync(join(dir, 'script.mjs'), readmeScript());
  const output = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [join(dir, 'script.mjs')], { cwd: dir, env: { ...process.env, ACP_HOME: home }, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`script failed: ${stderr || error.message}`));
      else resolve(stdout);
    });
  });
  const [incarnation, services] = output.trim().split(' ', 2);
  t.is(Number(incarnation), daemon.system.identity.incarnation);
  const states = output.trim().split(' ').slice(1);
  t.is(states.length, 10, services);
  for (const state of states) t.regex(state, /^[a-z]+:running$/);
});
