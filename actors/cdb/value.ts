import { AcpError } from '../../runtime/errors.js';

/**
 * What a CDB value may be: plain JSON-like data (objects, arrays, strings, finite numbers,
 * booleans, null), acyclic, within a depth and a size. Checked once, where values enter (put, cas,
 * batch, merge), so that every value in the CDB can always be read back, encoded and sent: a
 * cyclic or very deep value accepted once would make every later read of it fail.
 */
export interface ValueLimits {
  /** Objects and arrays nested inside one another; the value itself is level 1. */
  readonly maxDepth: number;
  /** The value's size as JSON text, counted in characters (a byte each for ASCII text). */
  readonly maxBytes: number;
}

export const DEFAULT_VALUE_LIMITS: ValueLimits = { maxDepth: 32, maxBytes: 1024 * 1024 };

const RULE = 'values are JSON-like data: objects, arrays, strings, finite numbers, booleans and null';

/** `value.a.b[3]`, `value["odd key"]`. */
function fieldPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key)}]`;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return `the number ${String(value)}`;
  if (typeof value === 'bigint') return 'a bigint';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return 'a symbol';
  if (value instanceof Uint8Array) return 'binary data';
  const name = (value as object).constructor?.name;
  return name ? `a ${name}` : 'an object of another kind';
}

/** A string's size as JSON, in characters: its length and the quotes (no scan, no allocation). */
function stringBytes(text: string): number {
  return text.length + 2;
}

/** A value on the way down, with how it was reached: its path is spelled out only for a refusal. */
interface Visit {
  readonly value: unknown;
  readonly parent: Visit | undefined;
  readonly key: string | number | undefined;
  readonly depth: number;
}

function pathOf(visit: Visit, root: string): string {
  const keys: (string | number)[] = [];
  for (let at: Visit | undefined = visit; at?.key !== undefined; at = at.parent) keys.push(at.key);
  let path = root;
  for (let index = keys.length - 1; index >= 0; index -= 1) path = fieldPath(path, keys[index]!);
  return path;
}

/**
 * Throws ACP_ERR_CDB_BAD_VALUE naming the field (`value.a.b[3]`) unless `value` is plain data
 * within `limits`. Iterative (an explicit stack), so a deep value cannot exhaust the call stack,
 * and it stops at the first problem, so its cost is bounded by the size limit.
 */
export function checkValue(value: unknown, limits: ValueLimits = DEFAULT_VALUE_LIMITS, what = 'value'): void {
  // Entries are either a value to check or a marker that an object's children are all done.
  const stack: Array<Visit | { leave: object }> = [{ value, parent: undefined, key: undefined, depth: 0 }];
  /** The objects on the path from the root to the current one: meeting one again is a cycle. */
  const ancestors = new Set<object>();
  let bytes = 0;
  const refuse = (visit: Visit, why: string, key?: string | number): never => {
    const path = pathOf(visit, what);
    throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `${key === undefined ? path : fieldPath(path, key)}: ${why}; ${RULE}`);
  };
  while (stack.length > 0) {
    const entry = stack.pop()!;
    if ('leave' in entry) {
      ancestors.delete(entry.leave);
      continue;
    }
    const { value: current, depth } = entry;
    if (current === null || typeof current === 'boolean') {
      bytes += 5;
    } else if (typeof current === 'number') {
      if (!Number.isFinite(current)) refuse(entry, `${describe(current)} is not a finite number`);
      bytes += 24;
    } else if (typeof current === 'string') {
      bytes += stringBytes(current);
    } else if (typeof current === 'object') {
      if (ancestors.has(current)) refuse(entry, 'refers back to an enclosing object or array (a cycle)');
      if (depth + 1 > limits.maxDepth) refuse(entry, `nests deeper than ${limits.maxDepth} levels`);
      const isArray = Array.isArray(current);
      if (!isArray) {
        const prototype: unknown = Object.getPrototypeOf(current);
        if (prototype !== Object.prototype && prototype !== null) refuse(entry, `is ${describe(current)}, not plain data`);
      }
      ancestors.add(current);
      stack.push({ leave: current });
      bytes += 2;
      if (isArray) {
        const items = current as unknown[];
        for (let index = items.length - 1; index >= 0; index -= 1) {
          if (items[index] === undefined) refuse(entry, 'is undefined (or a hole)', index);
          stack.push({ value: items[index], parent: entry, key: index, depth: depth + 1 });
        }
        bytes += items.length;
      } else {
        const keys = Object.keys(current);
        for (let index = keys.length - 1; index >= 0; index -= 1) {
          const key = keys[index]!;
          if (key === '__proto__') refuse(entry, "'__proto__' is not allowed as a key", key);
          const child = (current as Record<string, unknown>)[key];
          // An absent optional field written as undefined: left out, as JSON leaves it out.
          if (child === undefined) continue;
          bytes += stringBytes(key) + 1;
          stack.push({ value: child, parent: entry, key, depth: depth + 1 });
        }
      }
    } else {
      refuse(entry, `is ${describe(current)}, not plain data`);
    }
    if (bytes > limits.maxBytes) throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `${what}: is larger than ${limits.maxBytes} bytes (as JSON, counted up to ${pathOf(entry, what)}); ${RULE}`);
  }
}
