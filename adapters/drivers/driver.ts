import type { SystemObject } from '../../actors/model.js';

/** Where a guest keeps its files: its console log, and sockets for drivers that use them. */
export interface GuestPaths {
  readonly consoleLog: string;
  readonly runDir: string;
  /** For QEMU: what the node's probe found works (TCG when absent). */
  readonly accelerator?: 'kvm' | 'tcg';
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
  /** Settles once, when the guest is gone for whatever reason. */
  readonly exited: Promise<GuestExit>;
  /** Source side of a migration: sends the running guest to `uri` and resolves once it is there (the guest here is then left paused). */
  migrate(uri: string): Promise<void>;
  /** Target side: resolves once the guest that came in runs. */
  awaitRunning(timeoutMs: number): Promise<void>;
  /** What a simulated guest carries across a migration (nothing for a real one: its memory travels). */
  transferable(): unknown;
}

/** A guest waiting for a migration: where the source sends it. */
export interface IncomingGuest {
  readonly handle: GuestHandle;
  readonly uri: string;
}

/** A way to run systems: `qemu` (real virtual machines) or `sim` (simulated guests). */
export interface SystemDriver {
  readonly name: SystemObject['driver'];
  start(id: string, spec: SystemObject, paths: GuestPaths): Promise<GuestHandle>;
  /** Prepares to receive a migrating guest, listening on `host` (this node's address). */
  incoming(id: string, spec: SystemObject, paths: GuestPaths, host: string, transferred: unknown): Promise<IncomingGuest>;
}
