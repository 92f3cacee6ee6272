/** What a harness is asked for (HarnessOptions), checked and with its defaults filled in (Resolved). */
import { assertName } from '../../runtime/path.js';

const MAX_NODES = 240;

export interface HarnessOptions {
  /** node names, default ['n1','n2','n3'] */
  nodes?: readonly string[];
  /**
   * 1: all nodes on one bridge (one L2 domain). 2: two bridges (L2 domains a and b) joined by a
   * router; nodes alternate a,b,a,b... unless `domainOf` says otherwise; the FIRST node of each
   * domain is that domain's gateway: it is started with `--gateway <address of the other domain's
   * gateway agent>`
   */
  domains?: 1 | 2;
  domainOf?: (name: string, index: number) => 'a' | 'b';
  /** start every daemon with `--peers <every other node's agent address>` (unicast-only sync) */
  unicast?: boolean;
  /** default true: daemons run with --faults */
  faults?: boolean;
  /** default 'lab' */
  cluster?: string;
  /** default 'info' */
  logLevel?: 'debug' | 'info' | 'warn';
  /** extra args for every `acp up` */
  upArgs?: (node: HarnessNode) => string[];
  /** nodes that join as witnesses (vote-only members), with `acp witness up ADDRESS --token T` */
  witnesses?: readonly string[];
}

export interface HarnessNode {
  name: string;
  /** Its network namespace (`ip netns exec <ns> ...`). */
  ns: string;
  /** Its eth0 address: 10.77.1.x in domain a, 10.77.2.x in domain b. */
  address: string;
  /** Its agent, `<address>:7480`. */
  agent: string;
  home: string;
  domain: 'a' | 'b';
  /** Of its daemon; updated by restart(). */
  pid: number;
}

export interface HarnessCliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Resolved {
  names: readonly string[];
  domains: 1 | 2;
  domainOf: (name: string, index: number) => 'a' | 'b';
  unicast: boolean;
  faults: boolean;
  cluster: string;
  logLevel: 'debug' | 'info' | 'warn';
  upArgs: (node: HarnessNode) => string[];
  witnesses: readonly string[];
}

export function resolveOptions(options: HarnessOptions): Resolved {
  const names = options.nodes ?? ['n1', 'n2', 'n3'];
  if (names.length === 0) throw new Error('a harness needs at least one node');
  if (names.length > MAX_NODES) throw new Error(`a harness takes at most ${MAX_NODES} nodes, not ${names.length}`);
  for (const name of names) assertName(name, 'node');
  const duplicate = names.find((name, index) => names.indexOf(name) !== index);
  if (duplicate) throw new Error(`node '${duplicate}' is named twice`);
  const cluster = options.cluster ?? 'lab';
  assertName(cluster, 'cluster');
  const domains = options.domains ?? 1;
  if (domains !== 1 && domains !== 2) throw new Error(`domains must be 1 or 2, not ${String(domains)}`);
  const alternate = (_name: string, index: number): 'a' | 'b' => (index % 2 === 0 ? 'a' : 'b');
  return {
    names,
    domains,
    domainOf: domains === 1 ? () => 'a' : (options.domainOf ?? alternate),
    unicast: options.unicast ?? false,
    faults: options.faults ?? true,
    cluster,
    logLevel: options.logLevel ?? 'info',
    upArgs: options.upArgs ?? (() => []),
    witnesses: options.witnesses ?? [],
  };
}

