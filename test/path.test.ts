import test, { type ExecutionContext } from 'ava';
import { AcpError } from '../runtime/errors.js';
import {
  PRIMARY,
  assertName,
  childPath,
  formatPath,
  isValidName,
  makePath,
  parentPath,
  parsePath,
  type ActorPath,
} from '../runtime/path.js';

/** Asserts that parsing `input` fails with ACP_ERR_PATH_INVALID and a message naming `part`. */
function rejects(t: ExecutionContext, input: string, part: string): void {
  const error = t.throws(() => parsePath(input), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PATH_INVALID');
  t.is(error?.kind, 'bad-request');
  t.true(error?.message.includes(JSON.stringify(input)), `message quotes the input: ${error?.message}`);
  t.true(error?.message.includes(part), `message names ${part}: ${error?.message}`);
}

test('parsePath and formatPath round-trip a nested path', (t) => {
  const input = 'acp://lab/n2/hypervisor/vmm/web-01';
  const path = parsePath(input);
  t.deepEqual(path, { cluster: 'lab', node: 'n2', segments: ['hypervisor', 'vmm', 'web-01'] });
  t.is(formatPath(path), input);
  t.deepEqual(parsePath(formatPath(path)), path);
});

test('names may use digits, dots, underscores and dashes and be 63 characters long', (t) => {
  const long = 'a'.repeat(63);
  const input = `acp://c.1_x-y/0node/${long}`;
  t.deepEqual(parsePath(input), { cluster: 'c.1_x-y', node: '0node', segments: [long] });
  t.is(formatPath(parsePath(input)), input);
});

test("'@primary' is accepted in the node position", (t) => {
  t.is(PRIMARY, '@primary');
  const path = parsePath('acp://lab/@primary/hypervisor');
  t.deepEqual(path, { cluster: 'lab', node: PRIMARY, segments: ['hypervisor'] });
  t.is(formatPath(path), 'acp://lab/@primary/hypervisor');
  t.deepEqual(makePath('lab', PRIMARY, 'hypervisor', 'vmm'), { cluster: 'lab', node: PRIMARY, segments: ['hypervisor', 'vmm'] });
});

test("'@primary' is rejected as cluster, service or child", (t) => {
  rejects(t, 'acp://@primary/n2/hypervisor', 'cluster "@primary"');
  rejects(t, 'acp://lab/n2/@primary', 'service "@primary"');
  rejects(t, 'acp://lab/n2/hypervisor/@primary', 'child #1 "@primary"');
  t.false(isValidName(PRIMARY));
});

test('a bad scheme is named', (t) => {
  rejects(t, 'http://lab/n2/hypervisor', 'the scheme');
  rejects(t, 'ACP://lab/n2/hypervisor', 'the scheme');
  rejects(t, 'acp:/lab/n2/hypervisor', 'the scheme');
  rejects(t, '', 'the scheme');
});

test('a bad cluster is named', (t) => {
  rejects(t, 'acp://la b/n2/hypervisor', 'cluster "la b"');
  rejects(t, 'acp:///n2/hypervisor', 'cluster ""');
  rejects(t, 'acp://-lab/n2/hypervisor', 'cluster "-lab"');
});

test('a bad node is named', (t) => {
  rejects(t, 'acp://lab/n_2!/hypervisor', 'node "n_2!"');
  rejects(t, 'acp://lab/@secondary/hypervisor', 'node "@secondary"');
  rejects(t, 'acp://lab', 'node ""');
});

test('a missing service is named', (t) => {
  rejects(t, 'acp://lab/n2', 'the service is missing');
});

test('a bad service is named', (t) => {
  rejects(t, 'acp://lab/n2/hyper visor', 'service "hyper visor"');
  rejects(t, 'acp://lab/n2/', 'service ""');
});

test('a bad child is named by its position', (t) => {
  rejects(t, 'acp://lab/n2/hypervisor/vmm/web$01', 'child #2 "web$01"');
  rejects(t, 'acp://lab/n2/hypervisor/v m m/web-01', 'child #1 "v m m"');
});

test('upper-case names are rejected', (t) => {
  rejects(t, 'acp://Lab/n2/hypervisor', 'cluster "Lab"');
  rejects(t, 'acp://lab/N2/hypervisor', 'node "N2"');
  rejects(t, 'acp://lab/n2/Hypervisor', 'service "Hypervisor"');
  rejects(t, 'acp://lab/n2/hypervisor/vmm/Web-01', 'child #2 "Web-01"');
});

test('a 64-character name is rejected', (t) => {
  const name = 'a'.repeat(64);
  t.false(isValidName(name));
  rejects(t, `acp://${name}/n2/hypervisor`, `cluster "${name}"`);
  rejects(t, `acp://lab/${name}/hypervisor`, `node "${name}"`);
  rejects(t, `acp://lab/n2/${name}`, `service "${name}"`);
  rejects(t, `acp://lab/n2/hypervisor/${name}`, `child #1 "${name}"`);
});

test('a trailing slash makes an empty segment, which is named', (t) => {
  rejects(t, 'acp://lab/n2/hypervisor/', 'child #1 ""');
  rejects(t, 'acp://lab/n2/hypervisor/vmm/', 'child #2 ""');
  rejects(t, 'acp://lab/n2/hypervisor//vmm', 'child #1 ""');
});

test('a non-string input is rejected with ACP_ERR_PATH_INVALID', (t) => {
  const error = t.throws(() => parsePath(42 as unknown as string), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PATH_INVALID');
  t.true(error?.message.includes('is not a string'));
});

test('isValidName follows the name pattern', (t) => {
  for (const name of ['a', '0', 'web-01', 'a.b_c-d', 'z'.repeat(63)]) t.true(isValidName(name), name);
  for (const name of ['', '-a', '.a', '_a', 'A', 'a/b', 'a b', 'é', 'z'.repeat(64), PRIMARY]) t.false(isValidName(name), name);
});

test('assertName returns a valid name and throws ACP_ERR_NAME_INVALID naming what and which', (t) => {
  t.is(assertName('web-01', 'actor'), 'web-01');
  const error = t.throws(() => assertName('Web', 'cluster'), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_NAME_INVALID');
  t.true(error?.message.startsWith('cluster name "Web" is invalid'), error?.message);
});

test('makePath builds and validates a path', (t) => {
  t.deepEqual(makePath('lab', 'n2', 'hypervisor', 'vmm', 'web-01'), parsePath('acp://lab/n2/hypervisor/vmm/web-01'));
  const badChild = t.throws(() => makePath('lab', 'n2', 'hypervisor', 'Bad'), { instanceOf: AcpError });
  t.is(badChild?.code, 'ACP_ERR_PATH_INVALID');
  t.true(badChild?.message.includes('child #1 "Bad"'));
  const noService = t.throws(() => makePath('lab', 'n2'), { instanceOf: AcpError });
  t.is(noService?.code, 'ACP_ERR_PATH_INVALID');
});

// BUG (runtime/path.ts, makePath): makePath joins its arguments with '/' and re-parses the string, so
// an argument that contains '/' is silently split instead of rejected: makePath('lab', 'n2/x', 'svc')
// returns { node: 'n2', segments: ['x', 'svc'] } and makePath('lab', 'n2', 'hypervisor/vmm') returns
// two segments. Each argument should be validated as one name.
test('makePath rejects an argument containing a slash instead of splitting it', (t) => {
  t.throws(() => makePath('lab', 'n2/x', 'svc'), { instanceOf: AcpError });
  t.throws(() => makePath('lab/n2', 'svc', 'x'), { instanceOf: AcpError });
  t.throws(() => makePath('lab', 'n2', 'hypervisor/vmm'), { instanceOf: AcpError });
});

test('childPath appends a validated child and keeps cluster and node', (t) => {
  const parent = parsePath('acp://lab/@primary/hypervisor');
  const child = childPath(parent, 'vmm');
  t.deepEqual(child, { cluster: 'lab', node: PRIMARY, segments: ['hypervisor', 'vmm'] });
  t.is(formatPath(childPath(child, 'web-01')), 'acp://lab/@primary/hypervisor/vmm/web-01');
  t.deepEqual(parent.segments, ['hypervisor'], 'the parent is not modified');
  for (const bad of ['Vmm', '', 'a/b', 'a'.repeat(64), PRIMARY]) {
    const error = t.throws(() => childPath(parent, bad), { instanceOf: AcpError });
    t.is(error?.code, 'ACP_ERR_NAME_INVALID', bad);
  }
});

test('parentPath drops the last child and stops at the service', (t) => {
  const path = parsePath('acp://lab/n2/hypervisor/vmm/web-01');
  const parent = parentPath(path);
  t.deepEqual(parent, { cluster: 'lab', node: 'n2', segments: ['hypervisor', 'vmm'] });
  const grandparent = parentPath(parent as ActorPath);
  t.deepEqual(grandparent, { cluster: 'lab', node: 'n2', segments: ['hypervisor'] });
  t.is(parentPath(grandparent as ActorPath), undefined);
  t.deepEqual(path.segments, ['hypervisor', 'vmm', 'web-01'], 'the child is not modified');
});
