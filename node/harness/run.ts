/**
 * `npm run harness -- [N] [--domains 2] [--unicast]`: starts N real nodes (default 3) in network
 * namespaces, prints how to reach each, and keeps them until Ctrl-C, then removes everything.
 * Needs root and iproute2.
 */
import { Harness, harnessAvailable } from './index.js';

const args = process.argv.slice(2);
const count = Number(args.find((arg) => /^\d+$/.test(arg)) ?? 3);
const domains = args.includes('--domains') && args[args.indexOf('--domains') + 1] === '2' ? 2 : 1;
const unicast = args.includes('--unicast');
if (!Number.isInteger(count) || count < 1 || count > 50) {
  process.stderr.write(`the number of nodes must be 1 to 50, not ${count}\n`);
  process.exit(2);
}
const available = harnessAvailable();
if (!available.ok) {
  process.stderr.write(`cannot start the harness: ${available.why}\n`);
  process.exit(1);
}

const h = await Harness.start({ nodes: Array.from({ length: count }, (_, index) => `n${index + 1}`), domains, unicast });
await h.waitSynced(120_000);
const cli = new URL('../../cli/acp.js', import.meta.url).pathname;
process.stdout.write(`${count} node(s) up and synced (cluster lab${domains === 2 ? ', two L2 domains with a gateway pair' : ''}${unicast ? ', unicast sync' : ''}):\n\n`);
for (const node of h.nodes) {
  process.stdout.write(`  ${node.name}  namespace ${node.ns}  agent ${node.agent}  domain ${node.domain}  pid ${node.pid}\n`);
  process.stdout.write(`      node ${cli} --home ${node.home} nodes\n`);
}
process.stdout.write(`\nfaults by hand: ip netns exec <namespace> ..., kill -9 <pid>; Ctrl-C removes every namespace, bridge and process\n`);
await new Promise<void>((resolve) => {
  process.once('SIGINT', () => resolve());
  process.once('SIGTERM', () => resolve());
});
await h.teardown();
process.stdout.write('harness removed\n');
