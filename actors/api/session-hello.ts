/** The checks of a hello (session.ts): its fields, its names, its key or token, its cluster, and what the listener adds. */
import { helloBodySchema, type HelloBody } from '../../runtime/codec.js';
import { AcpError } from '../../runtime/errors.js';
import { isValidName, NAME_RULE } from '../../runtime/path.js';
import { OPERATOR, type Principal } from '../../runtime/principal.js';
import { keysMatch, type SessionOptions } from './session-options.js';

/**
 * Whom a connection speaks for, from its hello: the API key proves the operator, a token its
 * holder with the token's role, and `options.authenticate` may refine either (the agent makes a
 * peer a node). Throws an AcpError naming what is wrong, with the code the refusal carries.
 */
export function helloPrincipal(body: unknown, options: SessionOptions, cluster: string): Principal {
  const parsed = helloBodySchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AcpError('ACP_ERR_WIRE_BAD_HELLO', `bad hello: field '${issue?.path.join('.')}': ${issue?.message}`);
  }
  const hello = parsed.data;
  // Names from outside go through the one naming rule before anything else looks at them.
  for (const field of ['cluster', 'node'] as const) {
    const name = hello[field];
    if (name !== undefined && !isValidName(name)) {
      const shown = JSON.stringify(name.length > 70 ? `${name.slice(0, 64)}…` : name);
      throw new AcpError('ACP_ERR_NAME_INVALID', `bad hello: field '${field}': ${shown} is not a valid name: ${NAME_RULE}`);
    }
  }
  let proven: Principal;
  if (hello.token !== undefined) {
    if (!options.tokens) throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'this listener does not take API tokens; use the API key');
    try {
      const record = options.tokens.verify(hello.token);
      proven = { kind: 'token', id: record.id, role: record.role };
    } catch (error) {
      throw AcpError.from(error, 'ACP_ERR_AUTH_BAD_TOKEN');
    }
  } else if (hello.apiKey !== undefined && keysMatch(hello.apiKey, options.apiKey)) {
    proven = OPERATOR;
  } else {
    throw new AcpError('ACP_ERR_WIRE_BAD_KEY', 'wrong or missing API key: use the key in <home>/secrets/api.key of the node you connect to, or an API token (--token)');
  }
  if (hello.cluster !== cluster) throw new AcpError('ACP_ERR_WIRE_BAD_HELLO', `this node belongs to cluster '${cluster}', not '${hello.cluster}'`);
  try {
    return options.authenticate?.(body as HelloBody & Record<string, unknown>, proven) ?? proven;
  } catch (error) {
    throw AcpError.from(error, 'ACP_ERR_WIRE_BAD_HELLO');
  }
}
