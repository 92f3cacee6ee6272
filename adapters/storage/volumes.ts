/**
 * Volume files, made and changed as the Storage service decided: qemu-img for images, btrfs for
 * subvolumes and their snapshots. Paths come from actors/storage/layout.ts (checked there).
 */
import { constants, createWriteStream, type Stats } from 'node:fs';
import { mkdir, open, realpath, rm, rename, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { dirname, isAbsolute, relative } from 'node:path';
import { AcpError } from '../../runtime/errors.js';
import { createSubvolume, deleteSubvolume, snapshotSubvolume } from './btrfs.js';
import { convertImage, createImage, createLinkedClone, imageInfo, resizeImage, snapshotImage, type ImageFormat } from './qemu-img.js';
import { entries } from './fs.js';

/** Where a volume's image (and, on btrfs, its subvolume and snapshots) is: actors/storage/layout.ts decides it. */
export interface VolumeLayout {
  /** The image file QEMU opens. */
  readonly file: string;
  /** btrfs: the volume's subvolume. */
  readonly subvolume?: string;
  /** btrfs: where its snapshots are. */
  readonly snapshots?: string;
}

export type VolumeFormat = ImageFormat | 'iso';

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** A new, empty image (in a new subvolume on btrfs); nothing is left behind when it fails. */
export async function createVolume(layout: VolumeLayout, format: ImageFormat, sizeBytes: number): Promise<void> {
  if (await exists(layout.subvolume ?? layout.file)) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `${layout.subvolume ?? layout.file} exists already (a volume ACP does not know of?); remove it or pick another name`);
  if (layout.subvolume) await createSubvolume(layout.subvolume);
  try {
    await createImage(layout.file, format, sizeBytes);
  } catch (error) {
    await removeVolume(layout).catch(() => undefined);
    throw error;
  }
}

/** The volume's files go: its image, or its subvolume and its snapshots'. */
export async function removeVolume(layout: VolumeLayout): Promise<void> {
  if (layout.subvolume) {
    if (layout.snapshots) {
      for (const snapshot of await entries(layout.snapshots)) await deleteSubvolume(`${layout.snapshots}/${snapshot}`);
      await rm(layout.snapshots, { recursive: true, force: true });
    }
    if (await exists(layout.subvolume)) await deleteSubvolume(layout.subvolume);
    return;
  }
  await rm(layout.file, { force: true });
}

export async function resizeVolume(layout: VolumeLayout, format: ImageFormat, sizeBytes: number, shrink: boolean): Promise<void> {
  await resizeImage(layout.file, format, sizeBytes, shrink);
}

/** A snapshot: a read-only subvolume snapshot on btrfs, an internal qcow2 snapshot elsewhere. */
export async function snapshotVolume(layout: VolumeLayout, op: 'create' | 'apply' | 'delete', snapshot: string, snapshotDir: string | undefined): Promise<void> {
  if (!layout.subvolume || !snapshotDir) {
    await snapshotImage(layout.file, op, snapshot);
    return;
  }
  switch (op) {
    case 'create':
      await mkdir(dirname(snapshotDir), { recursive: true });
      await snapshotSubvolume(layout.subvolume, snapshotDir, false);
      return;
    case 'apply': {
      // The current state goes aside first, so a failed snapshot leaves the volume as it was.
      const aside = `${layout.subvolume}.rollback`;
      if (await exists(aside)) await deleteSubvolume(aside);
      await rename(layout.subvolume, aside);
      try {
        await snapshotSubvolume(snapshotDir, layout.subvolume, true);
      } catch (error) {
        await rename(aside, layout.subvolume);
        throw error;
      }
      await deleteSubvolume(aside);
      return;
    }
    case 'delete':
      await deleteSubvolume(snapshotDir);
      return;
  }
}

/**
 * A copy of `source` as a new volume: linked (a qcow2 over the source, which must then stay) or
 * full (independent: a writable subvolume snapshot on btrfs, a qemu-img convert elsewhere).
 */
export async function cloneVolume(source: VolumeLayout, sourceFormat: ImageFormat, target: VolumeLayout, linked: boolean): Promise<void> {
  if (await exists(target.subvolume ?? target.file)) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `${target.subvolume ?? target.file} exists already; pick another name`);
  if (!linked && source.subvolume && target.subvolume) {
    await snapshotSubvolume(source.subvolume, target.subvolume, true);
    return;
  }
  if (target.subvolume) await createSubvolume(target.subvolume);
  try {
    if (linked) await createLinkedClone(target.file, source.file, sourceFormat);
    else await convertImage(source.file, sourceFormat, target.file, sourceFormat);
  } catch (error) {
    await removeVolume(target).catch(() => undefined);
    throw error;
  }
}

/**
 * A host file made a volume: an ISO copied as it is, an image converted (its format probed once, by
 * qemu-img). Only files inside `importDirs` (after following links) are taken: the daemon runs as
 * root, and an import must not turn any file of the host (/etc/shadow) into a volume someone reads.
 */
export async function importVolume(file: string, target: VolumeLayout, format: VolumeFormat, importDirs: readonly string[]): Promise<void> {
  if (!(await exists(file))) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `${file} does not exist on this node`);
  const real = await realpath(file);
  // Checked before anything is created: reading a FIFO or a device would wait forever (and hold
  // one of libuv's four threads, which the store's commits need too).
  const kind = await stat(real);
  if (!kind.isFile()) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} is ${fileKind(kind)}, not a regular file: import an image file`);
  const allowed = await Promise.all(importDirs.map((dir) => realpath(dir).catch(() => undefined)));
  if (!allowed.some((dir) => dir !== undefined && isInside(dir, real))) {
    throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} is not in an import directory of this node: copy the image into ${importDirs.join(' or ')} first`);
  }
  file = real;
  if (await exists(target.subvolume ?? target.file)) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `${target.subvolume ?? target.file} exists already; pick another name`);
  if (target.subvolume) await createSubvolume(target.subvolume);
  try {
    if (format === 'iso') await copyRegularFile(file, kind, target.file);
    else {
      // qemu-img reads a copy of ours: by its path the file could be swapped (for a link, a FIFO)
      // between the checks and the conversion.
      const staged = `${target.file}.import`;
      try {
        await copyRegularFile(file, kind, staged);
        const info = await imageInfo(staged);
        if (!IMPORTED_FORMATS.includes(info.format)) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} is a ${info.format} image: import ${IMPORTED_FORMATS.join(', ')} (qemu-img convert -O qcow2 it first)`);
        if (info.backingChain.length > 0) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} has a backing file (${info.backingChain[0]}); import a standalone image (qemu-img convert it first)`);
        if (info.dataFile !== null) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} keeps its data in another file (${info.dataFile}); import a standalone image (qemu-img convert it first)`);
        await convertImage(staged, info.format, target.file, format);
      } finally {
        await rm(staged, { force: true });
      }
    }
  } catch (error) {
    await removeVolume(target).catch(() => undefined);
    throw error;
  }
}

/**
 * The image formats an import takes: each keeps its data in the one file. Others can name further
 * files (a VMDK descriptor's extents), which the daemon would read as root.
 */
const IMPORTED_FORMATS: readonly string[] = ['raw', 'qcow2', 'vdi', 'vpc', 'vhdx'];

/** What a file that is not a regular one is, for a refusal. */
function fileKind(kind: Stats): string {
  if (kind.isDirectory()) return 'a directory';
  if (kind.isFIFO()) return 'a FIFO';
  if (kind.isSocket()) return 'a socket';
  if (kind.isBlockDevice() || kind.isCharacterDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Copies `file` if it is still a regular file when opened: opened without blocking and without
 * following a link, so a file swapped for a FIFO or a link after the checks is refused, not read.
 */
async function copyRegularFile(file: string, checked: Stats, to: string): Promise<void> {
  const source = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW).catch((error: unknown) => {
    throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `cannot open ${file}: ${(error as Error).message}`);
  });
  try {
    const kind = await source.stat();
    if (!kind.isFile()) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} is ${fileKind(kind)}, not a regular file: import an image file`);
    // The file that was checked, not one put in its place (O_NOFOLLOW covers the last part of the path only).
    if (kind.dev !== checked.dev || kind.ino !== checked.ino) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${file} changed while it was being imported; import it again`);
    await pipeline(source.createReadStream({ autoClose: false }), createWriteStream(to, { flags: 'wx' }));
  } finally {
    await source.close();
  }
}

function isInside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel.length > 0 && !rel.startsWith('..') && !isAbsolute(rel);
}
