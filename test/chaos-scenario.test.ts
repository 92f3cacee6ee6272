import test from 'ava';
import { AcpError } from '../runtime/errors.js';
import { checkNodes, parseScenario } from '../node/chaos/scenario.js';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const good = { name: 'x', systems: [{ id: 'web', ha: true, driver: 'sim' }], steps: ['kill n2'] };
const text = (value: unknown) => JSON.stringify(value);

function rejects(t: import('ava').ExecutionContext, input: string, pattern: RegExp): void {
  const error = t.throws(() => parseScenario(input));
  t.true(error instanceof AcpError, String(error));
  t.is((error as AcpError).code, 'ACP_ERR_CHAOS_SCENARIO');
  t.regex(error!.message, pattern);
}

test('every step form parses into what it says', (t) => {
  const scenario = parseScenario(text({ ...good, steps: ['kill primary', 'wait 10s', 'restart n2', 'stop n1 5s', 'partition n3', 'heal', 'drop n1 20%', 'wait 500ms'] }));
  t.deepEqual(scenario.steps, [
    { op: 'kill', target: { kind: 'primary' }, text: 'kill primary' },
    { op: 'wait', ms: 10_000, text: 'wait 10s' },
    { op: 'restart', target: { kind: 'node', name: 'n2' }, text: 'restart n2' },
    { op: 'stop', target: { kind: 'node', name: 'n1' }, ms: 5000, text: 'stop n1 5s' },
    { op: 'partition', target: { kind: 'node', name: 'n3' }, text: 'partition n3' },
    { op: 'heal', text: 'heal' },
    { op: 'drop', target: { kind: 'node', name: 'n1' }, rate: 0.2, text: 'drop n1 20%' },
    { op: 'wait', ms: 500, text: 'wait 500ms' },
  ]);
});

test('bad files are refused with ACP_ERR_CHAOS_SCENARIO naming the field or step', (t) => {
  rejects(t, '{"name": ', /not JSON/);
  rejects(t, text({ ...good, steps: ['kill n2', 'explode n1'] }), /step 2 \('explode n1'\): unknown step 'explode'/);
  rejects(t, text({ ...good, steps: ['stop n1'] }), /step 1 \('stop n1'\): write it as 'stop NODE DURATION'/);
  rejects(t, text({ ...good, steps: ['wait soon'] }), /step 1 \('wait soon'\): 'soon' is not a duration/);
  rejects(t, text({ ...good, steps: ['wait 0s'] }), /out of range/);
  rejects(t, text({ ...good, steps: ['drop n1 120%'] }), /step 1 .*'120%' is not a percentage/);
  rejects(t, text({ ...good, steps: ['kill ../etc'] }), /step 1 .*name a node/);
  rejects(t, text({ ...good, steps: [] }), /steps: list at least one step/);
  rejects(t, text({ ...good, systems: [{ id: 'web', ha: true, driver: 'xen' }] }), /systems\.0\.driver: a system's driver is 'sim' or 'qemu'/);
  rejects(t, text({ ...good, systems: [{ id: 'web', ha: true, driver: 'qemu' }] }), /systems\.0\.kernel: a qemu system boots a kernel/);
  rejects(t, text({ ...good, systems: [{ id: 'web', ha: true, driver: 'qemu', kernel: 'vmlinuz' }] }), /systems\.0\.kernel: an absolute path/);
  rejects(t, text({ ...good, systems: [{ id: 'web', ha: true, driver: 'sim', kernel: '/boot/vmlinuz' }] }), /systems\.0\.kernel: only a qemu system takes kernel/);
  t.like(parseScenario(text({ ...good, systems: [{ id: 'vm', ha: true, driver: 'qemu', kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0', memoryMiB: 128 }] })).systems[0], { driver: 'qemu', kernel: '/k', memoryMiB: 128 });
  rejects(t, text({ ...good, systems: [{ id: 'web', ha: true, driver: 'sim', cpu: 2 }] }), /systems\.0/);
  rejects(t, text({ ...good, systems: [good.systems[0], good.systems[0]] }), /'web' is listed twice/);
  rejects(t, text({ ...good, extra: 1 }), /the file|extra/);
});

test('checkNodes names the step whose node the harness lacks', (t) => {
  const scenario = parseScenario(text({ ...good, steps: ['kill n1', 'partition n7'] }));
  const error = t.throws(() => checkNodes(scenario, ['n1', 'n2', 'n3']));
  t.regex(error!.message, /step 2 \('partition n7'\): no node 'n7' \(the nodes are n1, n2, n3\)/);
  t.notThrows(() => checkNodes(parseScenario(text({ ...good, systems: [{ id: 'web', ha: true, driver: 'sim', node: 'primary' }] })), ['n1', 'n2']));
});

test('the shipped scenario files parse and name only nodes of a 3-node harness', (t) => {
  const dir = join(process.cwd(), 'scenarios');
  const files = readdirSync(dir).filter((file) => file.endsWith('.json')).sort();
  t.deepEqual(files, ['flaky-link.json', 'kill-node.json', 'kill-primary.json', 'partition.json', 'stop-node.json']);
  for (const file of files) {
    const scenario = parseScenario(readFileSync(join(dir, file), 'utf8'));
    t.notThrows(() => checkNodes(scenario, ['n1', 'n2', 'n3']), file);
    t.is(`${scenario.name}.json`, file);
  }
});
