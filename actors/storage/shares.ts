/**
 * The network shares this node mounts (sshfs, nfs, cifs): mounted when a pool carried here or the
 * share itself names this node, probed every pass (in a worker, with a deadline: a hung share is
 * marked error and never blocks the Storage service's loop), and unmounted when no longer wanted
 * (only what this service mounted).
 */
import { join } from 'node:path';
import type { ActorContext } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import { makeDirectory, probePath } from '../../adapters/storage/fs.js';
import { hasMountHelper, kernelFilesystems, listMounts, mountNetwork, mountSshfs, unmount } from '../../adapters/storage/mounts.js';
import type { StoragePool, StorageShare } from '../model.js';
import { homePathProblem, shareMountpoint, sharesWanted, type HomeLayout, type ShareReport } from './pools.js';

/** Why this node cannot mount shares of this type, or undefined when it can. */
export async function unsupportedShare(type: StorageShare['type']): Promise<string | undefined> {
  if (type === 'sshfs') return undefined;
  const kernel = type === 'nfs' ? 'nfs' : 'cifs';
  if (!(await kernelFilesystems()).has(kernel)) return `this node's kernel has no ${type.toUpperCase()} client ('${kernel}' is not in /proc/filesystems, and modules cannot be loaded here): use an sshfs share`;
  if (!(await hasMountHelper(type))) return `mount.${type} is not installed on this node (apt-get install ${type === 'nfs' ? 'nfs-common' : 'cifs-utils'})`;
  return undefined;
}

export class ShareMounts {
  /** What each wanted share is here (`meta/storage/share/<id>@<node>`). */
  readonly reports = new Map<string, ShareReport>();
  /** Mount points this service mounted (only those are ever unmounted). */
  private readonly mountedHere = new Map<string, { mountpoint: string; fuse: boolean }>();

  constructor(
    private readonly ctx: ActorContext,
    private readonly node: string,
    private readonly layout: HomeLayout,
    /** The known_hosts file sshfs checks servers against. */
    private readonly knownHosts: string,
    private readonly probeMs: number,
  ) {}

  /** Mounts what this node should, checks what is mounted, unmounts what it mounted and no longer needs. */
  async reconcile(pools: Iterable<StoragePool>, shares: ReadonlyMap<string, StorageShare>): Promise<void> {
    const wanted = sharesWanted(pools, shares, this.node);
    const mounts = await listMounts();
    const mounted = new Map(mounts.map((entry) => [entry.mountpoint, entry]));
    // After a restart: a share mounted at its mount point by an earlier run of this service is its own.
    for (const share of shares.values()) {
      const mountpoint = shareMountpoint(share, this.layout);
      if (homePathProblem(mountpoint, this.layout)) continue;
      const entry = mounted.get(mountpoint);
      if (entry && !this.mountedHere.has(share.name) && (entry.fstype === 'fuse.sshfs' || entry.fstype === share.type)) this.mountedHere.set(share.name, { mountpoint, fuse: share.type === 'sshfs' });
    }
    for (const id of wanted) {
      const share = shares.get(id)!;
      const mountpoint = shareMountpoint(share, this.layout);
      const base = { type: share.type, mountpoint };
      try {
        // Checked at create against the home of the node that took it; here against this node's own,
        // before anything is mounted there or a mount found there is taken as the share's.
        const misplaced = homePathProblem(mountpoint, this.layout);
        if (misplaced) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `share '${share.name}' is not mounted on this node: ${misplaced}`);
        if (!mounted.has(mountpoint)) {
          await this.mount(share, mountpoint);
          this.ctx.log.info({ share: id, mountpoint }, `mounted share ${id}`);
        }
        const probe = await probePath(mountpoint, this.probeMs);
        this.reports.set(id, probe.ok ? { ...base, state: 'mounted' } : { ...base, state: 'error', reason: probe.hung ? `hung: ${probe.why}` : probe.why });
      } catch (error) {
        this.reports.set(id, { ...base, state: 'error', reason: errorMessage(error) });
      }
    }
    for (const [id, mount] of [...this.mountedHere].filter(([known]) => !wanted.has(known))) {
      try {
        const hung = this.reports.get(id)?.state === 'error';
        await unmount(mount.mountpoint, mount.fuse, hung);
        this.mountedHere.delete(id);
        this.ctx.log.info({ share: id, mountpoint: mount.mountpoint }, `unmounted share ${id}`);
      } catch (error) {
        this.ctx.log.warn({ share: id, err: errorMessage(error) }, 'could not unmount a share; the next pass tries again');
      }
    }
    for (const id of [...this.reports.keys()].filter((known) => !wanted.has(known) && !this.mountedHere.has(known))) this.reports.delete(id);
  }

  private async mount(share: StorageShare, mountpoint: string): Promise<void> {
    const why = await unsupportedShare(share.type);
    if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `share '${share.name}' (${share.type}): ${why}`);
    await makeDirectory(mountpoint, 0o700);
    if (share.type === 'sshfs') {
      await mountSshfs({ server: share.server, path: share.path, mountpoint, knownHosts: this.knownHosts, ...(share.user ? { user: share.user } : {}), ...(share.port ? { port: share.port } : {}), ...(share.identityFile ? { identityFile: share.identityFile } : {}) });
    } else if (share.type === 'nfs') {
      await mountNetwork('nfs', `${share.server}:${share.path}`, mountpoint, ['soft', 'timeo=50', 'retrans=2', ...(share.port ? [`port=${share.port}`] : [])]);
    } else {
      await mountNetwork('cifs', `//${share.server}${share.path}`, mountpoint, share.user ? [`username=${share.user}`] : ['guest']);
    }
    this.mountedHere.set(share.name, { mountpoint, fuse: share.type === 'sshfs' });
  }
}

/** The knownHosts file of a node's home secrets. */
export function knownHostsIn(secrets: string): string {
  return join(secrets, 'known_hosts');
}
