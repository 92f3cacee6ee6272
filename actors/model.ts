/**
 * Over 400 lines, knowingly: the package's `acp/model` is this one module, every object type's
 * schema beside the key grammar that picks it, so that scripts import one thing.
 *
 * The cluster data model, in one place for the daemon, the CLI, the web UI and scripts
 * (`import { parseKey, objectSchemas } from 'acp/model'`).
 *
 * Keys:
 *   object/<type>/<id>          persistent, multi-writer (last writer wins on a hybrid logical clock)
 *   meta/<type>/<id>@<node>     in memory, one writer: the node named in the key
 *   stats/<type>/<id>@<node>    in memory with a short history, one writer: the node named
 * where <type> is node, system, network, storage/<device|pool|share|volume> or service/<sub-type>.
 */
import { z } from 'zod';
import { IFNAME_PATTERN } from '../adapters/interface-names.js';
import { HEADER_VALUE_PATTERN, HEADER_VALUE_RULE } from '../adapters/webhook.js';
import { AcpError } from '../runtime/errors.js';
import { NAME_PATTERN, NAME_RULE, nameSchema } from '../runtime/path.js';

export const KINDS = ['object', 'meta', 'stats'] as const;
export type Kind = (typeof KINDS)[number];

export const SERVICE_TYPES = ['framework', 'cdb', 'agent', 'api', 'network', 'storage', 'hypervisor', 'monitor', 'ha', 'webapi'] as const;
export const STORAGE_TYPES = ['device', 'pool', 'share', 'volume'] as const;

export const OBJECT_TYPES = [
  'node',
  'system',
  'network',
  'token',
  'revocation',
  'alarm',
  'alarm-target',
  ...STORAGE_TYPES.map((sub) => `storage/${sub}` as const),
  ...SERVICE_TYPES.map((sub) => `service/${sub}` as const),
  /** `object/ha/manager`: the HA manager's systems, written by the primary (term-stamped), read by the next one. */
  'ha',
  /** `object/chaos/<run>-<slot>`: the writes an `acp chaos run` makes to check that none acknowledged is lost. */
  'chaos',
] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];

const name = nameSchema;
const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'must be HOST:PORT');
const mac = z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'must be a lower-case MAC address like 52:54:00:12:34:56');
const labels = z.record(z.string().max(63), z.string().max(256));

/**
 * A whole number from `min` to `max`, the error naming both bounds whatever is wrong (zod's own
 * says 'expected int to be <=9007199254740991' for 1e308, the int's bound, not the field's).
 */
function wholeNumber(min: number, max: number) {
  const error = `must be a whole number from ${min} to ${max}`;
  return z.number().int({ error }).min(min, { error }).max(max, { error });
}

export const nodeObjectSchema = z.strictObject({
  name,
  cluster: name.optional(),
  /** The agent's address for other nodes (issue 4). */
  agent: hostPort.optional(),
  labels: labels.optional(),
  /** 0: the node follows the monitors' elections but never votes or stands (default 1). */
  votes: z.union([z.literal(0), z.literal(1)]).optional(),
  /** A vote-only member that never stands for election (a two-node cluster's third vote). */
  witness: z.boolean().optional(),
  /** false: the node serves no web UI or REST port (acp node set NAME --management off); absent or true: it does. */
  management: z.boolean().optional(),
  /** What this node's shutdown (`acp down`) does with its HA systems: see shutdownPolicyOf. */
  shutdownPolicy: z.enum(['conditional', 'migrate', 'freeze', 'failover']).optional(),
  /** In maintenance (acp node maintenance on): the HA manager places nothing here and moves its HA systems away. */
  maintenance: z.boolean().optional(),
});

/** A system's virtual NIC: a tap on `network`'s bridge (actors/network), untagged or with its VLAN tag or trunk. */
export const systemNicSchema = z.strictObject({
  network: name,
  mac: mac.optional(),
  model: z.enum(['virtio', 'e1000']).default('virtio'),
  vlan: wholeNumber(1, 4094).optional(),
  trunks: z.array(wholeNumber(1, 4094)).max(4094).optional(),
  mtu: wholeNumber(576, 9216).optional(),
  rateMbps: wholeNumber(1, 400_000).optional(),
  linkDown: z.boolean().optional(),
});

/** A system's disk: volume `volume` of pool `pool`, on a virtio, SCSI (virtio-scsi) or IDE bus. */
export const systemDiskSchema = z.strictObject({
  pool: name,
  volume: name,
  bus: z.enum(['virtio', 'scsi', 'ide']).default('virtio'),
  cache: z.enum(['none', 'writeback', 'writethrough', 'directsync', 'unsafe']).optional(),
  readonly: z.boolean().optional(),
});

export const systemObjectSchema = z.strictObject({
  name,
  vcpus: wholeNumber(1, 512).default(1),
  memoryMiB: wholeNumber(16, 16 * 1024 * 1024).default(512),
  driver: z.enum(['qemu', 'sim']).default('qemu'),
  boot: z
    .union([
      z.strictObject({ kernel: z.string().min(1).max(4096), initrd: z.string().max(4096).optional(), cmdline: z.string().max(4096).optional() }),
      /** `POOL/VOLUME` of one of its disks (booted first), or (as before pools) an image file's absolute path. */
      z.strictObject({ disk: z.string().min(1).max(4096) }),
    ])
    .optional(),
  /** Disks: volumes of pools (actors/storage), attached in this order; QEMU only (a simulated guest has none). */
  disks: z.array(systemDiskSchema).max(64).default([]),
  /** A CD-ROM: an ISO image kept as a volume of a pool whose content includes `iso`. */
  iso: z.strictObject({ pool: name, volume: name }).optional(),
  nics: z.array(systemNicSchema).max(32).default([]),
  /**
   * A graphical display: `vnc` gives a QEMU guest a VGA card and a VNC server on a Unix socket in
   * its run dir, shown in the web UI through noVNC (operator role). Absent or `none`: serial only.
   * A simulated guest has no display (refused at start).
   */
  display: z.enum(['none', 'vnc']).optional(),
  ha: z.boolean().default(false),
  /** HA: preferred nodes with priorities, higher first (acp system create --prefer n1:2,n2:1). */
  prefer: z.record(name, wholeNumber(0, 1000)).optional(),
  /** HA: only the preferred nodes, never others. */
  strict: z.boolean().optional(),
  /** HA: systems this one never shares a node with. */
  antiAffinity: z.array(name).max(256).optional(),
  /** HA: restarts on the same node after a crash before it is relocated (default 1). */
  maxRestart: wholeNumber(0, 100).optional(),
  /** HA: moves to other nodes once the restarts are used up (default 1). */
  maxRelocate: wholeNumber(0, 100).optional(),
  /** HA: whether the HA manager keeps it running (absent: started). */
  haState: z.enum(['started', 'stopped']).optional(),
  /** Placement: the node the system should run on. */
  node: name.optional(),
  restart: z.enum(['never', 'on-crash', 'always']).default('on-crash'),
  labels: labels.optional(),
  /**
   * Started when its node's daemon starts (non-HA systems placed on a node with `node`), in
   * ascending `startOrder` (unset: last), the next one `startDelayS` seconds after it. One that
   * runs already (its QEMU outlived the daemon and was adopted) is not started again.
   */
  autostart: z.boolean().optional(),
  startOrder: wholeNumber(0, 1_000_000).optional(),
  startDelayS: wholeNumber(0, 3600).optional(),
});

/**
 * A system spec as a user gives it (acp system create, acp system disk attach, the web API's POST
 * /systems): the object's schema and what a new spec must meet besides. A boot disk given as
 * POOL/VOLUME is one of its disks. A simulated guest has no disks or CD-ROM (the hypervisor hands
 * it none), so naming volumes for one is a mistake to refuse at once. Not the CDB's schema: specs
 * stored before, or merged from a node that has not this check, stay readable by the hypervisor,
 * the HA manager and the Storage service, and the CDB takes them as it did (a test's sim system
 * holding a volume stands in for a guest without QEMU).
 */
export const newSystemSchema = systemObjectSchema.superRefine((spec, ctx) => {
  // A boot disk named as POOL/VOLUME is one of its disks (a path is an image file: hostFilesOf).
  const bootDisk = spec.boot && 'disk' in spec.boot && !spec.boot.disk.startsWith('/') ? spec.boot.disk : undefined;
  if (bootDisk !== undefined && !spec.disks.some((disk) => `${disk.pool}/${disk.volume}` === bootDisk)) {
    ctx.addIssue({ code: 'custom', path: ['boot', 'disk'], message: `'${bootDisk}' is not one of its disks (${spec.disks.map((disk) => `${disk.pool}/${disk.volume}`).join(', ') || 'none'}); boot.disk names one of them as POOL/VOLUME, or an image file by its absolute path` });
  }
  // One volume is one disk: a second one on it fails only at start (QEMU's image lock).
  const volumes = spec.disks.map((disk) => `${disk.pool}/${disk.volume}`);
  const twice = volumes.find((volume, index) => volumes.indexOf(volume) !== index);
  if (twice !== undefined) ctx.addIssue({ code: 'custom', path: ['disks'], message: `volume ${twice} is given twice; each disk is a volume of its own (acp storage volume clone to copy one)` });
  spec.nics.forEach((nic, index) => {
    // Never accepted and ignored: no node realizes these yet (the Network service refuses them at start).
    const unrealized = [...(nic.vlan === undefined ? [] : ['vlan']), ...(nic.trunks === undefined ? [] : ['trunks']), ...(nic.rateMbps === undefined ? [] : ['rateMbps'])];
    if (unrealized.length > 0) ctx.addIssue({ code: 'custom', path: ['nics', index, unrealized[0]!], message: `a NIC's ${unrealized.join(' and ')} ${unrealized.length === 1 ? 'is' : 'are'} not realized on any node yet; put the NIC on a vlan network instead (acp network create NAME --type vlan --vlan N)` });
    if (nic.mac !== undefined && (Number.parseInt(nic.mac.slice(0, 2), 16) & 1) === 1) ctx.addIssue({ code: 'custom', path: ['nics', index, 'mac'], message: `${nic.mac} is a multicast address (its first octet is odd); a NIC's MAC is unicast, e.g. 52:54:00:12:34:56` });
  });
  if (spec.driver !== 'sim') return;
  const given = [...(spec.disks.length > 0 ? ['disks'] : []), ...(spec.iso ? ['iso'] : [])];
  if (given.length === 0) return;
  ctx.addIssue({ code: 'custom', path: [given[0]!], message: `a simulated system (driver sim) has no disks or CD-ROM; give ${given.join(' and ')} to a qemu system (driver qemu), or leave ${given.length === 1 ? 'it' : 'them'} out` });
});

/**
 * A Linux interface name as iproute2 takes it: at most 15 characters, none of them a slash, a
 * colon or white space (and never `.` or `..`). Only names this pattern accepts reach `ip`.
 */
export const ifnameSchema = z.string().regex(IFNAME_PATTERN, 'must be a Linux interface name: 1-15 characters of A-Z, a-z, 0-9, ., _, @, -');
const vlanId = wholeNumber(1, 4094);

/**
 * `object/network/<id>`: what each node that carries it realizes (actors/network):
 * - `bridge`: a Linux bridge (VLAN-aware when `vlanAware`, allowing `vids`);
 * - `vlan`: an 802.1Q network: a bridge with the uplink's `vlan` sub-interface in it (node-local without an uplink);
 * - `trunk`: a VLAN-aware bridge carrying `vids`, tagged on the uplink, to systems' NICs;
 * - `vpp-vlan`: a DPDK VPP VLAN sub-interface (only where VPP runs).
 * `uplinks` names each node's uplink (`uplink` is one name for every node); `nodes` which nodes carry it (default all).
 */
export const networkObjectSchema = z
  .strictObject({
    name,
    type: z.enum(['bridge', 'vlan', 'trunk', 'vpp-vlan']),
    vlan: vlanId.optional(),
    vids: z.array(vlanId).max(4094).optional(),
    vlanAware: z.boolean().optional(),
    uplink: ifnameSchema.optional(),
    uplinks: z.record(name, ifnameSchema).optional(),
    mtu: wholeNumber(576, 9216).optional(),
    nodes: z.array(name).max(1024).optional(),
  })
  .superRefine((network, context) => {
    if ((network.type === 'vlan' || network.type === 'vpp-vlan') && network.vlan === undefined) {
      context.addIssue({ code: 'custom', path: ['vlan'], message: `a ${network.type} network needs a vlan id (1-4094)` });
    }
    if (network.type !== 'vlan' && network.type !== 'vpp-vlan' && network.vlan !== undefined) {
      context.addIssue({ code: 'custom', path: ['vlan'], message: `a ${network.type} network takes no vlan id (vlan and vpp-vlan networks do)` });
    }
    if (network.type === 'trunk' && (network.vids === undefined || network.vids.length === 0)) {
      context.addIssue({ code: 'custom', path: ['vids'], message: 'a trunk network needs the VLAN ids it carries (vids)' });
    }
    if (network.vids !== undefined && network.type !== 'trunk' && !(network.type === 'bridge' && network.vlanAware === true)) {
      context.addIssue({ code: 'custom', path: ['vids'], message: 'vids go with a trunk, or a bridge with vlanAware: true' });
    }
    if (network.uplink !== undefined && network.uplinks !== undefined) {
      context.addIssue({ code: 'custom', path: ['uplinks'], message: 'give uplink (every node) or uplinks (per node), not both' });
    }
  });

/**
 * An absolute, normalized path: no `.` or `..` part, no doubled or trailing slash, no comma (QEMU
 * option values) and no control characters. Pools and shares live at such paths only.
 */
export const ABSOLUTE_PATH_PATTERN = /^(\/(?!\.{1,2}(\/|$))[^/\0-\x1f,]+)+$|^\/$/;
const absolutePath = z.string().max(4096).regex(ABSOLUTE_PATH_PATTERN, "must be an absolute path with no '.' or '..' parts, no doubled or trailing '/', no commas");

/** The host's own directories: the daemon is root, and a pool or a mount there would make or hide system files. */
const SYSTEM_DIRECTORIES = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/run', '/sbin', '/sys', '/usr'] as const;
/** Directories whose own contents matter, though a pool or mount may go below them. */
const SYSTEM_PARENTS = ['/', '/home', '/root', '/var', '/var/lib', '/tmp'] as const;

/**
 * Why a new pool or mount point may not be at `path` (a system directory, or one whose contents it
 * would take), or undefined. Checked when one is created, not in the stored schemas: a pool stored
 * before the rule must still be read.
 */
export function systemPathProblem(path: string): string | undefined {
  if ((SYSTEM_PARENTS as readonly string[]).includes(path)) return `${path} is a system directory itself; use a directory of its own below it`;
  const system = SYSTEM_DIRECTORIES.find((dir) => path === dir || path.startsWith(`${dir}/`));
  return system === undefined ? undefined : `${path} is ${path === system ? '' : 'inside '}${system}, a directory of the host's own system; use a directory of its own (e.g. /var/lib/acp/...)`;
}

/** `object/storage/device/<node>-<name>`: a block device a node's Storage service found (lsblk). */
export const storageDeviceSchema = z.strictObject({
  name,
  node: name,
  /** The kernel's name (sda, nvme0n1p1, loop0). */
  device: z.string().max(128).optional(),
  path: z.string().min(1).max(4096),
  sizeBytes: z.number().int().min(0).optional(),
  type: z.string().max(32).optional(),
  model: z.string().max(256).nullable().optional(),
  serial: z.string().max(256).nullable().optional(),
  rotational: z.boolean().nullable().optional(),
  fstype: z.string().max(64).nullable().optional(),
  mountpoints: z.array(z.string().max(4096)).max(64).optional(),
  /** Bytes used on its mounted filesystem, when it has one. */
  usedBytes: z.number().int().min(0).nullable().optional(),
  parent: z.string().max(128).nullable().optional(),
});

export const POOL_TYPES = ['dir', 'btrfs', 'lvm-thin'] as const;
export const POOL_CONTENT = ['images', 'iso'] as const;

/**
 * `object/storage/pool/<id>`: where volumes live on the nodes that carry it: `dir` (a directory),
 * `btrfs` (a btrfs filesystem: each volume a subvolume, snapshots subvolume snapshots), `lvm-thin`
 * (refused where the host has no device-mapper). The path is `path`, or the mount point of `share`
 * on each node. `shared`: the administrator states every node sees the same content there (as in
 * Proxmox); only systems whose disks are all on shared pools migrate.
 */
export const storagePoolSchema = z
  .strictObject({
    name,
    type: z.enum(POOL_TYPES),
    path: absolutePath.optional(),
    share: name.optional(),
    content: z.array(z.enum(POOL_CONTENT)).min(1).max(2).default(['images']),
    shared: z.boolean().default(false),
    nodes: z.array(name).max(1024).optional(),
  })
  .superRefine((pool, context) => {
    if ((pool.path === undefined) === (pool.share === undefined)) context.addIssue({ code: 'custom', path: ['path'], message: 'give a pool a path, or a share whose mount point is its path (one of the two)' });
    if (pool.path === '/') context.addIssue({ code: 'custom', path: ['path'], message: 'a pool is a directory of its own, not /' });
  });

export const SHARE_TYPES = ['sshfs', 'nfs', 'cifs'] as const;

/**
 * `object/storage/share/<id>`: a network file share that each node using it mounts at
 * `<home>/shares/<id>` (or `mountpoint`): `sshfs` (`user@server:path` over SSH, FUSE), `nfs`
 * (`server:path`), `cifs` (`//server/path`).
 */
export const storageShareSchema = z.strictObject({
  name,
  type: z.enum(SHARE_TYPES),
  server: z.string().max(253).regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$|^[0-9a-fA-F:]+$/, 'must be a host name or an IP address'),
  /** The directory on the server. */
  path: absolutePath,
  port: wholeNumber(1, 65535).optional(),
  user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a user name ([a-z_][a-z0-9_-]{0,31})').optional(),
  /** sshfs: the private key to log in with, a file on every node that mounts the share. */
  identityFile: absolutePath.optional(),
  mountpoint: absolutePath.optional(),
  nodes: z.array(name).max(1024).optional(),
});

/** Names of volumes and snapshots (a volume's name is a file or subvolume name in its pool). */
export const volumeName = nameSchema;

/**
 * `object/storage/volume/<pool>/<name>`: a disk image made with qemu-img (or an ISO imported into
 * an `iso` pool). On a pool that is not shared, it lives on `node`.
 */
export const storageVolumeSchema = z.strictObject({
  name,
  pool: name,
  sizeBytes: z.number().int().min(0),
  format: z.enum(['raw', 'qcow2', 'iso']).default('qcow2'),
  node: name.optional(),
  /** A linked clone's backing volume (in the same pool). */
  backing: name.optional(),
  snapshots: z.array(z.strictObject({ name, at: z.string().max(40) })).max(256).optional(),
  createdAt: z.string().max(40).optional(),
});

/** `object/token/<id>`: an API token, stored as a hash only (see runtime/tokens.ts). */
export const tokenObjectSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9]{8,32}$/, 'must be 8-32 characters of a-z and 0-9'),
  role: z.enum(['admin', 'operator', 'auditor']),
  /** SHA-256 of the secret, hex. */
  hash: z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 digest in hex'),
  createdAt: z.string().max(40),
  expiresAt: z.string().max(40).nullable(),
  comment: z.string().max(200).optional(),
  createdBy: z.string().max(300).optional(),
});

/**
 * `object/revocation/<node>`: the node was removed (acp node rm). Every agent refuses its
 * certificates issued before `revokedAt`, at the handshake and at hello.
 */
export const revocationObjectSchema = z.strictObject({
  name,
  revokedAt: z.string().max(40),
  by: z.string().max(300).optional(),
});

/** `object/chaos/<run>-<slot>`: one of the writes of an `acp chaos run` (run id, slot, its sequence number in the run, the node written through). */
export const chaosObjectSchema = z.strictObject({
  name,
  run: name,
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  via: name,
});

/**
 * `object/alarm/<id>` (id `<rule>.<subject>`): raised and cleared only by the primary monitor,
 * stamped with its term; `history` keeps the last transitions.
 */
export const alarmObjectSchema = z.strictObject({
  name,
  rule: name,
  subject: name,
  severity: z.enum(['critical', 'major', 'warning', 'info']),
  open: z.boolean(),
  term: z.number().int().min(0),
  by: name,
  raisedAt: z.string().max(40),
  clearedAt: z.string().max(40).nullable(),
  acked: z.boolean().optional(),
  detail: z.string().max(500),
  history: z.array(z.strictObject({ at: z.string().max(40), op: z.enum(['raise', 'clear', 'ack']), by: z.string().max(300), term: z.number().int().min(0), detail: z.string().max(500) })).max(50),
});

/** fetch refuses a URL with user info ("Request cannot be constructed from a URL that includes credentials"). */
const withoutUserInfo = (url: string) => !URL.canParse(url) || (new URL(url).username === '' && new URL(url).password === '');

/**
 * `object/alarm-target/<name>`: where the primary sends alarm notifications (an HTTP POST of JSON).
 * Refused here, not at every delivery: a URL with user info, a bearer token that cannot be a
 * header value, an empty or short secret.
 */
export const alarmTargetObjectSchema = z.strictObject({
  name,
  webhook: z
    .url({ protocol: /^https?$/ })
    .max(2048)
    .refine(withoutUserInfo, 'must not include a user name or password (user:pw@host): no request can be sent to such a URL; use --bearer or --hmac-secret (fields bearer, hmacSecret) instead'),
  minSeverity: z.enum(['critical', 'major', 'warning', 'info']).default('warning'),
  bearer: z.string().min(1, 'must not be empty: leave it out for no Authorization header').max(1024).regex(HEADER_VALUE_PATTERN, `it is sent as Authorization: Bearer, so it ${HEADER_VALUE_RULE}`).optional(),
  hmacSecret: z.string().min(1, 'must not be empty: leave it out for no signature').min(16, 'must be 16 characters or more').max(1024).optional(),
});

/** `object/service/<sub-type>/<node>`: one per service per node; the id is the node. */
export const serviceObjectSchema = z.strictObject({
  node: name,
  isolation: z.enum(['inline', 'thread', 'process']).optional(),
  description: z.string().max(200).optional(),
});

/** One HA system as the HA manager persists it (actors/ha/state.ts's PersistedHa). */
export const haSystemRecordSchema = z.strictObject({
  state: z.enum(['started', 'request-stop', 'stopped', 'fence', 'recovery', 'migrate', 'relocate', 'freeze', 'error']),
  node: name.nullable(),
  target: name.nullable(),
  home: name.nullable(),
  relocates: z.number().int().min(0).max(1_000_000),
  tried: z.array(name).max(1024),
});

/** `object/ha/manager`: the HA manager's systems, stamped with the term of the primary that wrote them. */
export const haObjectSchema = z.strictObject({
  /** Always `manager`: the one HA state of the cluster. */
  name,
  term: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  by: name,
  at: z.string().max(64),
  systems: z.record(name, haSystemRecordSchema),
});

export const objectSchemas: Readonly<Record<ObjectType, z.ZodType>> = Object.fromEntries(
  OBJECT_TYPES.map((type): [ObjectType, z.ZodType] => {
    switch (type) {
      case 'node':
        return [type, nodeObjectSchema];
      case 'system':
        return [type, systemObjectSchema];
      case 'network':
        return [type, networkObjectSchema];
      case 'token':
        return [type, tokenObjectSchema];
      case 'revocation':
        return [type, revocationObjectSchema];
      case 'alarm':
        return [type, alarmObjectSchema];
      case 'alarm-target':
        return [type, alarmTargetObjectSchema];
      case 'ha':
        return [type, haObjectSchema];
      case 'chaos':
        return [type, chaosObjectSchema];
      case 'storage/device':
        return [type, storageDeviceSchema];
      case 'storage/pool':
        return [type, storagePoolSchema];
      case 'storage/share':
        return [type, storageShareSchema];
      case 'storage/volume':
        return [type, storageVolumeSchema];
      default:
        return [type, serviceObjectSchema];
    }
  }),
) as Record<ObjectType, z.ZodType>;

/**
 * The host files a system object names for the daemon to open (`boot.kernel`, `boot.initrd`, and
 * `boot.disk` when it is a path rather than POOL/VOLUME); nothing for other keys or values.
 */
export function hostFilesOf(key: string, value: unknown): { field: string; path: string }[] {
  if (!key.startsWith('object/system/') || typeof value !== 'object' || value === null) return [];
  const boot = (value as { boot?: unknown }).boot;
  if (typeof boot !== 'object' || boot === null) return [];
  const { kernel, initrd, disk } = boot as { kernel?: unknown; initrd?: unknown; disk?: unknown };
  const files: { field: string; path: string }[] = [];
  if (typeof kernel === 'string') files.push({ field: 'boot.kernel', path: kernel });
  if (typeof initrd === 'string') files.push({ field: 'boot.initrd', path: initrd });
  if (typeof disk === 'string' && disk.startsWith('/')) files.push({ field: 'boot.disk', path: disk });
  return files;
}

export type NodeObject = z.infer<typeof nodeObjectSchema>;
export type SystemObject = z.infer<typeof systemObjectSchema>;
export type NetworkObject = z.infer<typeof networkObjectSchema>;
export type SystemDisk = z.infer<typeof systemDiskSchema>;
export type StoragePool = z.infer<typeof storagePoolSchema>;
export type StorageShare = z.infer<typeof storageShareSchema>;
export type StorageVolume = z.infer<typeof storageVolumeSchema>;
export type StorageDevice = z.infer<typeof storageDeviceSchema>;
export type SystemNic = z.infer<typeof systemNicSchema>;
export type TokenObject = z.infer<typeof tokenObjectSchema>;
export type ServiceObject = z.infer<typeof serviceObjectSchema>;
export type AlarmObject = z.infer<typeof alarmObjectSchema>;
export type AlarmTargetObject = z.infer<typeof alarmTargetObjectSchema>;
export type HaObject = z.infer<typeof haObjectSchema>;

/** Meta and stats values: flat JSON objects, small (they are sent every heartbeat). */
export const metaValueSchema = z.record(z.string().max(128), z.unknown());

/** Node meta, published by the Framework every heartbeat. */
export interface NodeMeta {
  state: 'starting' | 'running' | 'stopping';
  incarnation: number;
  pid: number;
  uptimeMs: number;
  heartbeatAt: string;
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  /** How this node runs QEMU guests, once probed: 'kvm' or 'tcg'. */
  accelerator?: string;
  /** When this node's certificate ends (ISO time), from its agent: the certificate-expiring alarm. */
  certNotAfter?: string;
}

/** Service meta, published on every change and every heartbeat. */
export interface ServiceMeta {
  state: 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';
  restarts: number;
  isolation: 'inline' | 'thread' | 'process';
  pid: number | null;
  since: string;
  lastError?: string;
}

export interface ParsedKey {
  readonly key: string;
  readonly kind: Kind;
  readonly type: ObjectType;
  readonly id: string;
  /** The writer node, for meta and stats keys. */
  readonly node?: string;
}

const MAX_KEY_LENGTH = 512;

const KIND_SET: ReadonlySet<string> = new Set(KINDS);
const OBJECT_TYPE_SET: ReadonlySet<string> = new Set(OBJECT_TYPES);

function badKey(key: string, why: string): AcpError {
  return new AcpError('ACP_ERR_CDB_BAD_KEY', `bad key ${JSON.stringify(key)}: ${why}`);
}

/**
 * Keys parsed before, as parsePath keeps paths: every CDB read and write parses its key, and the
 * same keys (a system's, a node's) come again and again. Cleared when full; only valid keys kept,
 * frozen, since every caller of the same key shares one.
 */
const parsedKeys = new Map<string, ParsedKey>();
const PARSED_KEYS_MAX = 10_000;

/** Parses a full key; the error says which part is wrong and what is expected. */
export function parseKey(key: string): ParsedKey {
  const known = parsedKeys.get(key);
  if (known !== undefined) return known;
  const parsed = Object.freeze(parseKeyUncached(key));
  if (parsedKeys.size >= PARSED_KEYS_MAX) parsedKeys.clear();
  parsedKeys.set(key, parsed);
  return parsed;
}

/**
 * parseKey without the cache, for keys seen once (another node's records merged here): caching a
 * run of new keys costs more than parsing them, and pushes out the keys that are read again.
 */
export function parseKeyUncached(key: string): ParsedKey {
  if (typeof key !== 'string' || key.length === 0) throw badKey(String(key), 'empty');
  if (key.length > MAX_KEY_LENGTH) throw badKey(key.slice(0, 40) + '…', `longer than ${MAX_KEY_LENGTH} characters`);
  // Cut with indexOf, not split: this runs for every CDB read and write.
  const kindEnd = key.indexOf('/');
  const kind = kindEnd < 0 ? key : key.slice(0, kindEnd);
  if (!KIND_SET.has(kind)) throw badKey(key, `must start with object/, meta/ or stats/`);
  const rest = kindEnd < 0 ? '' : key.slice(kindEnd + 1);
  const firstEnd = rest.indexOf('/');
  const first = firstEnd < 0 ? rest : rest.slice(0, firstEnd);
  // storage/<kind> and service/<kind> types have two parts.
  const typeEnd = (first === 'storage' || first === 'service') && firstEnd >= 0 ? rest.indexOf('/', firstEnd + 1) : firstEnd;
  const type = typeEnd < 0 ? rest : rest.slice(0, typeEnd);
  if (!OBJECT_TYPE_SET.has(type)) {
    throw badKey(key, `unknown type '${type}'; types are ${OBJECT_TYPES.join(', ')}`);
  }
  const idPart = typeEnd < 0 ? '' : rest.slice(typeEnd + 1);
  if (idPart.length === 0) throw badKey(key, 'the id is missing');
  let id = idPart;
  let node: string | undefined;
  if (kind === 'object') {
    if (idPart.includes('@')) throw badKey(key, "object keys carry no '@node'");
  } else {
    const at = idPart.lastIndexOf('@');
    if (at < 0) throw badKey(key, `${kind} keys end with '@<node>', the one node that writes them`);
    id = idPart.slice(0, at);
    node = idPart.slice(at + 1);
    if (!NAME_PATTERN.test(node)) throw badKey(key, `'${node}' is not a valid node name: ${NAME_RULE}`);
  }
  if (type === 'storage/volume') {
    // A volume's id is its pool and its name: <pool>/<name>, both names.
    const parts = id.split('/');
    if (parts.length !== 2 || !parts.every((part) => NAME_PATTERN.test(part))) throw badKey(key, `a volume's id is <pool>/<name>, two valid names (${NAME_RULE}), not '${id}'`);
  } else if (!NAME_PATTERN.test(id)) throw badKey(key, `id '${id}' is not a valid name: ${NAME_RULE}`);
  return { key, kind: kind as Kind, type: type as ObjectType, id, ...(node === undefined ? {} : { node }) };
}

/** Checks a key prefix for list and watch: any leading part of a valid key, or empty for everything. */
export function checkPrefix(prefix: string): string {
  if (typeof prefix !== 'string' || prefix.length > MAX_KEY_LENGTH) throw new AcpError('ACP_ERR_CDB_BAD_KEY', 'bad prefix: too long');
  if (prefix === '') return prefix;
  if (!KINDS.some((known) => `${known}/`.startsWith(prefix) || prefix.startsWith(`${known}/`))) {
    throw new AcpError('ACP_ERR_CDB_BAD_KEY', `bad prefix ${JSON.stringify(prefix)}: keys start with object/, meta/ or stats/`);
  }
  return prefix;
}

/** Validates an object value for its type, with defaults applied; the error names the field. */
export function validateObject(parsed: ParsedKey, value: unknown): unknown {
  const schema = objectSchemas[parsed.type];
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const field = issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'value';
    throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad ${parsed.type} for ${parsed.key}: ${field}: ${issue?.message ?? 'invalid'}`);
  }
  const data = result.data as { name?: unknown; node?: unknown; id?: unknown; pool?: unknown };
  const idField = parsed.type.startsWith('service/') ? 'node' : parsed.type === 'token' ? 'id' : 'name';
  const named = parsed.type === 'storage/volume' ? `${String(data.pool)}/${String(data.name)}` : data[idField];
  if (typeof named === 'string' && named !== parsed.id) {
    throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad ${parsed.type} for ${parsed.key}: field '${idField}': '${named}' differs from the key's id '${parsed.id}'`);
  }
  return result.data;
}

export function validateMeta(parsed: ParsedKey, value: unknown): Record<string, unknown> {
  const result = metaValueSchema.safeParse(value);
  if (!result.success) throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad ${parsed.kind} value for ${parsed.key}: must be a JSON object`);
  return result.data;
}

export function objectKey(type: ObjectType, id: string): string {
  return `object/${type}/${id}`;
}

export function metaKey(type: ObjectType, id: string, node: string): string {
  return `meta/${type}/${id}@${node}`;
}

export function statsKey(type: ObjectType, id: string, node: string): string {
  return `stats/${type}/${id}@${node}`;
}

/**
 * A node shutdown policy: what `acp down` on a node means for its HA systems (its non-HA guests
 * keep running unless `--stop-systems`). As Proxmox VE's:
 * - `conditional` (default): HA systems stay where they are on a restart-like shutdown, as non-HA ones do;
 * - `migrate`: HA systems are live-migrated to other nodes before the node goes;
 * - `freeze`: HA systems are frozen in place (no recovery elsewhere) until the node is back;
 * - `failover`: HA systems are stopped and recovered on other nodes.
 * The HA manager carries it out; this is the one place that reads it.
 */
export type ShutdownPolicy = NonNullable<NodeObject['shutdownPolicy']>;
export const SHUTDOWN_POLICY_MEANING: Record<ShutdownPolicy, string> = {
  conditional: 'freeze when the host reboots, failover when it powers off; when only acpd stops, HA guests run on until the fence guard ends them and the primary recovers them elsewhere (acp node maintenance on first moves them without a stop)',
  migrate: 'HA systems are migrated to other nodes before it goes (those no other node can take stay)',
  freeze: 'HA systems are frozen in place until it is back',
  failover: 'HA systems are stopped and recovered on other nodes',
};
export function shutdownPolicyOf(node: Pick<NodeObject, 'shutdownPolicy'> | undefined): ShutdownPolicy {
  return node?.shutdownPolicy ?? 'conditional';
}
