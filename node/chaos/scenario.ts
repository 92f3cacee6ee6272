import { z } from 'zod';
import { AcpError } from '../../runtime/errors.js';

/**
 * A chaos scenario (`acp chaos run FILE`): the systems to create, then the steps to run, in order.
 *
 * ```json
 * { "name": "kill-primary",
 *   "systems": [{ "id": "web", "ha": true, "driver": "sim" }],
 *   "steps": ["kill primary", "wait 10s", "restart primary"] }
 * ```
 *
 * Steps: `kill NODE` (kill -9 of its daemon; on the harness of its fence guard too), `restart NODE`,
 * `stop NODE DURATION` (SIGSTOP, SIGCONT after DURATION), `partition NODE` (the harness: its link
 * down; a live cluster: its daemon drops all cluster traffic), `heal` (every partition undone),
 * `drop NODE P%` (its CDB sync drops P% of what it sends), `wait DURATION`. On a live cluster a
 * `restart` must follow a `kill` of the same node (checkLiveRestarts). NODE is a node name
 * or `primary`: the monitor primary at the time (for `restart`, the node `primary` last named).
 * A system's `node` (where it is created) may be `primary` too: the primary when the run starts.
 */

export type Target = { kind: 'node'; name: string } | { kind: 'primary' };

export type Step =
  | { op: 'kill'; target: Target; text: string }
  | { op: 'restart'; target: Target; text: string }
  | { op: 'stop'; target: Target; ms: number; text: string }
  | { op: 'partition'; target: Target; text: string }
  | { op: 'heal'; text: string }
  | { op: 'drop'; target: Target; rate: number; text: string }
  | { op: 'wait'; ms: number; text: string };

export interface ScenarioSystem {
  id: string;
  ha: boolean;
  driver: 'sim' | 'qemu';
  node?: string;
  /** A QEMU system's direct kernel boot (paths on every node) and memory. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memoryMiB?: number;
}

export interface Scenario {
  name: string;
  systems: ScenarioSystem[];
  steps: Step[];
}

/** Steps that inject a fault: after each, every HA system must run again within the bound. */
export const FAULT_OPS: ReadonlySet<Step['op']> = new Set(['kill', 'stop', 'partition', 'drop']);

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MAX_WAIT_MS = 600_000;

const fileSchema = z.strictObject({
  name: z.string().regex(NAME, 'a scenario name is lower-case letters, digits and dashes'),
  systems: z
    .array(
      z
        .strictObject({
          id: z.string().regex(NAME, 'a system id is lower-case letters, digits and dashes'),
          ha: z.boolean(),
          driver: z.enum(['sim', 'qemu'], { error: "a system's driver is 'sim' or 'qemu'" }),
          node: z.string().regex(NAME, 'a node name is lower-case letters, digits and dashes').optional(),
          kernel: z.string().regex(/^\/[^\0]{0,4095}$/, 'an absolute path').optional(),
          initrd: z.string().regex(/^\/[^\0]{0,4095}$/, 'an absolute path').optional(),
          cmdline: z.string().max(1024).optional(),
          memoryMiB: z.number().int().min(64).max(65_536).optional(),
        })
        .superRefine((system, ctx) => {
          const boot = ['kernel', 'initrd', 'cmdline', 'memoryMiB'] as const;
          if (system.driver === 'sim') {
            for (const field of boot) if (system[field] !== undefined) ctx.addIssue({ code: 'custom', path: [field], message: `only a qemu system takes ${field}` });
          } else if (system.kernel === undefined) {
            ctx.addIssue({ code: 'custom', path: ['kernel'], message: 'a qemu system boots a kernel: give its absolute path (the same on every node), with initrd and cmdline as needed' });
          }
        }),
    )
    .min(1, 'list at least one system')
    .max(20),
  steps: z.array(z.string().max(200)).min(1, 'list at least one step').max(1000),
});

function bad(message: string): AcpError {
  return new AcpError('ACP_ERR_CHAOS_SCENARIO', message);
}

function duration(text: string | undefined, step: string, index: number): number {
  const match = text === undefined ? null : /^(\d+)(ms|s|m)?$/.exec(text);
  if (!match) throw bad(`step ${index + 1} ('${step}'): '${text ?? ''}' is not a duration: use a number with ms, s or m (for example 5s)`);
  const ms = Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2] ?? 'ms']!;
  if (ms <= 0 || ms > MAX_WAIT_MS) throw bad(`step ${index + 1} ('${step}'): ${text} is out of range (more than 0, at most 10m)`);
  return ms;
}

function target(text: string | undefined, step: string, index: number): Target {
  if (text === 'primary') return { kind: 'primary' };
  if (text === undefined || !NAME.test(text)) throw bad(`step ${index + 1} ('${step}'): name a node (such as n2) or 'primary'`);
  return { kind: 'node', name: text };
}

/** One step's text as a Step; throws ACP_ERR_CHAOS_SCENARIO naming the step. */
export function parseStep(text: string, index: number): Step {
  const words = text.trim().split(/\s+/);
  const [op, ...args] = words;
  const arity = (n: number, usage: string) => {
    if (args.length !== n) throw bad(`step ${index + 1} ('${text}'): write it as '${usage}'`);
  };
  switch (op) {
    case 'kill':
      arity(1, 'kill NODE');
      return { op, target: target(args[0], text, index), text };
    case 'restart':
      arity(1, 'restart NODE');
      return { op, target: target(args[0], text, index), text };
    case 'partition':
      arity(1, 'partition NODE');
      return { op, target: target(args[0], text, index), text };
    case 'stop':
      arity(2, 'stop NODE DURATION');
      return { op, target: target(args[0], text, index), ms: duration(args[1], text, index), text };
    case 'heal':
      arity(0, 'heal');
      return { op, text };
    case 'wait':
      arity(1, 'wait DURATION');
      return { op, ms: duration(args[0], text, index), text };
    case 'drop': {
      arity(2, 'drop NODE P%');
      const match = /^(\d{1,3})%$/.exec(args[1]!);
      const percent = match ? Number(match[1]) : NaN;
      if (!(percent >= 0 && percent <= 100)) throw bad(`step ${index + 1} ('${text}'): '${args[1]}' is not a percentage from 0% to 100%`);
      return { op, target: target(args[0], text, index), rate: percent / 100, text };
    }
    default:
      throw bad(`step ${index + 1} ('${text}'): unknown step '${op ?? ''}': use kill, restart, stop, partition, heal, drop or wait`);
  }
}

/** A scenario file's text, checked; throws ACP_ERR_CHAOS_SCENARIO saying what is wrong and where. */
export function parseScenario(text: string): Scenario {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw bad(`the scenario is not JSON: ${(error as Error).message}`);
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length > 0 ? issue.path.join('.') : 'the file';
    throw bad(`${where}: ${issue.message}`);
  }
  const ids = new Set<string>();
  for (const system of parsed.data.systems) {
    if (ids.has(system.id)) throw bad(`systems: '${system.id}' is listed twice`);
    ids.add(system.id);
  }
  const steps = parsed.data.steps.map((step, index) => parseStep(step, index));
  return { name: parsed.data.name, systems: parsed.data.systems.map((system) => ({ ...system })), steps };
}

/** Checks every node a scenario names exists among `nodes`; throws naming the step or system. */
export function checkNodes(scenario: Scenario, nodes: readonly string[]): void {
  const known = (name: string) => nodes.includes(name);
  for (const system of scenario.systems) {
    if (system.node !== undefined && system.node !== 'primary' && !known(system.node)) throw bad(`system '${system.id}': no node '${system.node}' (the nodes are ${nodes.join(', ')})`);
  }
  scenario.steps.forEach((step, index) => {
    if ('target' in step && step.target.kind === 'node' && !known(step.target.name)) {
      throw bad(`step ${index + 1} ('${step.text}'): no node '${step.target.name}' (the nodes are ${nodes.join(', ')})`);
    }
  });
}

/**
 * On a live cluster a killed node cannot restart itself when the `restart` step comes: its `kill`
 * arranges it (node/chaos/live.ts). So every `restart` must follow a `kill` of the same target
 * (`restart primary`: a `kill primary`, with no other step naming `primary` between them).
 */
export function checkLiveRestarts(scenario: Scenario): void {
  scenario.steps.forEach((step, index) => {
    if (step.op !== 'restart') return;
    const before = scenario.steps.slice(0, index);
    const killed =
      step.target.kind === 'node'
        ? before.some((earlier) => earlier.op === 'kill')
        : (() => {
            const last = before.findLast((earlier) => 'target' in earlier && earlier.target.kind === 'primary');
            return last?.op === 'kill';
          })();
    if (!killed) {
      throw bad(`step ${index + 1} ('${step.text}'): on a live cluster (--cluster) a node comes back only after a 'kill' of it earlier in the scenario, which arranges the restart${step.target.kind === 'primary' ? " (the last step naming 'primary' before it must be 'kill primary')" : ''}`);
    }
  });
}

/** Sums of wait and stop durations from the kill at `from` to the restart of the same node; undefined: none restarts it. */
export function restartDelay(steps: readonly Step[], from: number, node: string, lastPrimary: string | undefined): number | undefined {
  const killed = steps[from]!;
  let primaryNamed: string | undefined = 'target' in killed && killed.target.kind === 'primary' ? node : lastPrimary;
  let ms = 0;
  for (const step of steps.slice(from + 1)) {
    if (step.op === 'restart') {
      const name = step.target.kind === 'node' ? step.target.name : primaryNamed;
      if (name === node) return ms;
      continue;
    }
    if (step.op === 'kill' && step.target.kind === 'node' && step.target.name === node) return undefined;
    // A later step naming `primary` resolves at run time: a `restart primary` after it names whoever that was.
    if ('target' in step && step.target.kind === 'primary') primaryNamed = undefined;
    if (step.op === 'wait' || step.op === 'stop') ms += step.ms;
  }
  return undefined;
}
