/** The node's block devices, as `lsblk -J -b -O` reports them (children flattened, each naming its parent). */
import { z } from 'zod';
import { parseOutput, runTool } from './run.js';

const TIMEOUT_MS = 15_000;

interface LsblkDevice {
  kname?: string | null;
  name: string;
  path?: string | null;
  size?: number | string | null;
  type?: string | null;
  model?: string | null;
  serial?: string | null;
  rota?: boolean | string | null;
  fstype?: string | null;
  fsused?: number | string | null;
  mountpoints?: (string | null)[] | null;
  mountpoint?: string | null;
  children?: LsblkDevice[];
}

const deviceSchema: z.ZodType<LsblkDevice> = z.lazy(() =>
  z.looseObject({
    kname: z.string().nullish(),
    name: z.string(),
    path: z.string().nullish(),
    size: z.union([z.number(), z.string()]).nullish(),
    type: z.string().nullish(),
    model: z.string().nullish(),
    serial: z.string().nullish(),
    rota: z.union([z.boolean(), z.string()]).nullish(),
    fstype: z.string().nullish(),
    fsused: z.union([z.number(), z.string()]).nullish(),
    mountpoints: z.array(z.string().nullable()).nullish(),
    mountpoint: z.string().nullish(),
    children: z.array(deviceSchema).optional(),
  }),
);

export interface BlockDevice {
  readonly kname: string;
  readonly path: string;
  readonly sizeBytes: number;
  readonly type: string;
  readonly model: string | null;
  readonly serial: string | null;
  readonly rotational: boolean | null;
  readonly fstype: string | null;
  readonly mountpoints: readonly string[];
  readonly usedBytes: number | null;
  readonly parent: string | null;
}

function integer(value: number | string | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  const parsed = typeof value === 'number' ? value : Number(value);
  return Number.isSafeInteger(parsed) && parsed >= 0 ? parsed : null;
}

function flatten(devices: readonly LsblkDevice[], parent: string | null, out: BlockDevice[]): void {
  for (const device of devices) {
    const kname = device.kname ?? device.name;
    out.push({
      kname,
      path: device.path ?? `/dev/${kname}`,
      sizeBytes: integer(device.size) ?? 0,
      type: device.type ?? 'unknown',
      model: device.model?.trim() || null,
      serial: device.serial?.trim() || null,
      rotational: typeof device.rota === 'boolean' ? device.rota : device.rota === '1' ? true : device.rota === '0' ? false : null,
      fstype: device.fstype ?? null,
      mountpoints: (device.mountpoints ?? [device.mountpoint ?? null]).filter((mount): mount is string => typeof mount === 'string'),
      usedBytes: integer(device.fsused),
      parent,
    });
    if (device.children) flatten(device.children, kname, out);
  }
}

/** Every block device of the node, partitions and loop devices included. */
export async function listBlockDevices(): Promise<BlockDevice[]> {
  const args = ['-J', '-b', '-O'];
  const text = await runTool('lsblk', args, { timeoutMs: TIMEOUT_MS });
  const parsed = parseOutput(`lsblk ${args.join(' ')}`, text, z.looseObject({ blockdevices: z.array(deviceSchema) }));
  const out: BlockDevice[] = [];
  flatten(parsed.blockdevices, null, out);
  return out;
}
