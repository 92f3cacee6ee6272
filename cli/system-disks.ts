/**
 * A system's disks from the command line: `--disk POOL/NAME[,..]` and `acp system disk attach|detach`.
 */
import type { Argv } from 'yargs';
import type { RecordView } from '../actors/cdb/index.js';
import { newSystemSchema, systemObjectSchema } from '../actors/model.js';
import { requireSystemVolumes, type VolumeUse } from '../actors/system-references.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { assertName } from '../runtime/path.js';
import { printJson } from './output.js';
import { parseVolumeRef } from './storage.js';

export interface DisksGlobal {
  home: string;
  json: boolean;
}

type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;
type Run = (argv: DisksGlobal, body: () => Promise<number | void>) => Promise<void>;

function usage(message: string): AcpError {
  return new AcpError('ACP_ERR_CLI_USAGE', message);
}

const YES = ['true', 'on', 'yes', '1'];
const NO = ['false', 'off', 'no', '0'];

/**
 * `POOL/NAME[,bus=virtio|scsi|ide][,cache=..][,readonly[=true|false]]`: one disk of a system (the
 * schema checks bus and cache). `what` names where it was given: `--disk`, or attach's `disk`.
 */
export function parseDisk(text: string, what = '--disk'): Record<string, unknown> {
  const [ref, ...options] = text.split(',');
  const { pool, name } = parseVolumeRef(ref ?? '', `${what} ${text}:`);
  const disk: Record<string, unknown> = { pool, volume: name };
  const seen = new Set<string>();
  for (const option of options) {
    const [key = '', value, ...rest] = option.split('=');
    if (rest.length > 0) throw usage(`${what} ${text}: '${option}' is not KEY=VALUE`);
    if (seen.has(key)) throw usage(`${what} ${text}: ${key} given twice; give it once`);
    seen.add(key);
    switch (key) {
      case 'bus':
      case 'cache':
        if (value === undefined) throw usage(`${what} ${text}: ${key} needs a value`);
        disk[key] = value;
        break;
      case 'readonly': {
        const said = value?.toLowerCase();
        if (said !== undefined && !YES.includes(said) && !NO.includes(said)) {
          throw usage(`${what} ${text}: readonly takes true or false (also on/off, yes/no, 1/0), or no value for true; not '${value}'`);
        }
        disk['readonly'] = said === undefined || YES.includes(said);
        break;
      }
      default:
        throw usage(`${what} ${text}: unknown option '${key}' (bus, cache, readonly)`);
    }
  }
  return disk;
}

type Disk = { pool: string; volume: string; bus: string };

/**
 * `acp system disk attach|detach`: edits the system object's `disks` with a compare-and-set. The
 * change takes effect at the system's next start.
 */
export function systemDiskCommands(y: Argv<DisksGlobal>, run: Run, withClient: WithClient): Argv<DisksGlobal> {
  /** A new disk list for system `id`, checked as a new spec (attach) or as a stored one (detach, which must work on any). */
  const edit = async (client: AcpClient, id: string, change: (disks: Record<string, unknown>[]) => Record<string, unknown>[], added?: VolumeUse) => {
    const key = `object/system/${assertName(id, 'system')}`;
    const current = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no system '${id}' (acp system create ${id} ...)`);
      throw error;
    });
    const spec = current.record.value as { disks?: Record<string, unknown>[]; boot?: { disk?: unknown } };
    const disks = change(spec.disks ?? []);
    // Booting from a volume that is no longer one of its disks would refuse every start: that boot goes too.
    const bootDisk = typeof spec.boot?.disk === 'string' && !spec.boot.disk.startsWith('/') ? spec.boot.disk : undefined;
    const bootGone = bootDisk !== undefined && !disks.some((disk) => `${String(disk['pool'])}/${String(disk['volume'])}` === bootDisk);
    const { boot: _boot, ...withoutBoot } = spec;
    const checked = (added === undefined ? systemObjectSchema : newSystemSchema).safeParse({ ...(bootGone ? withoutBoot : spec), disks });
    if (!checked.success) {
      const issue = checked.error.issues[0]!;
      throw usage(`bad disk for system '${id}': field '${issue.path.join('.')}': ${issue.message}`);
    }
    if (added !== undefined) await requireSystemVolumes((message) => client.ask('cdb', message), [added], undefined);
    await client.ask('cdb', { type: 'cdb.cas', key, value: checked.data, expect: current.record.version });
    if (bootGone) process.stderr.write(`${id} no longer boots from ${bootDisk} (its boot.disk): it boots from its remaining disks in order\n`);
    return checked.data.disks;
  };
  const show = (argv: DisksGlobal, id: string, disks: readonly Disk[]) => {
    if (argv.json) printJson({ id, disks });
    else process.stdout.write(`${id}: ${disks.length === 0 ? 'no disks' : disks.map((disk, index) => `${index}: ${disk.pool}/${disk.volume} (${disk.bus})`).join(', ')}; the change takes effect at its next start\n`);
  };
  return y
    .command('attach <id> <disk>', 'add a disk: POOL/NAME[,bus=virtio|scsi|ide][,cache=..][,readonly[=true|false]] (an ISO is a CD-ROM: acp system create --iso)', (c) => c.positional('id', { type: 'string', demandOption: true }).positional('disk', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const disk = parseDisk(argv.disk, 'disk');
          const use = { pool: String(disk['pool']), volume: String(disk['volume']) };
          const disks = await edit(
            client,
            argv.id,
            (existing) => {
              if (existing.some((other) => other['pool'] === use.pool && other['volume'] === use.volume)) throw usage(`system '${argv.id}' has ${use.pool}/${use.volume} already`);
              return [...existing, disk];
            },
            use,
          );
          show(argv, argv.id, disks);
        }),
      ),
    )
    .command('detach <id> <which>', 'remove a disk, by its index or POOL/NAME', (c) => c.positional('id', { type: 'string', demandOption: true }).positional('which', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const disks = await edit(client, argv.id, (existing) => {
            const index = /^\d+$/.test(argv.which) ? Number(argv.which) : existing.findIndex((disk) => `${String(disk['pool'])}/${String(disk['volume'])}` === argv.which);
            if (index < 0 || index >= existing.length) throw usage(`system '${argv.id}' has no disk ${argv.which} (it has ${existing.length})`);
            return existing.filter((_, at) => at !== index);
          });
          show(argv, argv.id, disks);
        }),
      ),
    )
    .demandCommand(1, 'name a disk command: attach, detach');
}
