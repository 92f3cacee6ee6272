import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { AcpError, errorMessage, type ErrorCode } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { statusFor } from './auth.js';

/**
 * How the web API refuses, always in its envelope `{error:{code,kind,message}}`: what a route's work
 * throws, and what never reaches a route (a path that is not in resolved form, a body fastify will
 * not parse, a request no route takes). Each refusal says what is wrong with the request, with the
 * code of that failure: a path problem is not called a body problem, nor a bad id a missing route.
 */

/** The most a REST body may be. */
export const BODY_LIMIT = 1024 * 1024;

/**
 * The router's bound on a path parameter. It guards regex parameters, which the API has none of;
 * above the 16 KiB Node allows a request head, it lets every id reach its route, whose schema says
 * what is wrong with it (too long, the name rule) instead of the router calling it no route.
 */
export const MAX_PARAM_LENGTH = 16 * 1024;

interface Refusal {
  status: number;
  code: ErrorCode;
  message: string;
}

/** Some of a path or key, to quote in a message without echoing kilobytes back. */
function shown(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}

const pathOf = (request: FastifyRequest) => request.url.split('?', 1)[0] ?? '';

function send(reply: FastifyReply, refusal: Refusal): FastifyReply {
  return reply.code(refusal.status).send({ error: new AcpError(refusal.code, refusal.message).toData() });
}

/** Any error as the envelope: an AcpError with the status of its kind, anything else as internal. */
export function sendRefusal(reply: FastifyReply, error: unknown): FastifyReply {
  const refusal = AcpError.from(error);
  return reply.code(statusFor(refusal)).send({ error: refusal.toData() });
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * A refusal for a browser that navigated to the URL (acp ui's login link): a page saying what is
 * wrong, with a way on, instead of the envelope's JSON. Other clients get the envelope.
 */
export function sendRefusalPage(request: FastifyRequest, reply: FastifyReply, error: unknown, onward: { href: string; label: string }): FastifyReply {
  if (!String(request.headers.accept ?? '').includes('text/html')) return sendRefusal(reply, error);
  const refusal = AcpError.from(error);
  const text = `${refusal.message} (${refusal.code})`.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character]!);
  return reply
    .code(statusFor(refusal))
    .type('text/html; charset=utf-8')
    .send(`<!doctype html><html lang="en"><meta charset="utf-8"><title>ACP</title><body><h1>ACP</h1><p>${text}</p><p><a href="${onward.href}">${onward.label}</a></p></body></html>\n`);
}

/**
 * Why a request path is refused before any route runs, if it is. Paths are taken as sent, never
 * resolved, so a '.' or '..' segment (also percent-encoded) names nothing the API or the UI serves:
 * saying so beats a file server's bare 403 or a misleading "no route".
 */
export function pathProblem(path: string): string | undefined {
  for (const segment of path.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return `the path ${shown(path)} is not valid percent-encoding (at '${shown(segment, 20)}'): encode '%' as %25`;
    }
    const dots = decoded.split('/').find((part) => part === '.' || part === '..');
    if (dots !== undefined) return `the path ${shown(path)} has a '${dots}' segment: paths are not resolved here, so none leaves the API; send the resolved path`;
  }
  return undefined;
}

function noRoute(request: FastifyRequest): Refusal {
  return { status: 404, code: 'ACP_ERR_WEB_NO_ROUTE', message: `no route ${request.method} ${shown(pathOf(request))}; GET /api/v1/openapi.json lists the API's routes` };
}

/** What fastify and its plugins refuse by themselves, in the API's terms; undefined for what has no entry. */
function refusalOf(error: FastifyError, request: FastifyRequest): Refusal | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'ACP_ERR_WEB_BAD_BODY', message: `the body is larger than ${BODY_LIMIT / 1024 / 1024} MiB, the most the API takes` };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'ACP_ERR_WEB_BAD_BODY', message: `the API takes no body of content-type ${shown(String(request.headers['content-type']))}: send JSON, with content-type application/json` };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'ACP_ERR_WEB_BAD_BODY', message: 'the body is not as long as its content-length header says' };
    case 'FST_ERR_BAD_URL':
      return { status: 400, code: 'ACP_ERR_WEB_BAD_PATH', message: `the path ${shown(pathOf(request))} is not valid percent-encoding: encode '%' as %25` };
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 414, code: 'ACP_ERR_WEB_BAD_PATH', message: `the path ${shown(pathOf(request))} has a segment longer than ${MAX_PARAM_LENGTH} characters; ids are at most 63` };
    case 'FST_STATIC_FORBIDDEN_PATH':
      // The UI's files refuse a spelling that is not theirs (an alias, a name too long for the file
      // system) once the path has passed pathProblem: no route serves it either.
      return noRoute(request);
    default:
      return undefined;
  }
}

/** For fastify's `frameworkErrors`: what its router refuses before any hook or handler runs. */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known = refusalOf(error, request);
  void (known ? send(reply, known) : sendRefusal(reply, error));
}

/**
 * A JSON body. Keys that would reach an object's prototype are refused, as fastify's own parser
 * does, but saying so: fastify calls such a body "not valid JSON", which it is.
 */
export function parseJsonBody(body: string): unknown {
  if (body.length === 0) throw new AcpError('ACP_ERR_WEB_BAD_BODY', 'the body is empty though its content-type is application/json: send a JSON value, or no content-type');
  let refused: '__proto__' | 'constructor' | undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body, (key, value: unknown) => {
      if (key === '__proto__') refused ??= key;
      else if (key === 'constructor' && typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype')) refused ??= key;
      return value;
    });
  } catch (error) {
    throw new AcpError('ACP_ERR_WEB_BAD_BODY', `the body is not valid JSON: ${errorMessage(error)}`);
  }
  if (refused === '__proto__') throw new AcpError('ACP_ERR_WEB_BAD_BODY', "the body has a '__proto__' key, which is refused (it could reach objects' prototypes): remove it");
  if (refused === 'constructor') throw new AcpError('ACP_ERR_WEB_BAD_BODY', "the body has a 'constructor' key holding a 'prototype', which is refused (it could reach objects' prototypes): remove it");
  return parsed;
}

/** Where in a request a value came from, to name it as the client wrote it. */
export type RequestPart = 'body' | 'query' | 'path';
const NAMED: Record<RequestPart, string> = { body: 'field', query: 'query parameter', path: 'path parameter' };
const WHOLE: Record<RequestPart, string> = { body: 'the body', query: 'the query string', path: 'the path' };

/** One part of a request through its schema; a refusal names the field, query or path parameter. */
export function parsePart<T extends z.ZodType>(schema: T, value: unknown, part: RequestPart): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new AcpError('ACP_ERR_SCHEMA_REJECTED', describe(schema, result.error, part));
}

function describe(schema: z.ZodType, error: z.ZodError, part: RequestPart): string {
  const issue = error.issues[0];
  if (!issue) return `${WHOLE[part]} is invalid`;
  const at = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const names = issue.keys.map((key) => `'${shown([...at, key].join('.'), 40)}'`).join(', ');
    const takes = at.length === 0 && schema instanceof z.ZodObject ? `; ${WHOLE[part]} takes: ${Object.keys(schema.shape).join(', ') || 'nothing'}` : '';
    return `unknown ${NAMED[part]}${issue.keys.length > 1 ? 's' : ''} ${names}${takes}`;
  }
  return `${at.length > 0 ? `${NAMED[part]} '${at.join('.')}'` : WHOLE[part]}: ${issue.message}`;
}

/**
 * Installs the refusals on the root instance, before any plugin, so every route inherits them: the
 * path check, the JSON parser, the error handler and the not-found handler.
 */
export function registerRefusals(app: FastifyInstance, log: Logger): void {
  app.addHook('onRequest', async (request, reply) => {
    const problem = pathProblem(pathOf(request));
    if (problem !== undefined) return send(reply, { status: 400, code: 'ACP_ERR_WEB_BAD_PATH', message: problem });
    return undefined;
  });
  app.addContentTypeParser('application/json', { parseAs: 'string' }, async (_request: FastifyRequest, body: string | Buffer) => parseJsonBody(body.toString()));
  // JSON only: a text/plain body reached the routes as a string, refused as "expected object".
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof AcpError) return sendRefusal(reply, error);
    const known = refusalOf(error, request);
    if (known) return send(reply, known);
    const status = error.statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      log.debug({ code: error.code, status, err: error.message }, 'the HTTP layer refused a request for a reason the web API has no code for');
      return send(reply, { status, code: 'ACP_ERR_WEB_REFUSED', message: `the request was refused (HTTP ${status}): ${error.message}` });
    }
    log.error({ code: error.code, err: error.message }, 'a web request failed');
    return sendRefusal(reply, error);
  });
  app.setNotFoundHandler((request, reply) => send(reply, noRoute(request)));
}
