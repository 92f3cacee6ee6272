/**
 * The test guest: a Debian kernel and a tiny initramfs (busybox-static and an init script), built
 * from Debian packages downloaded with `apt-get download` into a cache directory. Nothing is
 * installed on the host. The guest's init prints `ACP-GUEST-READY` on the serial console, then its
 * own uptime every second (`ACP-GUEST-UPTIME <seconds>`), so a test can see it boot and see it keep
 * running across a migration. With a NIC it has networking: the virtio-net driver from the same
 * kernel package, eth0 addressed from `acp.ip=10.9.0.2/24` on the kernel command line, and
 * `acp.ping=<address>` pinged every second (`ACP-GUEST-PING <address> ok|fail`). With disks it
 * has the block drivers: it lists every disk (`ACP-GUEST-DISK vda 67108864`, after waiting for
 * `acp.disks=<n>` of them), and with `acp.disktest=1` reads the mark an earlier boot left on its
 * first disk and writes the next (`ACP-GUEST-DISK-READ vda 1`, `ACP-GUEST-DISK-WROTE vda 2`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { AcpError, errorMessage } from '../runtime/errors.js';

export const GUEST_READY_LINE = 'ACP-GUEST-READY';
export const GUEST_UPTIME_PREFIX = 'ACP-GUEST-UPTIME';
/** `ACP-GUEST-NET <address>` once eth0 has the address from `acp.ip=`. */
export const GUEST_NET_PREFIX = 'ACP-GUEST-NET';
/** `ACP-GUEST-PING <address> ok|fail`, every second, when the kernel command line has `acp.ping=<address>`. */
export const GUEST_PING_PREFIX = 'ACP-GUEST-PING';

/**
 * The virtio-net driver and what it needs, from the same kernel package, loaded in this order
 * (no modules.dep in the guest: busybox insmod takes them one by one).
 */
const NET_MODULES = [
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'net/core/failover.ko',
  'drivers/net/net_failover.ko',
  'drivers/net/virtio_net.ko',
] as const;

/**
 * The block drivers (virtio-blk, virtio-scsi, IDE via ata_piix, SCSI disks and CD-ROMs) and what
 * they need, loaded in this order.
 */
const DISK_MODULES = [
  'crypto/crct10dif_common.ko',
  'crypto/crct10dif_generic.ko',
  'lib/crc-t10dif.ko',
  'lib/crc64.ko',
  'crypto/crc64_rocksoft_generic.ko',
  'lib/crc64-rocksoft.ko',
  'block/t10-pi.ko',
  'drivers/scsi/scsi_common.ko',
  'drivers/scsi/scsi_mod.ko',
  'drivers/scsi/sd_mod.ko',
  'drivers/cdrom/cdrom.ko',
  'drivers/scsi/sr_mod.ko',
  'drivers/block/virtio_blk.ko',
  'drivers/scsi/virtio_scsi.ko',
  'drivers/ata/libata.ko',
  'drivers/ata/ata_piix.ko',
] as const;

/** `ACP-GUEST-DISK <name> <bytes>`: one line per block device the guest sees, once before the ready line. */
export const GUEST_DISK_PREFIX = 'ACP-GUEST-DISK';
/** With `acp.disktest=1`: `ACP-GUEST-DISK-READ <disk> <n>` (the mark an earlier boot left on the first disk, 0 for none), then `ACP-GUEST-DISK-WROTE <disk> <n+1>`. */
export const GUEST_DISK_READ_PREFIX = 'ACP-GUEST-DISK-READ';
export const GUEST_DISK_WROTE_PREFIX = 'ACP-GUEST-DISK-WROTE';
/** With `acp.ddbench=<MiB>`: `ACP-GUEST-DDBENCH <MiB> <uptime before> <uptime after>` once that many MiB are written to the first disk. */
export const GUEST_DDBENCH_PREFIX = 'ACP-GUEST-DDBENCH';
/** `ACP-GUEST-NETBENCH <MiB> <start> <end>` (uptime seconds): one TCP send of acp.netsend=<peer>:<port>:<MiB>:<rounds>. */
export const GUEST_NETBENCH_PREFIX = 'ACP-GUEST-NETBENCH';

/** What an image in the cache can do; an image without every feature listed here is built again. */
const FEATURES = 'net disk netbench';
const MODULES = [...NET_MODULES, ...DISK_MODULES];

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

/** Whether the image in `dir` sees disks (block drivers, ACP-GUEST-DISK lines, acp.disktest=1); older ones boot without. */
export function guestHasDisks(dir = guestImageDir()): boolean {
  return guestImage(dir) !== undefined && hasFeatures(dir);
}

/** Whether the image in `dir` has networking (virtio-net, acp.ip=, acp.ping=); older ones boot, without it. */
export function guestHasNetworking(dir = guestImageDir()): boolean {
  return guestImage(dir) !== undefined && hasFeatures(dir);
}

function hasFeatures(dir: string): boolean {
  try {
    const has = new Set(readFileSync(join(dir, 'features'), 'utf8').trim().split(/\s+/));
    return FEATURES.split(' ').every((feature) => has.has(feature));
  } catch {
    return false;
  }
}

// Networking from the kernel command line: acp.ip=10.9.0.2/24 on eth0, acp.ping=10.9.0.3 probed every second.
const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
# Twice: a module whose dependency came later in the list loads on the second round.
for round in 1 2; do
  for module in ${MODULES.map((module) => module.split('/').at(-1)).join(' ')}; do /bin/busybox insmod /lib/modules/$module 2>/dev/null; done
done
/bin/busybox mount -t devtmpfs devtmpfs /dev
IP=; PING=; DISKS=0; DISKTEST=; DDBENCH=; NETSINK=; NETSEND=
for arg in $(/bin/busybox cat /proc/cmdline); do
  case "$arg" in
    acp.ip=*) IP="\${arg#acp.ip=}" ;;
    acp.ping=*) PING="\${arg#acp.ping=}" ;;
    acp.disks=*) DISKS="\${arg#acp.disks=}" ;;
    acp.disktest=*) DISKTEST="\${arg#acp.disktest=}" ;;
    acp.ddbench=*) DDBENCH="\${arg#acp.ddbench=}" ;;
    acp.netsink=*) NETSINK="\${arg#acp.netsink=}" ;;
    acp.netsend=*) NETSEND="\${arg#acp.netsend=}" ;;
  esac
done
# Disks: wait (at most 10 s) for the number acp.disks= says, list them, and with acp.disktest=1
# read the mark an earlier boot left at the start of the first disk and leave the next one.
disks() { /bin/busybox ls /sys/block | /bin/busybox grep -E '^(vd|sd|hd|sr)'; }
for wait in 1 2 3 4 5 6 7 8 9 10; do [ "$(disks | /bin/busybox wc -l)" -ge "$DISKS" ] && break; /bin/busybox sleep 1; done
for disk in $(disks); do echo "${GUEST_DISK_PREFIX} $disk $(( $(/bin/busybox cat /sys/block/$disk/size) * 512 ))"; done
FIRST=$(disks | /bin/busybox grep -v '^sr' | /bin/busybox head -n 1)
if [ "$DISKTEST" = 1 ] && [ -n "$FIRST" ]; then
  MARK=$(/bin/busybox dd if=/dev/$FIRST bs=16 count=1 2>/dev/null | /bin/busybox tr -cd 'A-Z0-9 ')
  N=\${MARK#ACPMARK }
  case "$MARK" in "ACPMARK "*) ;; *) N=0 ;; esac
  case "$N" in ''|*[!0-9]*) N=0 ;; esac
  echo "${GUEST_DISK_READ_PREFIX} $FIRST $N"
  N=$((N + 1))
  /bin/busybox printf 'ACPMARK %d' $N | /bin/busybox dd of=/dev/$FIRST bs=16 count=1 conv=sync,fsync 2>/dev/null && /bin/busybox sync && echo "${GUEST_DISK_WROTE_PREFIX} $FIRST $N"
fi
# bench/storage: acp.ddbench=<MiB> writes that many MiB of zeros to the first disk (direct, synced), timed by the guest's clock.
case "$DDBENCH" in ''|*[!0-9]*) DDBENCH= ;; esac
if [ -n "$DDBENCH" ] && [ -n "$FIRST" ]; then
  START=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
  /bin/busybox dd if=/dev/zero of=/dev/$FIRST bs=1M count=$DDBENCH conv=fsync 2>/dev/null
  echo "${GUEST_DDBENCH_PREFIX} $DDBENCH $START $(/bin/busybox cut -d' ' -f1 /proc/uptime)"
fi
/bin/busybox ip link set lo up
if [ -n "$IP" ]; then
  # The driver probes the device after insmod returns: wait for eth0 (at most 10 s).
  for wait in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; /bin/busybox sleep 1; done
  /bin/busybox ip addr add "$IP" dev eth0 && /bin/busybox ip link set eth0 up && echo "${GUEST_NET_PREFIX} $IP" || echo "${GUEST_NET_PREFIX}-FAILED $IP: $(/bin/busybox ls /sys/class/net)"
fi
# bench/network: acp.netsink=<port> swallows every TCP connection to that port; acp.netsend=<peer>:<port>:<MiB>:<rounds>
# sends MiB of zeros to a sink that many times, each timed by the guest's clock.
case "$NETSINK" in ''|*[!0-9]*) NETSINK= ;; esac
if [ -n "$NETSINK" ]; then
  # Its stdin a FIFO held open for writing, so it never reads EOF there (nc would end the connection).
  /bin/busybox mkfifo /netsink
  ( while true; do /bin/busybox nc -l -p "$NETSINK" > /dev/null <> /netsink; done ) &
fi
if [ -n "$NETSEND" ]; then
  PEER=\${NETSEND%%:*}; REST=\${NETSEND#*:}; PORT=\${REST%%:*}; REST=\${REST#*:}; MIB=\${REST%%:*}; ROUNDS=\${REST#*:}
  (
    for wait in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/busybox ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 && break; done
    for round in $(/bin/busybox seq 1 "$ROUNDS"); do
      START=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
      /bin/busybox dd if=/dev/zero bs=1M count="$MIB" 2>/dev/null | /bin/busybox nc "$PEER" "$PORT"
      echo "${GUEST_NETBENCH_PREFIX} $MIB $START $(/bin/busybox cut -d' ' -f1 /proc/uptime)"
    done
  ) &
fi
echo ${GUEST_READY_LINE}
while true; do
  echo "${GUEST_UPTIME_PREFIX} $(/bin/busybox cut -d' ' -f1 /proc/uptime)"
  if [ -n "$PING" ]; then
    if /bin/busybox ping -c 1 -W 1 "$PING" >/dev/null 2>&1; then echo "${GUEST_PING_PREFIX} $PING ok"; else echo "${GUEST_PING_PREFIX} $PING fail"; fi
  fi
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
  // An image from before a feature was added is built again (npm run guest-image picks it up).
  if (existing && hasFeatures(dir) && !force) {
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
  const release = kernelPackage.slice('linux-image-'.length);
  const modules = MODULES.map((module) => {
    const target = join(work, module.split('/').at(-1)!);
    extract(join(work, kernelDeb), `lib/modules/${release}/kernel/${module}`, target, work);
    return { name: `lib/modules/${module.split('/').at(-1)!}`, mode: 0o100644, data: readFileSync(target) };
  });
  const image = cpio([
    { name: 'bin', mode: 0o040755 },
    { name: 'dev', mode: 0o040755 },
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    { name: 'proc', mode: 0o040755 },
    { name: 'sys', mode: 0o040755 },
    { name: 'bin/busybox', mode: 0o100755, data: busybox },
    { name: 'bin/sh', mode: 0o100755, data: busybox },
    { name: 'lib', mode: 0o040755 },
    { name: 'lib/modules', mode: 0o040755 },
    ...modules,
    { name: 'init', mode: 0o100755, data: Buffer.from(INIT) },
  ]);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'initrd.gz.tmp'), gzipSync(image));
  renameSync(join(dir, 'initrd.gz.tmp'), join(dir, 'initrd.gz'));
  renameSync(join(work, 'vmlinuz'), join(dir, 'vmlinuz'));
  writeFileSync(join(dir, 'features'), `${FEATURES}\n`);
  rmSync(work, { recursive: true, force: true });
  log(`guest image: ${join(dir, 'vmlinuz')} (${Math.round(statSync(join(dir, 'vmlinuz')).size / 1024)} KiB), ${join(dir, 'initrd.gz')}`);
  return guestImage(dir)!;
}
