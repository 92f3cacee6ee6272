import { z } from 'zod';
import { AcpError } from './errors.js';

/** Names of clusters, nodes and actors: lower-case, at most 63 characters. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** The longest name NAME_PATTERN takes. */
export const NAME_MAX = 63;
export const PRIMARY = '@primary';
const SCHEME = 'acp://';

export interface ActorPath {
  readonly cluster: string;
  /** A node name, or `@primary`, resolved at send time. */
  readonly node: string;
  /** The service followed by any child names: never empty. */
  readonly segments: readonly string[];
}

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/** The naming rule in words and as the pattern, for every refusal of a name. */
export const NAME_RULE = "names are 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit ([a-z0-9][a-z0-9._-]{0,62})";

/** A name as a zod schema, for names in messages and files; the issue quotes the rule. */
export const nameSchema = z.string().regex(NAME_PATTERN, NAME_RULE);

export function assertName(name: string, what: string): string {
  if (!isValidName(name)) {
    throw new AcpError('ACP_ERR_NAME_INVALID', `${what} name ${JSON.stringify(name)} is invalid: ${NAME_RULE}`);
  }
  return name;
}

function invalid(input: string, part: string, why: string): AcpError {
  return new AcpError('ACP_ERR_PATH_INVALID', `invalid actor path ${JSON.stringify(input)}: ${part} ${why}`);
}

/**
 * Paths parsed before, each once: every frame names its target (and often its sender) as a string,
 * and a node talks to few distinct actors. Bounded: emptied when full. The entries are frozen, so
 * sharing one among callers is safe.
 */
const parsed = new Map<string, ActorPath>();
const PARSED_MAX = 4096;
const formatted = new WeakMap<ActorPath, string>();

/** Parses `acp://<cluster>/<node>/<service>[/<child>...]`; the error names the offending part. */
export function parsePath(input: string): ActorPath {
  const known = parsed.get(input);
  if (known !== undefined) return known;
  const path = parseUncached(input);
  if (parsed.size >= PARSED_MAX) parsed.clear();
  parsed.set(input, path);
  formatted.set(path, input);
  return path;
}

function parseUncached(input: string): ActorPath {
  if (typeof input !== 'string') throw invalid(String(input), 'the path', 'is not a string');
  if (!input.startsWith(SCHEME)) throw invalid(input, 'the scheme', "must be 'acp://'");
  const parts = input.slice(SCHEME.length).split('/');
  const [cluster = '', node = '', ...segments] = parts;
  if (!isValidName(cluster)) throw invalid(input, `cluster ${JSON.stringify(cluster)}`, 'is not a valid name');
  if (node !== PRIMARY && !isValidName(node)) {
    throw invalid(input, `node ${JSON.stringify(node)}`, `is not a valid node name or '${PRIMARY}'`);
  }
  if (segments.length === 0) throw invalid(input, 'the service', 'is missing');
  segments.forEach((segment, index) => {
    if (!isValidName(segment)) {
      const what = index === 0 ? 'service' : `child #${index}`;
      throw invalid(input, `${what} ${JSON.stringify(segment)}`, 'is not a valid name');
    }
  });
  return Object.freeze({ cluster, node, segments: Object.freeze(segments) });
}

export function formatPath(path: ActorPath): string {
  return formatted.get(path) ?? `${SCHEME}${path.cluster}/${path.node}/${path.segments.join('/')}`;
}

/** Builds a path from names, each checked on its own (a '/' inside a name is an error, not a split). */
export function makePath(cluster: string, node: string, ...segments: string[]): ActorPath {
  const input = `${SCHEME}${[cluster, node, ...segments].join('/')}`;
  const withSlash = [cluster, node, ...segments].find((part) => part.includes('/'));
  if (withSlash !== undefined) throw invalid(input, `name ${JSON.stringify(withSlash)}`, "contains '/'");
  return parsePath(input);
}

export function childPath(parent: ActorPath, name: string): ActorPath {
  assertName(name, 'actor');
  return { cluster: parent.cluster, node: parent.node, segments: [...parent.segments, name] };
}

export function parentPath(path: ActorPath): ActorPath | undefined {
  if (path.segments.length < 2) return undefined;
  return { ...path, segments: path.segments.slice(0, -1) };
}

export function toPath(path: string | ActorPath): ActorPath {
  return typeof path === 'string' ? parsePath(path) : path;
}
