/**
 * `acp chaos run scenarios/kill-primary.json --harness 3`: three real daemons in network
 * namespaces, an HA sim system on the monitor primary, the primary killed with kill -9 (daemon and
 * fence guard): the run must pass (exit 0), print its recovery table, and write a report whose
 * recovery time for the kill is within the bound.
 */
import { spawn } from 'node:child_process';
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChaosReport } from '../node/chaos/run.js';
import { harnessAvailable } from '../node/harness/index.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const ACP = fileURLToPath(new URL('../cli/acp.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function acp(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ACP, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

runsWhen(available.ok ? undefined : available.why)('acp chaos run scenarios/kill-primary.json --harness 3 passes and reports the recovery time of the killed primary', async (t) => {
  t.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'acp-chaos-'));
  try {
    const out = join(dir, 'report.json');
    const result = await acp(['chaos', 'run', 'scenarios/kill-primary.json', '--harness', '3', '--report', out]);
    t.is(result.code, 0, `${result.stdout}\n${result.stderr}`);
    t.regex(result.stdout, /STEP\s+FAULT\s+NODE\s+RECOVERY\s+RUNNING/);
    t.regex(result.stdout, /kill-primary: passed/);
    const report = JSON.parse(readFileSync(out, 'utf8')) as ChaosReport;
    t.true(report.passed);
    t.deepEqual(report.violations, []);
    t.deepEqual(report.nodes, ['n1', 'n2', 'n3']);
    t.is(report.recoveries.length, 1);
    const [kill] = report.recoveries;
    t.is(kill!.text, 'kill primary');
    t.true(['n1', 'n2', 'n3'].includes(kill!.node ?? ''), `the primary killed: ${kill!.node}`);
    // The system ran on the primary: it had to fail over, which takes a lease and a fence timeout.
    t.true(kill!.recoveryMs !== null && kill!.recoveryMs > 1000 && kill!.recoveryMs <= report.boundMs, `recovered in ${kill!.recoveryMs} ms`);
    t.not(kill!.runningOn?.web, kill!.node, 'web ran elsewhere once recovered');
    t.true(report.samples > 20, `${report.samples} samples`);
    t.log(`kill primary ${kill!.node}: recovered in ${kill!.recoveryMs} ms; ${report.samples} samples`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('acp chaos run with neither --harness nor --cluster, or both, is a usage error saying which to give', async (t) => {
  for (const extra of [[], ['--harness', '3', '--cluster']]) {
    const result = await acp(['chaos', 'run', 'scenarios/kill-primary.json', ...extra]);
    t.is(result.code, 2);
    t.regex(result.stderr + result.stdout, /say where to run it: --harness N .* or --cluster/);
  }
});

test('acp chaos run with a bad scenario names the step and starts nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-chaos-'));
  try {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ name: 'bad', systems: [{ id: 'web', ha: true, driver: 'sim' }], steps: ['kill n9'] }));
    const result = await acp(['chaos', 'run', file, '--harness', '3']);
    t.is(result.code, 2, 'a bad file is a usage error (2), not a violation (1)');
    t.regex(result.stderr + result.stdout, /step 1 \('kill n9'\): no node 'n9'.*ACP_ERR_CHAOS_SCENARIO/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
