/** The sync traffic counters (actors/cdb/sync-traffic.ts) shown in `cdb.sync.status`. */
import test from 'ava';
import { difference, emptyTraffic, total, TrafficMeter } from '../actors/cdb/sync-traffic.js';
import { syncTrafficLine } from '../cli/output.js';

test('payloads are counted by channel, direction and kind; exchanges by direction', (t) => {
  const meter = new TrafficMeter();
  meter.sent('multicast', 'digest', 300);
  meter.sent('multicast', 'digest', 320);
  meter.sent('multicast', 'batch', 1200);
  meter.received('multicast', 'announce', 90);
  meter.sent('unicast', 'batch', 5000);
  meter.exchange('repair', 'received', 70_000);
  meter.exchange('snapshot', 'served', 1_000_000);
  const view = meter.view();
  t.deepEqual(view.multicast.sent.digest, { count: 2, bytes: 620 });
  t.deepEqual(view.multicast.sent.batch, { count: 1, bytes: 1200 });
  t.deepEqual(view.multicast.received.announce, { count: 1, bytes: 90 });
  t.deepEqual(view.multicast.received.digest, { count: 0, bytes: 0 });
  t.deepEqual(view.unicast.sent.batch, { count: 1, bytes: 5000 });
  t.deepEqual(view.repair, { received: { count: 1, bytes: 70_000 }, served: { count: 0, bytes: 0 } });
  t.deepEqual(view.snapshot, { received: { count: 0, bytes: 0 }, served: { count: 1, bytes: 1_000_000 } });
  t.deepEqual(total(view.multicast.sent), { count: 3, bytes: 1820 });
});

test('a view is a copy; the difference of two views is the traffic between them', (t) => {
  const meter = new TrafficMeter();
  meter.sent('multicast', 'batch', 100);
  const before = meter.view();
  before.multicast.sent.batch.count = 99;
  t.is(meter.view().multicast.sent.batch.count, 1, 'changing a view changes nothing');
  const start = meter.view();
  meter.sent('multicast', 'batch', 50);
  meter.exchange('repair', 'served', 10);
  const delta = difference(meter.view(), start);
  t.deepEqual(delta.multicast.sent.batch, { count: 1, bytes: 50 });
  t.deepEqual(delta.repair.served, { count: 1, bytes: 10 });
  t.deepEqual(difference(emptyTraffic(), emptyTraffic()), emptyTraffic());
});

test('a byte count that is negative or not a number is refused', (t) => {
  const meter = new TrafficMeter();
  t.throws(() => meter.sent('multicast', 'digest', -1), { instanceOf: RangeError });
  t.throws(() => meter.received('unicast', 'batch', Number.NaN), { instanceOf: RangeError });
  t.deepEqual(meter.view(), emptyTraffic());
});

test('acp status prints the traffic in one line: both channels each way, and repairs and snapshots', (t) => {
  const meter = new TrafficMeter();
  meter.sent('multicast', 'digest', 512);
  meter.sent('multicast', 'batch', 1024);
  meter.received('multicast', 'batch', 2048);
  meter.exchange('snapshot', 'received', 3 * 1024 * 1024);
  t.is(
    syncTrafficLine(meter.view()),
    'multicast sent 2 (1.5 KiB), received 1 (2.0 KiB); unicast sent 0 (0.0 KiB), received 0 (0.0 KiB); repair in 0.0 KiB, out 0.0 KiB; snapshot in 3.0 MiB, out 0.0 KiB',
  );
});
