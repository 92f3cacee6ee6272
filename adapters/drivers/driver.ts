import { isIP } from 'node:net';
import type { DiskCounters, GuestCdrom, GuestDisk, LiveDiskChange } from './disks.js';

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** A host a migration may name: an IPv4 or IPv6 literal, or a DNS host name (nothing else reaches QEMU). */
export function isMigrationHost(host: string): boolean {
  return isIP(host) !== 0 || HOST_NAME.test(host);
}

/** Where a guest keeps its files: its console log, and sockets for drivers that use them. */
export interface GuestPaths {
  readonly consoleLog: string;
  readonly runDir: string;
  /** For QEMU: what the node's probe found works (TCG when absent). */
  readonly accelerator?: 'kvm' | 'tcg';
  /** The system's disks and CD-ROM, as the node's Storage service resolved them. */
  readonly disks?: readonly GuestDisk[];
  readonly cdrom?: GuestCdrom;
  /** The node's fence guard's socket (fence-guard-protocol.ts): an HA guest's QEMU is started through it. */
  readonly guardSocket?: string;
}

/** How a guest ended: asked to stop, powered off by itself, or crashed (killed, failed). */
export interface GuestExit {
  readonly crashed: boolean;
  readonly reason: string;
}

/** A running guest, as its driver sees it. */
export interface GuestHandle {
  /** The guest's own process (QEMU's), when it has one. */
  readonly pid: number | undefined;
  /** How the guest runs: 'kvm' or 'tcg' for QEMU, 'sim' for the simulator. */
  readonly accelerator: string;
  pause(): Promise<void>;
  resume(): Promise<void>;
  reset(): Promise<void>;
  /** Graceful: the guest is asked to power off, and stopped hard after `timeoutMs`. Resolves once it is gone. */
  stop(graceful: boolean, timeoutMs: number): Promise<void>;
  /**
   * Lets go of the guest without stopping it: it goes on in its own session and a later VMM
   * adopts it (the daemon is going, its guests stay). Absent where a guest cannot outlive its VMM (sim).
   */
  release?(): void;
  /** Settles once, when the guest is gone for whatever reason. */
  readonly exited: Promise<GuestExit>;
  /**
   * Source side of a migration: sends the running guest to `target` and resolves once it is there
   * (the guest here is then left paused). The stream is TLS with this node's certificate, and the
   * target must prove it is `target.node` with one from the same cluster CA.
   */
  migrate(target: MigrationTarget, credentials: MigrationCredentials): Promise<void>;
  /** Target side: resolves once the guest that came in runs. */
  awaitRunning(timeoutMs: number): Promise<void>;
  /** Sends what the user typed to the guest's serial port (its echo, if any, lands in the console log). */
  consoleInput(data: string): Promise<void>;
  /** What a simulated guest carries across a migration (nothing for a real one: its memory travels). */
  transferable(): unknown;
  /** Each disk's I/O counters (QEMU: query-blockstats); absent for a guest without disks of its own. */
  blockStats?(): Promise<DiskCounters[]>;
  /** Grows a disk, or takes or drops a snapshot of it, while the guest runs (QEMU: QMP); absent without disks. */
  changeDisk?(volume: string, change: LiveDiskChange): Promise<void>;
}

/**
 * This node's place in the cluster's PKI, as files in its home: the CA's certificate, the node's
 * certificate (CN and DNS SAN the node's name, for TLS server and client) and its key.
 */
export interface MigrationCredentials {
  readonly node: string;
  readonly caCert: string;
  readonly cert: string;
  readonly key: string;
}

/** Where a migrating guest goes: a node's address, never a URI (the driver builds that itself). */
export interface MigrationAddress {
  /** An IPv4 or IPv6 literal, or a host name. */
  readonly host: string;
  readonly port: number;
}

export interface MigrationTarget {
  /** The node whose certificate the receiving end must present. */
  readonly node: string;
  /** Absent for drivers without a migration stream (sim). */
  readonly address?: MigrationAddress;
}

/** Target side of a migration: where to listen, and the one node that may send the guest. */
export interface MigrationListen {
  readonly host: string;
  readonly from: string;
}

/** A guest waiting for a migration: where the source sends it (nothing for a simulated guest). */
export interface IncomingGuest {
  readonly handle: GuestHandle;
  readonly address?: MigrationAddress;
}

/**
 * What a driver needs of a system to run it: the part of the system object (actors/model.ts) it
 * reads, stated here so that drivers need nothing from above them. A parsed system object is one.
 */
export interface GuestSpec {
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** A kernel to boot directly, or the disk to boot from (a pool's `POOL/VOLUME`, or an absolute image path). */
  readonly boot?: { readonly kernel: string; readonly initrd?: string; readonly cmdline?: string } | { readonly disk: string };
  /** The NICs in order: each becomes the tap the Network service made for its index. */
  readonly nics: readonly { readonly mac?: string; readonly model: 'virtio' | 'e1000' }[];
  readonly display?: 'none' | 'vnc';
  /** An HA system: its QEMU is started by the node's fence guard (paths.guardSocket) and dies with it. */
  readonly ha?: boolean;
}

/** A way to run systems: `qemu` (real virtual machines) or `sim` (simulated guests). */
export interface SystemDriver {
  readonly name: 'qemu' | 'sim';
  start(id: string, spec: GuestSpec, paths: GuestPaths): Promise<GuestHandle>;
  /** Prepares to receive a migrating guest from `listen.from`, listening on `listen.host` (this node's address). */
  incoming(id: string, spec: GuestSpec, paths: GuestPaths, listen: MigrationListen, credentials: MigrationCredentials, transferred: unknown): Promise<IncomingGuest>;
}
