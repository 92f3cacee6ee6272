import { z, type ZodType } from 'zod';
import { AcpError } from './errors.js';
import type { Message } from './messages.js';

/** Checks a message from outside the process against its target's schema; the error names the field. */
export function validateMessage(schema: ZodType | undefined, message: Message, target: string): AcpError | undefined {
  if (!schema) return undefined;
  const result = schema.safeParse(message);
  if (result.success) return undefined;
  const accepted = messageTypes(schema);
  if (accepted.length > 0 && !accepted.includes(message.type)) {
    return new AcpError('ACP_ERR_UNKNOWN_MESSAGE', `${target} does not handle messages of type '${message.type}'; it accepts: ${accepted.join(', ')}`, { accepted });
  }
  return new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${target}: ${describeIssues(result.error.issues)}`, {
    issues: result.error.issues.slice(0, 5).map((issue) => ({ path: issue.path.map(String), message: issue.message })),
  });
}

interface Issue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly code?: string;
  readonly errors?: readonly (readonly Issue[])[];
}

/** One readable line: for a union, the branch whose message type matched, else what types exist. */
export function describeIssues(issues: readonly Issue[]): string {
  const parts = issues.slice(0, 3).map((issue) => {
    const nested = issue.errors?.flat().filter((inner) => inner.path[0] !== 'type');
    if (issue.code === 'invalid_union' && nested && nested.length > 0) return describeIssues(nested);
    const where = issue.path.length > 0 ? `field '${issue.path.map(String).join('.')}'` : 'message';
    return `${where}: ${issue.message}`;
  });
  return parts.join('; ');
}

/** The message types a schema accepts (the literal `type` of each object in its unions). */
export function messageTypes(schema: ZodType): string[] {
  if (schema instanceof z.ZodUnion) return (schema.options as readonly ZodType[]).flatMap(messageTypes);
  if (schema instanceof z.ZodObject) {
    const type: unknown = schema.shape.type;
    return type instanceof z.ZodLiteral ? [...type.values].map(String) : [];
  }
  return [];
}
