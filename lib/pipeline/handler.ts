// What every function shares: parse the event (HTTP body, cron input or queue message: all arrive as
// a POST body), validate it with a schema, call lib/pipeline, shape the answer. Bad input gets a 4xx
// naming the field and changes nothing; unexpected errors get a 500 (queue triggers then retry).
import type { z } from 'zod';
import { ConfigError } from './config.js';
import { Pipeline, UnknownResourceError } from './context.js';
import { RequestProblem } from './backup.js';

/** The parts of Scaleway's function event we use (its published types are stale). */
export interface FunctionEvent {
  httpMethod?: string;
  path?: string;
  headers?: Record<string, string | undefined>;
  body?: string | null;
  isBase64Encoded?: boolean;
}

export interface FunctionResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

export type Handler = (event: FunctionEvent, context?: unknown) => Promise<FunctionResponse>;

const json = (statusCode: number, body: unknown): FunctionResponse => ({
  statusCode,
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});

let shared: Promise<Pipeline> | null = null;
/** One pipeline per function instance (Scaleway reuses instances between calls). */
export function instancePipeline(): Promise<Pipeline> {
  shared ??= Pipeline.fromEnv().catch((err) => {
    shared = null;
    throw err;
  });
  return shared;
}

export interface HandlerSpec<S extends z.ZodType> {
  name: string;
  schema: S;
  run: (input: z.infer<S>, p: Pipeline) => Promise<{ status: number; body: unknown }>;
  /** For tests and the local runner: a pipeline instead of the one built from the environment. */
  pipeline?: () => Promise<Pipeline>;
}

export function makeHandler<S extends z.ZodType>(spec: HandlerSpec<S>): Handler & { withPipeline(p: () => Promise<Pipeline>): Handler } {
  const build = (getPipeline: () => Promise<Pipeline>): Handler => async (event) => {
    if (event.httpMethod && !['POST', 'PUT'].includes(event.httpMethod.toUpperCase())) {
      return json(405, { error: `${spec.name} accepts POST only` });
    }
    let raw: unknown = {};
    const text = event.isBase64Encoded && event.body ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
    if (text && text.trim()) {
      try {
        raw = JSON.parse(text);
      } catch {
        return json(400, { error: 'the body is not valid JSON' });
      }
    }
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => ({
        field: i.path.map(String).join('.') || '(body)',
        message: /received undefined$/.test(i.message) ? 'is required' : i.message,
      }));
      return json(400, { error: 'invalid request', problems });
    }
    let p: Pipeline;
    try {
      p = await getPipeline();
    } catch (err) {
      if (err instanceof ConfigError) return json(500, { error: 'the function is misconfigured', problems: err.problems });
      throw err;
    }
    try {
      const out = await spec.run(parsed.data, p);
      return json(out.status, out.body);
    } catch (err) {
      if (err instanceof RequestProblem) return json(err.status, { error: err.message, problems: [{ field: err.field, message: err.message }] });
      if (err instanceof UnknownResourceError) return json(404, { error: err.message, problems: [{ field: 'resource', message: err.message }] });
      p.log.error(`${spec.name} failed`, { error: (err as Error).message });
      return json(500, { error: (err as Error).message });
    }
  };
  const handler = build(spec.pipeline ?? instancePipeline) as Handler & { withPipeline(p: () => Promise<Pipeline>): Handler };
  handler.withPipeline = (p) => build(p);
  return handler;
}
