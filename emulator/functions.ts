// Scaleway Functions, locally: each handler served by @scaleway/serverless-functions on loopback,
// called the way Scaleway calls it. HTTP calls to private functions need X-Auth-Token (Scaleway
// checks it before the function runs; serveHandler does not, so this host does). A cron driver
// posts trigger inputs; a queue driver reads SQS queues and posts each message body, retrying up to
// 3 times on a status >= 300 like Scaleway's SQS triggers, then dropping the message (or to a DLQ).
import type { AddressInfo } from 'node:net';
import { serveHandler } from '@scaleway/serverless-functions';
import { DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { Handler } from '../lib/pipeline/handler.js';
import type { Logger } from '../lib/pipeline/log.js';
import { cronMatches } from './cron.js';

export interface CronTrigger {
  function: string;
  schedule: string;
  input: unknown;
}

export interface QueueTrigger {
  function: string;
  queueUrl: string;
  deadLetterQueueUrl?: string;
}

export interface LocalFunctionsOptions {
  handlers: Record<string, Handler>;
  /** Functions reachable over HTTP only with this X-Auth-Token. */
  privateToken: string;
  crons?: CronTrigger[];
  queues?: QueueTrigger[];
  sqs?: SQSClient;
  log: Logger;
}

export interface CallResult {
  status: number;
  body: any;
}

export interface LocalFunctions {
  urls: Record<string, string>;
  /** An HTTP call from outside (needs the token, like a private Scaleway function). */
  call(name: string, body: unknown, opts?: { token?: string | null; method?: string; raw?: string }): Promise<CallResult>;
  /** Fires every cron trigger whose schedule matches `at` (the poll-export one matches every minute). */
  cronTick(at?: Date, only?: string): Promise<CallResult[]>;
  /** Delivers every message waiting in the trigger queues (and any they cause); returns how many. */
  drainQueues(): Promise<number>;
  /** Runs the drivers in the background: queues polled continuously, crons every `cronEveryMs`. */
  startDrivers(opts: { cronEveryMs: number; cronFunctions?: string[] }): void;
  stop(): Promise<void>;
}

const MAX_TRIGGER_RETRIES = 3;

export async function startLocalFunctions(opts: LocalFunctionsOptions): Promise<LocalFunctions> {
  const internalSecret = crypto.randomUUID();
  const servers: ReturnType<typeof serveHandler>[] = [];
  const urls: Record<string, string> = {};
  const quietLog = console.log;
  // serveHandler prints "Server listening" for every function (from its listen callback).
  console.log = (...args: unknown[]) => {
    if (!(typeof args[0] === 'string' && args[0].startsWith('Server listening at'))) quietLog(...args);
  };
  try {
    for (const [name, handler] of Object.entries(opts.handlers)) {
      const server = serveHandler(handler as never, 0);
      server.addHook('onRequest', (req, reply, done) => {
        // Triggers are internal calls; anything else must carry the private function's token.
        if (req.headers['x-kloset-internal-trigger'] === internalSecret) return done();
        if (req.headers['x-auth-token'] !== opts.privateToken) {
          reply.code(401).header('Content-Type', 'application/json').send(JSON.stringify({ error: 'private function: X-Auth-Token missing or invalid' }));
          return;
        }
        done();
      });
      await server.ready();
      await new Promise<void>((resolve) => (server.server.listening ? resolve() : server.server.once('listening', () => resolve())));
      const port = (server.server.address() as AddressInfo).port;
      urls[name] = `http://localhost:${port}`;
      servers.push(server);
    }
  } finally {
    setTimeout(() => (console.log = quietLog), 100).unref();
  }

  const post = async (name: string, body: string, headers: Record<string, string>, method = 'POST'): Promise<CallResult> => {
    const url = urls[name];
    if (!url) throw new Error(`no local function named ${name}`);
    const res = await fetch(url, { method, headers: { 'Content-Type': 'application/json', ...headers }, body: method === 'GET' ? undefined : body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed };
  };
  const internal = (name: string, body: string) => post(name, body, { 'x-kloset-internal-trigger': internalSecret });

  let draining: Promise<number> | null = null;
  const deliverOnce = async (t: QueueTrigger): Promise<number> => {
    const sqs = opts.sqs!;
    const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: t.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 3600 }));
    const messages = out.Messages ?? [];
    await Promise.all(
      messages.map(async (m) => {
        let status = 0;
        for (let attempt = 0; attempt <= MAX_TRIGGER_RETRIES; attempt++) {
          const res = await internal(t.function, m.Body ?? '').catch((err: Error) => ({ status: 599, body: err.message }));
          status = res.status;
          if (status < 300) break;
          opts.log.warn('trigger delivery failed', { function: t.function, status, attempt: attempt + 1, body: res.body });
        }
        if (status >= 300) {
          opts.log.error('message dropped after retries', { function: t.function, status });
          if (t.deadLetterQueueUrl) await sqs.send(new SendMessageCommand({ QueueUrl: t.deadLetterQueueUrl, MessageBody: m.Body ?? '' }));
        }
        await sqs.send(new DeleteMessageCommand({ QueueUrl: t.queueUrl, ReceiptHandle: m.ReceiptHandle! }));
      }),
    );
    return messages.length;
  };
  const drainQueues = (): Promise<number> => {
    draining ??= (async () => {
      let total = 0;
      for (;;) {
        let n = 0;
        for (const t of opts.queues ?? []) n += await deliverOnce(t);
        total += n;
        if (n === 0) return total;
      }
    })().finally(() => {
      draining = null;
    });
    return draining;
  };

  const cronTick = async (at = new Date(), only?: string) => {
    const due = (opts.crons ?? []).filter((c) => (!only || c.function === only) && cronMatches(c.schedule, at));
    return Promise.all(due.map((c) => internal(c.function, JSON.stringify(c.input))));
  };

  let timers: NodeJS.Timeout[] = [];
  let stopping = false;
  return {
    urls,
    call(name, body, o = {}) {
      const headers: Record<string, string> = {};
      const token = o.token === undefined ? opts.privateToken : o.token;
      if (token) headers['x-auth-token'] = token;
      return post(name, o.raw ?? JSON.stringify(body), headers, o.method);
    },
    cronTick,
    drainQueues,
    startDrivers({ cronEveryMs, cronFunctions }) {
      const loop = (fn: () => Promise<unknown>, every: number) => {
        const tick = async () => {
          if (stopping) return;
          await fn().catch((err: Error) => opts.log.error('driver error', { error: err.message }));
          if (!stopping) timers.push(setTimeout(tick, every));
        };
        timers.push(setTimeout(tick, every));
      };
      loop(drainQueues, 200);
      // Local time runs faster: every tick counts as a matching minute for the chosen functions.
      loop(async () => {
        for (const c of opts.crons ?? []) {
          if (!cronFunctions || cronFunctions.includes(c.function)) await internal(c.function, JSON.stringify(c.input));
        }
      }, cronEveryMs);
    },
    async stop() {
      stopping = true;
      timers.forEach(clearTimeout);
      timers = [];
      await draining?.catch(() => {});
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}
