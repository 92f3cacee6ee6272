import test from 'ava';
import { computeHealth, HEALTH_WEIGHTS, type HealthInput } from '../actors/monitor/health.js';

const NOW = Date.parse('2026-11-30T12:00:00Z');
const DAY = 86_400_000;

const healthy = (): HealthInput => ({
  nodes: [
    { name: 'n1', state: 'up' },
    { name: 'n2', state: 'up' },
    { name: 'n3', state: 'up' },
  ],
  services: [{ node: 'n1', service: 'cdb', state: 'running' }],
  systems: [{ id: 'web', node: 'n2', state: 'running' }],
  syncLag: [{ node: 'n2', lag: 0 }],
  filesystems: [{ node: 'n1', mount: '/', usedBytes: 10, sizeBytes: 100 }],
  loopDelayP99: [{ node: 'n1', ms: 12 }],
  alarms: [],
});

test('a healthy cluster scores 100 with nothing to explain', (t) => {
  t.deepEqual(computeHealth(healthy()), { score: 100, nodes: { n1: 100, n2: 100, n3: 100 }, contributions: [] });
});

test('a dead node costs the most, names the node, and makes its stale meta count for nothing', (t) => {
  const input = healthy();
  input.nodes[2] = { name: 'n3', state: 'down' };
  input.services.push({ node: 'n3', service: 'hypervisor', state: 'failed' });
  input.loopDelayP99.push({ node: 'n3', ms: 5000 });
  input.alarms.push({ id: 'node-down.n3', severity: 'critical', subject: 'n3' });
  const health = computeHealth(input);
  t.is(health.score, 100 - HEALTH_WEIGHTS.nodeDown - HEALTH_WEIGHTS.alarm.critical);
  t.deepEqual(health.contributions.map((entry) => entry.what), ['node n3 is down', 'alarm node-down.n3 (critical) is open']);
  t.is(health.nodes['n3'], 100 - HEALTH_WEIGHTS.nodeDown - HEALTH_WEIGHTS.alarm.critical);
  t.is(health.nodes['n1'], 100);
});

test('contributions come most serious first, and the score never goes below 0', (t) => {
  const input = healthy();
  input.nodes[1] = { name: 'n2', state: 'suspect' };
  input.services.push({ node: 'n1', service: 'storage', state: 'restarting' }, { node: 'n1', service: 'network', state: 'failed' });
  input.systems = Array.from({ length: 50 }, (_, index) => ({ id: `s${index}`, node: 'n1', state: 'crashed' }));
  input.syncLag = [{ node: 'n1', lag: 350 }];
  input.filesystems = [{ node: 'n1', mount: '/var', usedBytes: 95, sizeBytes: 100 }, { node: 'n1', mount: '/srv', usedBytes: 85, sizeBytes: 100 }];
  input.loopDelayP99 = [{ node: 'n1', ms: 150 }];
  const health = computeHealth(input);
  const points = health.contributions.map((entry) => entry.points);
  t.deepEqual(points, [...points].sort((a, b) => b - a));
  t.is(health.contributions[0]!.points, HEALTH_WEIGHTS.systemsCrashedMax, '50 crashed systems are capped');
  t.true(health.contributions.some((entry) => entry.what === '/var on n1 is 95 % full' && entry.points === HEALTH_WEIGHTS.storageAbove90));
  t.true(health.contributions.some((entry) => entry.what === 'node n1 lags 350 changes behind in sync' && entry.points === 3));
  const sum = points.reduce((a, b) => a + b, 0);
  t.is(health.score, Math.max(0, 100 - sum));
  input.nodes = input.nodes.map((node) => ({ ...node, state: 'down' }));
  input.nodes.push({ name: 'n4', state: 'down' });
  t.is(computeHealth(input).score, 0);
});

test('data rules: what should be open is raised, what no longer holds is cleared, and a down node’s alarms are left alone', async (t) => {
  const { alarmChanges } = await import('../actors/monitor/data-rules.js');
  const input = healthy();
  input.services.push({ node: 'n1', service: 'network', state: 'failed' });
  input.systems.push({ id: 'db', node: 'n2', state: 'crashed' });
  input.syncLag = [{ node: 'n2', lag: 1500 }];
  input.filesystems.push({ node: 'n3', mount: '/var', usedBytes: 95, sizeBytes: 100 });
  const first = alarmChanges(input, [], NOW);
  t.deepEqual(first.raise.map((alarm) => alarm.id), ['service-failed.n1.network', 'storage-full.n3', 'sync-lag.n2', 'system-crash-loop.db']);
  t.deepEqual(first.clear, []);
  const open = first.raise.map((alarm) => ({ id: alarm.id, rule: alarm.rule, subject: alarm.subject }));
  t.deepEqual(alarmChanges(input, open, NOW), { raise: [], clear: [] }, 'nothing twice');
  // n2 goes down: its alarms stay; n1's service recovers: cleared; node-down is not a data rule.
  const later = healthy();
  later.nodes[1] = { name: 'n2', state: 'down' };
  later.systems.push({ id: 'db', node: 'n2', state: 'crashed' });
  later.filesystems.push({ node: 'n3', mount: '/var', usedBytes: 95, sizeBytes: 100 });
  const changes = alarmChanges(later, [...open, { id: 'node-down.n2', rule: 'node-down', subject: 'n2' }], NOW);
  t.deepEqual(changes.raise, []);
  t.deepEqual(changes.clear.map((alarm) => alarm.id), ['service-failed.n1.network']);
});

test('certificate-expiring: raised for a live node whose certificate ends within 30 days (or has ended), cleared once it is renewed', async (t) => {
  const { alarmChanges } = await import('../actors/monitor/data-rules.js');
  const input = healthy();
  input.certificates = [
    { node: 'n1', notAfter: NOW + 365 * DAY },
    { node: 'n2', notAfter: NOW + 12 * DAY + 3600_000 },
    { node: 'n3', notAfter: NOW - DAY },
  ];
  const first = alarmChanges(input, [], NOW);
  t.deepEqual(first.raise.map((alarm) => alarm.id), ['certificate-expiring.n2', 'certificate-expiring.n3']);
  t.regex(first.raise[0]!.detail, /ends in 12 days .*acp cert renew/);
  t.regex(first.raise[1]!.detail, /ended/);
  t.is(first.raise[0]!.rule, 'certificate-expiring');
  // 30 days exactly is within; 31 is not.
  input.certificates = [{ node: 'n1', notAfter: NOW + 30 * DAY }, { node: 'n2', notAfter: NOW + 31 * DAY }];
  const open = first.raise.map((alarm) => ({ id: alarm.id, rule: alarm.rule, subject: alarm.subject }));
  const renewed = alarmChanges(input, open, NOW);
  t.deepEqual(renewed.raise.map((alarm) => alarm.id), ['certificate-expiring.n1']);
  t.deepEqual(renewed.clear.map((alarm) => alarm.id), ['certificate-expiring.n2', 'certificate-expiring.n3']);
});

test("storage-full for a storage pool (stats/storage/pool/<id>@<node>): one alarm per pool above 90 %, beside the node's filesystems, in the health score too", async (t) => {
  const { alarmChanges, poolSubject } = await import('../actors/monitor/data-rules.js');
  const input = healthy();
  input.filesystems.push(
    { node: 'n2', mount: 'pool vms', usedBytes: 95, sizeBytes: 100, pool: 'vms' },
    { node: 'n2', mount: 'pool iso', usedBytes: 50, sizeBytes: 100, pool: 'iso' },
    { node: 'n3', mount: 'pool vms', usedBytes: 91, sizeBytes: 100, pool: 'vms' },
  );
  const changes = alarmChanges(input, [], NOW);
  t.deepEqual(changes.raise.map((alarm) => alarm.id), ['storage-full.n2.vms', 'storage-full.n3.vms']);
  t.is(changes.raise[0]!.detail, 'pool vms on n2 is 95 % full');
  t.true(computeHealth(input).contributions.some((entry) => entry.what === 'pool vms on n2 is 95 % full' && entry.points === HEALTH_WEIGHTS.storageAbove90));
  // Emptied: cleared.
  input.filesystems = input.filesystems.filter((fs) => fs.pool !== 'vms' || fs.node !== 'n2');
  t.deepEqual(alarmChanges(input, changes.raise.map((alarm) => ({ id: alarm.id, rule: alarm.rule, subject: alarm.subject })), NOW).clear.map((alarm) => alarm.id), ['storage-full.n2.vms']);
  // Long names still make a valid alarm name (at most 63 characters), the same each time.
  const long = poolSubject('n'.repeat(60), 'p'.repeat(60));
  t.true(`storage-full.${long}`.length <= 63);
  t.is(long, poolSubject('n'.repeat(60), 'p'.repeat(60)));
  t.not(long, poolSubject('n'.repeat(60), `${'p'.repeat(59)}q`));
});
