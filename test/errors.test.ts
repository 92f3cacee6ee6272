import { readFileSync } from 'node:fs';
import test from 'ava';
import { AcpError, errorCatalog, isErrorCode } from '../runtime/errors.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

test('every error code is documented in docs/errors.md with its kind', (t) => {
  for (const [code, entry] of Object.entries(errorCatalog)) {
    const row = doc.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    t.truthy(row, `${code} is missing from docs/errors.md`);
    t.true(row?.includes(`| ${entry.kind} |`), `${code} has another kind in docs/errors.md`);
  }
});

test('docs/errors.md lists no code the catalog does not have', (t) => {
  const documented = [...doc.matchAll(/^\| `(ACP_ERR_[A-Z_]+)` \|/gm)].map((match) => match[1]!);
  t.true(documented.length > 0);
  for (const code of documented) t.true(isErrorCode(code), `${code} is documented but not in runtime/errors.ts`);
});

test('codes follow ACP_ERR_<SUBSYSTEM>_<WHAT>', (t) => {
  for (const code of Object.keys(errorCatalog)) t.regex(code, /^ACP_ERR_[A-Z]+(_[A-Z0-9]+)*$/);
});

test('an AcpError survives the trip through plain data; unknown codes become internal', (t) => {
  const error = new AcpError('ACP_ERR_ASK_TIMEOUT', 'slow', { ms: 5 });
  const copy = AcpError.fromData(error.toData());
  t.is(copy.code, 'ACP_ERR_ASK_TIMEOUT');
  t.is(copy.kind, 'timeout');
  t.deepEqual(copy.details, { ms: 5 });
  const unknown = AcpError.fromData({ code: 'ACP_ERR_FROM_THE_FUTURE' as never, kind: 'internal', message: 'x' });
  t.is(unknown.code, 'ACP_ERR_INTERNAL');
  t.is(AcpError.from(new Error('plain')).code, 'ACP_ERR_INTERNAL');
});
