/**
 * An sshfs share for real: served by sshd in n1's network namespace, mounted by the Storage service
 * on n1 and n2, used as a shared pool; a QEMU guest whose disk is on it migrates live from n1 to
 * n2, and what it wrote on n1 is read after a restart on n2. Then the server goes: the share is
 * marked error by the timed probe while the daemons keep answering.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QEMU_BINARY } from '../adapters/drivers/qemu-args.js';
import { guestHasDisks, guestImage, GUEST_DISK_READ_PREFIX, GUEST_DISK_WROTE_PREFIX, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const image = guestImage();
let missing: string | undefined = available.ok ? undefined : available.why;
for (const [tool, pkg] of [[QEMU_BINARY, 'qemu-system-x86'], ['qemu-img', 'qemu-utils'], ['sshfs', 'sshfs'], ['/usr/sbin/sshd', 'openssh-server'], ['ssh-keygen', 'openssh-client']] as const) {
  if (missing) break;
  try {
    execFileSync(tool, tool.endsWith('sshd') ? ['-V'] : ['--version'], { stdio: 'ignore' });
  } catch (error) {
    // sshd -V and ssh-keygen --version print their version and exit non-zero; only a missing binary counts.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') missing = `${tool} is not installed (apt-get install ${pkg})`;
  }
}
if (!missing && !existsSync('/dev/fuse')) missing = '/dev/fuse (FUSE) for sshfs';
missing ??= !image ? 'the test guest is not built (npm run guest-image)' : !guestHasDisks() ? 'the test guest has no disk drivers yet (npm run guest-image rebuilds it)' : undefined;

/** The pids of processes in namespace `ns` whose command is `comm`. */
function pidsIn(ns: string, comm: string): number[] {
  let text = '';
  try {
    text = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map(Number)
    .filter((pid) => pid > 0)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
      } catch {
        return false;
      }
    });
}

runsWhen(missing)(`an sshfs share served in one namespace is mounted on two nodes as a shared pool; a guest on it migrates live and its data is seen on the other node; a dead server marks the share error without blocking the daemon${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(600_000);
  const h = await Harness.start({ nodes: ['n1', 'n2'] });
  const dir = mkdtempSync(join(tmpdir(), 'acp-sshfs-'));
  let sshd: ChildProcess | undefined;
  t.teardown(async () => {
    sshd?.kill('SIGKILL');
    // sshfs runs on in each daemon's mount namespace after the daemon goes: it is ended here.
    for (const name of ['n1', 'n2']) for (const pid of pidsIn(h.node(name).ns, 'sshfs')) process.kill(pid, 'SIGKILL');
    await h.teardown();
    rmSync(dir, { recursive: true, force: true });
  });
  await h.waitSynced(60_000);
  const cli = async (node: string, args: string[]) => {
    const result = await h.cli(node, args, 180_000);
    if (result.code !== 0) throw new Error(`acp ${args.join(' ')} on ${node} exited ${result.code}: ${result.stderr.trim()}`);
    return result.stdout;
  };

  // sshd in n1's namespace, root logging in with a key made here, serving `export`.
  const exported = join(dir, 'export');
  mkdirSync(exported);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'id')]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'id.pub')));
  chmodSync(join(dir, 'id'), 0o600);
  mkdirSync('/run/sshd', { recursive: true });
  const server = h.node('n1').address;
  writeFileSync(
    join(dir, 'sshd_config'),
    [`ListenAddress ${server}`, 'Port 2222', `HostKey ${join(dir, 'host_key')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'StrictModes no', 'UsePAM no', `PidFile ${join(dir, 'sshd.pid')}`, 'Subsystem sftp internal-sftp', ''].join('\n'),
  );
  sshd = spawn('ip', ['netns', 'exec', h.node('n1').ns, '/usr/sbin/sshd', '-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let sshdLog = '';
  sshd.stderr?.setEncoding('utf8').on('data', (chunk: string) => (sshdLog += chunk));
  await eventually(() => (sshdLog.includes('listening') ? true : sshd?.exitCode !== null ? Promise.reject(new Error(`sshd exited: ${sshdLog}`)) : undefined), 15_000, 'sshd to listen');

  await cli('n1', ['storage', 'share', 'create', 'files', '--type', 'sshfs', '--server', server, '--port', '2222', '--user', 'root', '--path', exported, '--identity-file', join(dir, 'id')]);
  await cli('n1', ['storage', 'pool', 'create', 'shared', '--type', 'dir', '--share', 'files', '--shared']);
  const status = async (node: string) => JSON.parse(await cli(node, ['--json', 'storage', 'pool', 'ls'])) as { name: string; nodes: { node: string; state: string; reason?: string }[] }[];
  let last: unknown;
  await eventually(async () => {
    const pool = (await status('n1')).find((row) => row.name === 'shared');
    last = { pool, shares: await cli('n1', ['--json', 'storage', 'share', 'ls']) };
    return pool && pool.nodes.length === 2 && pool.nodes.every((node) => node.state === 'active') ? pool : undefined;
  }, 60_000, 'the shared pool to be active on n1 and n2').catch((error: unknown) => {
    throw new Error(`${(error as Error).message}: ${JSON.stringify(last)}`);
  });

  await cli('n1', ['storage', 'volume', 'create', 'shared/d1', '--size', '64M']);
  t.true(existsSync(join(exported, 'd1.qcow2')), "the volume is in the server's directory");
  await cli('n1', ['system', 'create', 'g1', '--driver', 'qemu', '--memory', '256', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', `${image!.cmdline} acp.disks=1 acp.disktest=1`, '--disk', 'shared/d1', '--restart', 'never']);
  await cli('n1', ['system', 'start', 'g1']);
  await eventually(async () => ((await cli('n1', ['system', 'console', 'g1'])).includes(`${GUEST_DISK_WROTE_PREFIX} vda 1`) ? true : undefined), 240_000, 'the guest to write its mark on n1');

  const moved = JSON.parse(await cli('n1', ['--json', 'system', 'migrate', 'g1', '--to', 'n2'])) as { from: string; to: string; state: string };
  t.like(moved, { from: 'n1', to: 'n2', state: 'running' });
  const uptime = (text: string) => text.split('\n').filter((line) => line.startsWith(GUEST_UPTIME_PREFIX)).length;
  await eventually(async () => (uptime(await cli('n2', ['system', 'console', 'g1'])) >= 2 ? true : undefined), 60_000, 'the guest to run on n2');

  // Stopped and started again on n2: it reads what it wrote on n1, through n2's own mount.
  await cli('n2', ['system', 'stop', 'g1', '--force']);
  await cli('n2', ['system', 'start', 'g1']);
  await eventually(async () => ((await cli('n2', ['system', 'console', 'g1'])).includes(`${GUEST_DISK_READ_PREFIX} vda 1`) ? true : undefined), 240_000, 'the guest on n2 to read the mark written on n1');
  await cli('n2', ['system', 'stop', 'g1', '--force']);

  // The server hangs (every sshd of n1's namespace stopped: connections stay open, nothing answers):
  // the timed probe marks the share error, and the daemons keep answering.
  const servers = pidsIn(h.node('n1').ns, 'sshd');
  t.true(servers.length >= 2, 'the listener and the connections\' sshd');
  for (const pid of servers) process.kill(pid, 'SIGSTOP');
  t.teardown(() => {
    for (const pid of servers) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  });
  const failed = await eventually(async () => {
    const shares = JSON.parse(await cli('n2', ['--json', 'storage', 'share', 'ls'])) as { name: string; nodes: { node: string; state: string; reason?: string }[] }[];
    const n2 = shares.find((row) => row.name === 'files')?.nodes.find((node) => node.node === 'n2');
    return n2?.state === 'error' ? n2 : undefined;
  }, 90_000, 'the share to be marked error on n2');
  t.log(`share on n2 after its server hung: ${failed.reason}`);
  t.regex(failed.reason ?? '', /did not answer within 5000 ms|hung|Input\/output error|Transport endpoint/);
  const started = Date.now();
  const n2 = await h.client('n2');
  await n2.ask('storage', { type: 'service.info' }, { timeoutMs: 2000 });
  await n2.ask('cdb', { type: 'cdb.get', key: 'object/storage/pool/shared' }, { timeoutMs: 2000 });
  t.true(Date.now() - started < 2000, 'the daemon answers at once while the share hangs');
  const pools = await n2.ask<Message & { pools: Record<string, { state: string; reason?: string }> }>('storage', { type: 'storage.pool-status' }, { timeoutMs: 2000 });
  t.not(pools.pools['shared']?.state, 'active', 'the pool on the dead share is not active');
  t.true(readdirSync(dir).includes('export'));
});
