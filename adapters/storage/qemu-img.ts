/**
 * Every qemu-img call ACP makes: create, info (--output=json), resize, snapshot (-c, -a, -d, -l),
 * convert (a full copy) and a linked clone (create -b). Files are named by the caller, which has
 * checked them against its pool (actors/storage/paths.ts); here they are argv entries only.
 */
import { z } from 'zod';
import { parseOutput, runTool } from './run.js';

const QUICK_MS = 30_000;
/** Copying or converting a whole image takes as long as the image is large: generous. */
const COPY_MS = 60 * 60_000;

export type ImageFormat = 'qcow2' | 'raw';

const infoSchema = z.looseObject({
  filename: z.string(),
  format: z.string(),
  'virtual-size': z.number().int().min(0),
  'actual-size': z.number().int().min(0).optional(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
  'dirty-flag': z.boolean().optional(),
  snapshots: z.array(z.looseObject({ id: z.string(), name: z.string(), 'vm-state-size': z.number().optional(), 'date-sec': z.number().optional() })).optional(),
  'format-specific': z.looseObject({ data: z.looseObject({ 'data-file': z.string().optional() }).optional() }).optional(),
});

export interface ImageInfo {
  readonly file: string;
  readonly format: string;
  readonly virtualSize: number;
  readonly actualSize: number | null;
  /** The backing chain, nearest first (files). */
  readonly backingChain: readonly string[];
  readonly snapshots: readonly string[];
  /** A qcow2's external data file, if it keeps its data in another file. */
  readonly dataFile: string | null;
}

export async function createImage(file: string, format: ImageFormat, sizeBytes: number): Promise<void> {
  // preallocation=off: a new volume costs nothing until it is written.
  await runTool('qemu-img', ['create', '-q', '-f', format, ...(format === 'qcow2' ? ['-o', 'preallocation=off'] : []), file, String(sizeBytes)], { timeoutMs: QUICK_MS });
}

/** A linked clone: a qcow2 whose reads fall through to `backing` (which must then stay as it is). */
export async function createLinkedClone(file: string, backing: string, backingFormat: ImageFormat): Promise<void> {
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', backingFormat, file], { timeoutMs: QUICK_MS });
}

/** A full, independent copy of `source` (its backing chain flattened) as `format`. */
export async function convertImage(source: string, sourceFormat: string, target: string, format: ImageFormat): Promise<void> {
  await runTool('qemu-img', ['convert', '-q', '-f', sourceFormat, '-O', format, source, target], { timeoutMs: COPY_MS });
}

/** Information about the image, and its backing chain (`--backing-chain`). */
export async function imageInfo(file: string, format?: string): Promise<ImageInfo> {
  const args = ['info', '--output=json', '--backing-chain', ...(format ? ['-f', format] : []), '-U', file];
  const text = await runTool('qemu-img', args, { timeoutMs: QUICK_MS });
  const chain = parseOutput(`qemu-img ${args.join(' ')}`, text, z.array(infoSchema).min(1));
  const top = chain[0]!;
  return {
    file: top.filename,
    format: top.format,
    virtualSize: top['virtual-size'],
    actualSize: top['actual-size'] ?? null,
    backingChain: chain.slice(1).map((entry) => entry.filename),
    snapshots: (top.snapshots ?? []).map((snapshot) => snapshot.name),
    dataFile: top['format-specific']?.data?.['data-file'] ?? null,
  };
}

/** Grows (or, with `shrink`, shrinks: the data past the new end is lost) the image's virtual size. */
export async function resizeImage(file: string, format: ImageFormat, sizeBytes: number, shrink = false): Promise<void> {
  await runTool('qemu-img', ['resize', '-q', '-f', format, ...(shrink ? ['--shrink'] : []), file, String(sizeBytes)], { timeoutMs: QUICK_MS });
}

export type SnapshotOp = 'create' | 'apply' | 'delete';

/** An internal qcow2 snapshot: made (-c), rolled back to (-a) or deleted (-d). */
export async function snapshotImage(file: string, op: SnapshotOp, snapshot: string): Promise<void> {
  const flag = op === 'create' ? '-c' : op === 'apply' ? '-a' : '-d';
  // `snapshot` takes no -f: the format is fixed through --image-opts instead of probed.
  await runTool('qemu-img', ['snapshot', '-q', '--image-opts', flag, snapshot, `driver=qcow2,file.driver=file,file.filename=${file.replace(/,/g, ',,')}`], { timeoutMs: QUICK_MS });
}

/** `qemu-img bench`: the baseline of bench/storage (sequential writes of `count` × `bufferSize` bytes). */
export async function benchImage(file: string, format: ImageFormat, count: number, bufferSize: number): Promise<string> {
  return runTool('qemu-img', ['bench', '-w', '-f', format, '-c', String(count), '-s', String(bufferSize), '-S', String(bufferSize), '-t', 'none', '-n', file], { timeoutMs: COPY_MS });
}
