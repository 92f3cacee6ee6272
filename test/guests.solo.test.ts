import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { systemObjectSchema } from '../actors/model.js';
import { guestFiles } from '../actors/vmm/index.js';
import { guestImage, GUEST_READY_LINE, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import { qemuDriver } from '../adapters/drivers/qemu.js';
import { homePaths } from '../runtime/config.js';
import { isGone } from '../node/harness/net.js';
import { eventually, makeHome, runCli } from './helpers/node.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

const image = guestImage();
const missing = guestMissing();
const skipped = missing ? ` (skipped: ${missing})` : '';

const daemonPid = (home: string): number => Number(readFileSync(homePaths(home).pidfile, 'utf8'));

async function up(home: string): Promise<number> {
  const result = await runCli(['up', '--detach'], home, 60_000);
  if (result.code !== 0) throw new Error(`acp up failed: ${result.stderr}`);
  return daemonPid(home);
}

async function state(home: string, id: string): Promise<(SystemMeta & { id: string }) | undefined> {
  const listed = await runCli(['--json', 'system', 'ls'], home);
  if (listed.code !== 0) return undefined;
  return (JSON.parse(listed.stdout) as (SystemMeta & { id: string })[]).find((row) => row.id === id);
}

const uptimes = (text: string) => text.split('\n').filter((line) => line.startsWith(GUEST_UPTIME_PREFIX)).length;
const consoleOf = async (home: string, id: string) => (await runCli(['system', 'console', id], home)).stdout;

runsWhen(missing)(`kill -9 of acpd leaves a guest running; the restarted daemon adopts it (running, same pid, console working, not autostarted twice); acp down leaves it running and says so; deleting its object stops it${skipped}`, async (t) => {
  t.timeout(420_000);
  const home = makeHome(t);
  await up(home);
  const created = await runCli(['system', 'create', 'g1', '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline, '--node', 'n1', '--autostart'], home);
  t.is(created.code, 0, created.stderr);
  const started = await runCli(['--json', 'system', 'start', 'g1'], home, 150_000);
  t.is(started.code, 0, started.stderr);
  const { pid, vmmPid } = JSON.parse(started.stdout) as SystemMeta;
  t.true(pid !== null && vmmPid !== null);
  await eventually(async () => ((await consoleOf(home, 'g1')).includes(GUEST_READY_LINE) ? true : undefined), 180_000, 'the guest ready line');

  // kill -9 of the daemon: its VMM container goes, the guest does not.
  process.kill(daemonPid(home), 'SIGKILL');
  await eventually(() => (isGone(vmmPid!) ? true : undefined), 15_000, 'the VMM container to go with the daemon');
  t.false(isGone(pid!), 'QEMU outlives a killed daemon');

  const upAt = Date.now();
  await up(home);
  const adopted = await eventually(async () => {
    const now = await state(home, 'g1');
    return now?.state === 'running' ? now : undefined;
  }, 60_000, 'the restarted daemon to show g1 running');
  t.is(adopted.pid, pid, 'the same QEMU, adopted');
  t.log(`acp up after kill -9: g1 shown running (adopted, same pid) ${Date.now() - upAt} ms after acp up began`);
  const log = JSON.parse((await runCli(['--json', 'system', 'log', 'g1'], home)).stdout) as { event: string; reason?: string }[];
  const adoption = log.findLastIndex((step) => step.event === 'adopted');
  t.true(adoption >= 0, 'its history says it was adopted');
  t.false(log.slice(adoption).some((step) => step.event === 'start'), 'autostart does not start an adopted guest again');
  // The console goes on: the same guest keeps printing its uptime into the same log.
  const before = uptimes(await consoleOf(home, 'g1'));
  await eventually(async () => (uptimes(await consoleOf(home, 'g1')) > before ? true : undefined), 60_000, 'the adopted guest to print on its console');
  // Pause and resume go through the adopted QMP connection.
  t.is((await runCli(['system', 'pause', 'g1'], home)).code, 0);
  t.is((await state(home, 'g1'))?.state, 'paused');
  t.is((await runCli(['system', 'resume', 'g1'], home)).code, 0);

  // acp down: the guest keeps running, and the command says so.
  const down = await runCli(['down'], home, 60_000);
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, /1 guest keeps running \(g1\); `acp down --stop-systems` stops them/);
  t.false(isGone(pid!), 'QEMU outlives acp down');
  await up(home);
  const again = await eventually(async () => {
    const now = await state(home, 'g1');
    return now?.state === 'running' ? now : undefined;
  }, 60_000, 'g1 adopted again after acp down and up');
  t.is(again.pid, pid);

  // Its object deleted: the guest is stopped, with the reason.
  t.is((await runCli(['cdb', 'rm', 'object/system/g1'], home)).code, 0);
  await eventually(() => (isGone(pid!) ? true : undefined), 60_000, 'the QEMU of the deleted system to stop');
  const logged = await eventually(() => readFileSync(homePaths(home).logFile, 'utf8').split('\n').find((line) => line.includes('"msg":"stopping the guest of a deleted system"')), 30_000, 'the stop to be logged');
  t.regex(logged, /its object object\/system\/g1 was deleted/);
});

runsWhen(missing)(`acp down --stop-systems stops the guests first; an orphan QEMU (its system gone) is stopped cleanly when the daemon starts, and logged${skipped}`, async (t) => {
  t.timeout(300_000);
  const home = makeHome(t);
  await up(home);
  t.is((await runCli(['system', 'create', 'g2', '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline], home)).code, 0);
  const started = await runCli(['--json', 'system', 'start', 'g2'], home, 150_000);
  t.is(started.code, 0, started.stderr);
  const { pid } = JSON.parse(started.stdout) as SystemMeta;
  const down = await runCli(['down', '--stop-systems', '--timeout', '2000'], home, 90_000);
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, /1 system stopped first: g2/);
  t.true(isGone(pid!), 'the guest was stopped before the daemon went');

  // A QEMU for a system no object names (deleted on another node while this one was down, say).
  const files = guestFiles(home, 'ghost');
  for (const dir of [files.runDir, dirname(files.consoleLog)]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ghost = await qemuDriver.start('ghost', systemObjectSchema.parse({ name: 'ghost', memoryMiB: 128, boot: { kernel: image!.kernel, initrd: image!.initrd, cmdline: image!.cmdline } }), { ...files, accelerator: 'tcg' });
  t.teardown(() => ghost.stop(false, 0).catch(() => undefined));
  t.true(existsSync(join(files.runDir, 'qemu.pid')));
  // QMP serves one client: this test lets go of it, as a VMM that died would have.
  ghost.release!();
  await up(home);
  await eventually(() => (isGone(ghost.pid!) ? true : undefined), 60_000, 'the orphan QEMU to be stopped');
  const exit = await ghost.exited;
  t.false(exit.crashed, `stopped cleanly, not killed: ${exit.reason}`);
  const logged = await eventually(() => readFileSync(homePaths(home).logFile, 'utf8').split('\n').find((line) => line.includes('"msg":"orphan QEMU stopped"')), 30_000, 'the orphan stop to be logged');
  t.regex(logged, /its object object\/system\/ghost no longer exists/);
});
