// HTTP plumbing of the local Scaleway: a tiny router, JSON bodies, and Scaleway's error bodies.
// Every response carries `Content-Type: application/json` exactly: the SDK refuses anything else
// (including `application/json; charset=utf-8`).
import type { IncomingMessage, ServerResponse } from 'node:http';

/** An error answered with Scaleway's error body; the SDK picks its error class from `type`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(typeof body.message === 'string' ? body.message : `HTTP ${status}`);
    this.name = 'ApiError';
  }
}

export const errors = {
  notFound: (resource: string, resourceId: string) =>
    new ApiError(404, { message: 'resource is not found', resource, resource_id: resourceId, type: 'not_found' }),
  transientState: (resource: string, resourceId: string, currentState: string) =>
    new ApiError(409, {
      message: 'resource is in a transient state',
      resource,
      resource_id: resourceId,
      current_state: currentState,
      type: 'transient_state',
    }),
  invalidArguments: (argumentName: string, reason: 'required' | 'format' | 'constraint', helpMessage: string) =>
    new ApiError(400, {
      message: 'invalid argument(s)',
      details: [{ argument_name: argumentName, reason, help_message: helpMessage }],
      type: 'invalid_arguments',
    }),
  invalidRequest: (message: string) => new ApiError(400, { message, type: 'invalid_request_error' }),
  preconditionFailed: (precondition: string, helpMessage: string) =>
    new ApiError(412, { message: 'precondition failed', precondition, help_message: helpMessage, type: 'precondition_failed' }),
  permissionsDenied: (action: string, resource: string) =>
    new ApiError(403, { message: 'insufficient permissions', details: [{ action, resource }], type: 'permissions_denied' }),
  deniedAuthentication: (reason: 'invalid_argument' | 'not_found' | 'expired') =>
    new ApiError(401, { message: 'authentication is denied', method: 'api_key', reason, type: 'denied_authentication' }),
  tooManyRequests: () =>
    new ApiError(429, {
      message: 'too many requests',
      help_message: 'rate limit exceeded (injected by the local Scaleway), retry later',
      type: 'too_many_requests',
    }),
  server: (status: number) =>
    new ApiError(status, {
      message: status === 503 ? 'service unavailable' : 'internal server error',
      type: status === 503 ? 'service_unavailable' : 'internal_error',
    }),
};

export interface RequestContext {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: Record<string, unknown>;
  headers: IncomingMessage['headers'];
}

/** What a handler returns: a JSON value (200), or `null` for 204 No Content. */
export type HandlerResult = unknown;
export type Handler = (ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;

export interface Route {
  method: string;
  pattern: RegExp;
  names: string[];
  /** Name of the action for permission faults, e.g. `exportSnapshotToObjectStorage` (the SDK's method name). */
  action: string;
  /** Resource named in a permissions_denied body. */
  resource: string;
  handler: Handler;
}

export class Router {
  readonly routes: Route[] = [];

  /** `path` uses `{name}` segments, e.g. `/block/{version}/zones/{zone}/volumes/{volumeId}`. */
  add(method: string, path: string, action: string, resource: string, handler: Handler): void {
    const names: string[] = [];
    const source = path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, (_m, name: string) => {
      names.push(name);
      return '([^/]+)';
    });
    this.routes.push({ method, pattern: new RegExp(`^${source}$`), names, action, resource, handler });
  }

  match(method: string, path: string): { route: Route; params: Record<string, string> } | { allowed: string[] } | null {
    const allowed: string[] = [];
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      if (route.method !== method) {
        allowed.push(route.method);
        continue;
      }
      const params: Record<string, string> = {};
      route.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1]!)));
      return { route, params };
    }
    return allowed.length ? { allowed } : null;
  }
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  if (status === 204 || value === null || value === undefined) {
    res.writeHead(status === 200 ? 204 : status);
    res.end();
    return;
  }
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const MAX_BODY = 1024 * 1024;

export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw errors.invalidRequest('request body too large');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw errors.invalidRequest('request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw errors.invalidRequest('request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

// Small readers for request fields, raising invalid_arguments like the real API.
export function optString(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw errors.invalidArguments(name, 'format', 'must be a string');
  return v;
}

export function reqString(body: Record<string, unknown>, name: string): string {
  const v = optString(body, name);
  if (v === undefined || v === '') throw errors.invalidArguments(name, 'required', 'is required');
  return v;
}

export function optNumber(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  // uint64 fields may arrive as strings in Scaleway's JSON.
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw errors.invalidArguments(name, 'format', 'must be a number');
  return n;
}

export function optStringArray(body: Record<string, unknown>, name: string): string[] | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw errors.invalidArguments(name, 'format', 'must be an array of strings');
  }
  return v as string[];
}

export function optStringMap(body: Record<string, unknown>, name: string): Record<string, string> | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw errors.invalidArguments(name, 'format', 'must be a map of strings');
  }
  return v as Record<string, string>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string): boolean => UUID.test(s);

/** Reads `page` (1-based) and `page_size` (1..100, default 50) and slices `items`. */
export function paginate<T>(items: T[], query: URLSearchParams): { page: T[]; total: number } {
  const page = query.get('page') ? Number(query.get('page')) : 1;
  const size = query.get('page_size') ? Number(query.get('page_size')) : 50;
  if (!Number.isInteger(page) || page < 1) throw errors.invalidArguments('page', 'constraint', 'must be >= 1');
  if (!Number.isInteger(size) || size < 1 || size > 100) {
    throw errors.invalidArguments('page_size', 'constraint', 'must be between 1 and 100');
  }
  return { page: items.slice((page - 1) * size, page * size), total: items.length };
}

export function orderBy<T extends { created_at: string; name?: string }>(items: T[], order: string | null): T[] {
  const o = order ?? 'created_at_asc';
  const valid = ['created_at_asc', 'created_at_desc', 'name_asc', 'name_desc'];
  if (!valid.includes(o)) throw errors.invalidArguments('order_by', 'constraint', `must be one of ${valid.join(', ')}`);
  const [field, dir] = o.startsWith('name') ? ['name', o.slice(5)] : ['created_at', o.slice(11)];
  const sorted = [...items].sort((a, b) => {
    const x = String((a as Record<string, unknown>)[field] ?? '');
    const y = String((b as Record<string, unknown>)[field] ?? '');
    return x < y ? -1 : x > y ? 1 : 0;
  });
  return dir === 'desc' ? sorted.reverse() : sorted;
}

export const nowIso = (): string => new Date().toISOString();
