/**
 * Network shares, mounted and unmounted: sshfs (FUSE), nfs and cifs (the system's mount helpers).
 * Which mounts exist comes from /proc/self/mountinfo; whether the kernel has a client from
 * /proc/filesystems. Every command runs with a timeout, never through a shell.
 */
import { readFile } from 'node:fs/promises';
import { AcpError } from '../../runtime/errors.js';
import { runTool } from './run.js';

const MOUNT_MS = 20_000;
const UMOUNT_MS = 10_000;

export interface MountEntry {
  readonly mountpoint: string;
  readonly fstype: string;
  readonly source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export async function listMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .flatMap((line) => {
      const fields = line.split(' ');
      const separator = fields.indexOf('-');
      if (separator < 0 || fields.length < separator + 3) return [];
      return [{ mountpoint: unescape(fields[4]!), fstype: fields[separator + 1]!, source: unescape(fields[separator + 2]!) }];
    });
}

/** The filesystems this kernel has a driver for (/proc/filesystems). */
export async function kernelFilesystems(): Promise<Set<string>> {
  const text = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  return new Set(text.split('\n').map((line) => line.trim().split(/\s+/).at(-1) ?? '').filter((name) => name.length > 0));
}

export interface SshfsMount {
  readonly user?: string;
  readonly server: string;
  readonly path: string;
  readonly port?: number;
  readonly identityFile?: string;
  readonly knownHosts: string;
  readonly mountpoint: string;
}

/**
 * sshfs, non-interactive (BatchMode), reconnecting, with keep-alives so a dead server turns into
 * I/O errors rather than a hang; the server's key is learnt on first use into a known-hosts file
 * of the node's own.
 */
export async function mountSshfs(share: SshfsMount): Promise<void> {
  const host = share.server.includes(':') ? `[${share.server}]` : share.server;
  const options = [
    'BatchMode=yes',
    'StrictHostKeyChecking=accept-new',
    `UserKnownHostsFile=${share.knownHosts}`,
    'ConnectTimeout=5',
    'ServerAliveInterval=5',
    'ServerAliveCountMax=3',
    'reconnect',
    ...(share.port ? [`port=${share.port}`] : []),
    ...(share.identityFile ? [`IdentityFile=${share.identityFile}`] : []),
  ];
  for (const option of options) if (option.includes(',')) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `an sshfs option may not hold a comma: ${option}`);
  await runTool('sshfs', [`${share.user ? `${share.user}@` : ''}${host}:${share.path}`, share.mountpoint, '-o', options.join(',')], { timeoutMs: MOUNT_MS });
}

export async function mountNetwork(type: 'nfs' | 'cifs', source: string, mountpoint: string, options: readonly string[]): Promise<void> {
  await runTool('mount', ['-t', type, ...(options.length > 0 ? ['-o', options.join(',')] : []), source, mountpoint], { timeoutMs: MOUNT_MS });
}

/** Unmounts; `lazy` detaches a mount whose server is gone (it cannot be flushed). */
export async function unmount(mountpoint: string, fuse: boolean, lazy: boolean): Promise<void> {
  if (fuse) {
    await runTool('fusermount3', ['-u', ...(lazy ? ['-z'] : []), mountpoint], { timeoutMs: UMOUNT_MS }).catch(async (error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_STORAGE_TOOL_MISSING') await runTool('fusermount', ['-u', ...(lazy ? ['-z'] : []), mountpoint], { timeoutMs: UMOUNT_MS });
      else throw error;
    });
    return;
  }
  await runTool('umount', [...(lazy ? ['-l'] : []), mountpoint], { timeoutMs: UMOUNT_MS });
}

/** Whether the node has device-mapper (lvm-thin needs it): its control node. */
export async function hasDeviceMapper(): Promise<boolean> {
  const text = await readFile('/proc/misc', 'utf8').catch(() => '');
  return /\sdevice-mapper$/m.test(text);
}

/** Whether `mount.<type>` (nfs-common's, cifs-utils') is installed. */
export async function hasMountHelper(type: 'nfs' | 'cifs'): Promise<boolean> {
  const { access } = await import('node:fs/promises');
  for (const dir of ['/sbin', '/usr/sbin', '/usr/local/sbin']) {
    if (await access(`${dir}/mount.${type}`).then(() => true, () => false)) return true;
  }
  return false;
}
