/** `acp system create`'s spec: from `--spec`/`--file` and the flags laid over it, checked as a new spec. */
import { newSystemSchema, type SystemObject } from '../actors/model.js';
import { readSmallFile } from './small-file.js';
import { AcpError } from '../runtime/errors.js';
import { isValidName } from '../runtime/path.js';
import { parseNic } from './network.js';
import { parseVolumeRef } from './storage.js';
import { parseDisk } from './system-disks.js';

export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AcpError('ACP_ERR_CLI_BAD_JSON', `${what} is not valid JSON (${(error as Error).message})`);
  }
}

export interface CreateFlags {
  spec?: string;
  file?: string;
  vcpus?: number;
  memory?: number;
  driver?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disk?: string[];
  iso?: string;
  ha?: boolean;
  node?: string;
  restart?: string;
  nic?: string[];
  autostart?: boolean;
  'start-order'?: number;
  'start-delay'?: number;
  display?: 'none' | 'vnc';
  prefer?: string;
  strict?: boolean;
  'anti-affinity'?: string;
  'max-restart'?: number;
  'max-relocate'?: number;
}

/** `--prefer n1:2,n2:1`: node names with priorities (higher first; a name alone has priority 1). */
export function parsePrefer(text: string): Record<string, number> {
  const prefer: Record<string, number> = {};
  for (const part of text.split(',')) {
    const match = /^([^:]+)(?::(\d{1,4}))?$/.exec(part.trim());
    if (!match || !isValidName(match[1]!)) throw new AcpError('ACP_ERR_CLI_USAGE', `--prefer takes NODE[:PRIORITY],... like n1:2,n2:1, not '${part}'`);
    const priority = match[2] === undefined ? 1 : Number(match[2]);
    if (priority > 1000) throw new AcpError('ACP_ERR_CLI_USAGE', `--prefer: priority ${priority} for ${match[1]} is over 1000`);
    if (prefer[match[1]!] !== undefined) throw new AcpError('ACP_ERR_CLI_USAGE', `--prefer names ${match[1]} twice`);
    prefer[match[1]!] = priority;
  }
  return prefer;
}

/** A system object from `--spec`/`--file`, with flags laid over it; validated as a new spec (newSystemSchema). */
export function systemSpec(id: string, flags: CreateFlags): SystemObject {
  if (flags.spec !== undefined && flags.file !== undefined) throw new AcpError('ACP_ERR_CLI_USAGE', 'give --spec or --file, not both');
  let base: Record<string, unknown> = {};
  if (flags.spec !== undefined) base = parseJson(flags.spec, '--spec') as Record<string, unknown>;
  if (flags.file !== undefined) {
    base = parseJson(readSmallFile(flags.file, '--file'), flags.file) as Record<string, unknown>;
  }
  if (typeof base !== 'object' || base === null || Array.isArray(base)) throw new AcpError('ACP_ERR_CLI_BAD_JSON', 'the spec must be a JSON object');
  // --disk /path/image.qcow2 boots from an image file (before pools); --disk POOL/NAME[,bus=..] is a disk (repeat for more).
  const imageFiles = (flags.disk ?? []).filter((disk) => disk.startsWith('/'));
  const volumes = (flags.disk ?? []).filter((disk) => !disk.startsWith('/')).map((disk) => parseDisk(disk));
  if (imageFiles.length > 1) throw new AcpError('ACP_ERR_CLI_USAGE', 'boot from one image file (--disk /path), not several');
  if (flags.kernel !== undefined && imageFiles.length > 0) throw new AcpError('ACP_ERR_CLI_USAGE', 'boot from --kernel or from --disk /path, not both');
  const boot =
    flags.kernel !== undefined
      ? { kernel: flags.kernel, ...(flags.initrd === undefined ? {} : { initrd: flags.initrd }), ...(flags.cmdline === undefined ? {} : { cmdline: flags.cmdline }) }
      : imageFiles[0] !== undefined
        ? { disk: imageFiles[0] }
        : undefined;
  const iso = flags.iso === undefined ? undefined : parseVolumeRef(flags.iso, '--iso');
  if (boot === undefined && (flags.initrd !== undefined || flags.cmdline !== undefined)) throw new AcpError('ACP_ERR_CLI_USAGE', '--initrd and --cmdline go with --kernel');
  const spec = {
    name: id,
    ...base,
    ...(flags.vcpus === undefined ? {} : { vcpus: flags.vcpus }),
    ...(flags.memory === undefined ? {} : { memoryMiB: flags.memory }),
    ...(flags.driver === undefined ? {} : { driver: flags.driver }),
    ...(boot === undefined ? {} : { boot }),
    ...(flags.ha === undefined ? {} : { ha: flags.ha }),
    ...(flags.node === undefined ? {} : { node: flags.node }),
    ...(flags.restart === undefined ? {} : { restart: flags.restart }),
    ...(flags.nic === undefined || flags.nic.length === 0 ? {} : { nics: flags.nic.map(parseNic) }),
    ...(volumes.length === 0 ? {} : { disks: volumes }),
    ...(iso === undefined ? {} : { iso: { pool: iso.pool, volume: iso.name } }),
    ...(flags.display === undefined ? {} : { display: flags.display }),
    ...(flags.autostart === undefined ? {} : { autostart: flags.autostart }),
    ...(flags['start-order'] === undefined ? {} : { startOrder: flags['start-order'] }),
    ...(flags['start-delay'] === undefined ? {} : { startDelayS: flags['start-delay'] }),
    ...(flags.prefer === undefined ? {} : { prefer: parsePrefer(flags.prefer) }),
    ...(flags.strict === undefined ? {} : { strict: flags.strict }),
    ...(flags['anti-affinity'] === undefined ? {} : { antiAffinity: flags['anti-affinity'].split(',').map((other) => other.trim()) }),
    ...(flags['max-restart'] === undefined ? {} : { maxRestart: flags['max-restart'] }),
    ...(flags['max-relocate'] === undefined ? {} : { maxRelocate: flags['max-relocate'] }),
  };
  const placement = spec as { ha?: unknown; prefer?: unknown; strict?: unknown; antiAffinity?: unknown; maxRestart?: unknown; maxRelocate?: unknown; haState?: unknown };
  const haOnly = (['prefer', 'strict', 'antiAffinity', 'maxRestart', 'maxRelocate', 'haState'] as const).filter((field) => placement[field] !== undefined);
  if (placement.ha !== true && haOnly.length > 0) throw new AcpError('ACP_ERR_CLI_USAGE', `${haOnly.join(', ')} ${haOnly.length === 1 ? 'is' : 'are'} for HA systems: add --ha`);
  if (placement.strict === true && placement.prefer === undefined) throw new AcpError('ACP_ERR_CLI_USAGE', '--strict keeps the system on its preferred nodes: name them with --prefer');
  const wanted = spec as { autostart?: unknown; ha?: unknown; node?: unknown; startOrder?: unknown; startDelayS?: unknown };
  if (wanted.autostart === true && wanted.ha === true) throw new AcpError('ACP_ERR_CLI_USAGE', 'autostart is for non-HA systems: an HA system is started by the HA manager; drop --autostart or --ha');
  if (wanted.autostart === true && wanted.node === undefined) throw new AcpError('ACP_ERR_CLI_USAGE', 'an autostart system starts with its node: give it one with --node');
  if (wanted.autostart !== true && (wanted.startOrder !== undefined || wanted.startDelayS !== undefined)) throw new AcpError('ACP_ERR_CLI_USAGE', '--start-order and --start-delay go with --autostart');
  const result = newSystemSchema.safeParse(spec);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new AcpError('ACP_ERR_CLI_USAGE', `bad system spec: ${issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'the spec'}: ${issue.message}`);
  }
  return result.data;
}
