/**
 * The test guest: a Debian kernel and a tiny initramfs (busybox-static and an init script), built
 * from Debian packages downloaded with `apt-get download` into a cache directory. Nothing is
 * installed on the host. The guest's init prints `ACP-GUEST-READY` on the serial console, then its
 * own uptime every second (`ACP-GUEST-UPTIME <seconds>`), so a test can see it boot and see it keep
 * running across a migration.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { AcpError, errorMessage } from '../runtime/errors.js';

export const GUEST_READY_LINE = 'ACP-GUEST-READY';
export const GUEST_UPTIME_PREFIX = 'ACP-GUEST-UPTIME';

export interface GuestImage {
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
}

/** Where the image is kept: $ACP_GUEST_DIR, else ~/.cache/acp/guest. */
export function guestImageDir(): string {
  return process.env.ACP_GUEST_DIR && process.env.ACP_GUEST_DIR.length > 0 ? process.env.ACP_GUEST_DIR : join(homedir(), '.cache', 'acp', 'guest');
}

export function guestImage(dir = guestImageDir()): GuestImage | undefined {
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) return undefined;
  return { kernel, initrd, cmdline: 'console=ttyS0 panic=-1 quiet' };
}

const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo ${GUEST_READY_LINE}
while true; do
  echo "${GUEST_UPTIME_PREFIX} $(/bin/busybox cut -d' ' -f1 /proc/uptime)"
  /bin/busybox sleep 1
done
`;

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  /** Device numbers, for a character device. */
  rdev?: [number, number];
}

/** The newc cpio format the kernel unpacks as an initramfs. */
export function cpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const hex = (value: number) => value.toString(16).padStart(8, '0');
  const pad = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  let inode = 1;
  for (const entry of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = entry.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${entry.name}\0`);
    const [major, minor] = 'rdev' in entry && entry.rdev ? entry.rdev : [0, 0];
    const header = Buffer.from(
      `070701${hex(entry.name === 'TRAILER!!!' ? 0 : inode++)}${hex(entry.mode)}${hex(0)}${hex(0)}${hex(1)}${hex(0)}${hex(data.length)}${hex(0)}${hex(0)}${hex(major)}${hex(minor)}${hex(name.length)}${hex(0)}`,
    );
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

function run(command: string, args: readonly string[], cwd: string): string {
  try {
    return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new AcpError('ACP_ERR_GUEST_IMAGE', `${command} ${args.join(' ')} failed: ${stderr || errorMessage(error)}`);
  }
}

/** Extracts one file of a .deb (by the path inside it) to `target`. */
function extract(deb: string, inside: string, target: string, work: string): void {
  const tarball = join(work, 'data.tar');
  execFileSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" > "$2"`, 'extract', deb, tarball], { stdio: ['ignore', 'ignore', 'pipe'] });
  const members = run('tar', ['-tf', tarball], work)
    .split('\n')
    .filter((member) => member.replace(/^\.\//, '').startsWith(inside.replace(/^\//, '')));
  const member = members.find((candidate) => !candidate.endsWith('/'));
  if (!member) throw new AcpError('ACP_ERR_GUEST_IMAGE', `${deb} holds no ${inside}`);
  run('tar', ['-xf', tarball, member], work);
  renameSync(join(work, member), target);
  rmSync(tarball, { force: true });
}

/**
 * Builds the test guest into `dir` (idempotent: an existing image is kept unless `force`).
 * Needs apt-get (Debian's package index: run apt-get update once) and dpkg-deb.
 */
export function buildGuestImage(dir = guestImageDir(), log: (line: string) => void = () => undefined, force = false): GuestImage {
  const existing = guestImage(dir);
  if (existing && !force) {
    log(`guest image already in ${dir}`);
    return existing;
  }
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb', 'tar']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new AcpError('ACP_ERR_GUEST_IMAGE', `${tool} is not installed: the guest image is built from Debian packages (a Debian or Ubuntu host is needed)`);
    }
  }
  const work = join(dir, 'work');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const depends = run('apt-cache', ['depends', 'linux-image-amd64'], work);
  const kernelPackage = /Depends: (linux-image-[0-9][^\s]*)/.exec(depends)?.[1];
  if (!kernelPackage) throw new AcpError('ACP_ERR_GUEST_IMAGE', 'no linux-image package found behind linux-image-amd64; run apt-get update first');
  log(`downloading ${kernelPackage} and busybox-static with apt-get`);
  run('apt-get', ['download', '-q', kernelPackage, 'busybox-static'], work);
  const debs = readdirSync(work).filter((file) => file.endsWith('.deb'));
  const kernelDeb = debs.find((file) => file.startsWith('linux-image-'));
  const busyboxDeb = debs.find((file) => file.startsWith('busybox-static'));
  if (!kernelDeb || !busyboxDeb) throw new AcpError('ACP_ERR_GUEST_IMAGE', `apt-get download did not leave both packages in ${work}`);
  extract(join(work, kernelDeb), 'boot/vmlinuz-', join(work, 'vmlinuz'), work);
  extract(join(work, busyboxDeb), 'bin/busybox', join(work, 'busybox'), work);
  const busybox = readFileSync(join(work, 'busybox'));
  const image = cpio([
    { name: 'bin', mode: 0o040755 },
    { name: 'dev', mode: 0o040755 },
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'proc', mode: 0o040755 },
    { name: 'sys', mode: 0o040755 },
    { name: 'bin/busybox', mode: 0o100755, data: busybox },
    { name: 'bin/sh', mode: 0o100755, data: busybox },
    { name: 'init', mode: 0o100755, data: Buffer.from(INIT) },
  ]);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'initrd.gz.tmp'), gzipSync(image));
  renameSync(join(dir, 'initrd.gz.tmp'), join(dir, 'initrd.gz'));
  renameSync(join(work, 'vmlinuz'), join(dir, 'vmlinuz'));
  rmSync(work, { recursive: true, force: true });
  log(`guest image: ${join(dir, 'vmlinuz')} (${Math.round(statSync(join(dir, 'vmlinuz')).size / 1024)} KiB), ${join(dir, 'initrd.gz')}`);
  return guestImage(dir)!;
}
