// trigger-export: cron (the resource's schedule) or HTTP ("back up now"). Creates the run and the
// Block snapshot; answers 202 with the run id. Overlapping cron ticks of one minute map to one run.
import { z } from 'zod';
import { makeHandler } from '../lib/pipeline/handler.js';
import { triggerBackup } from '../lib/pipeline/backup.js';

const Input = z.object({
  resource: z.string().min(1, 'is required'),
  /** Set in the cron trigger's input; absent for HTTP calls. */
  trigger: z.enum(['cron', 'http']).default('http'),
  idempotencyKey: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, hyphens or underscores').optional(),
});

export const handle = makeHandler({
  name: 'trigger-export',
  schema: Input,
  async run(input, p) {
    const slot = input.trigger === 'cron' ? new Date().toISOString().replace(/[-:]/g, '').slice(0, 13) : undefined;
    const out = await triggerBackup(p, input.resource, { trigger: input.trigger, slot, idempotencyKey: input.idempotencyKey });
    if ('skipped' in out) return { status: 200, body: { skipped: out.skipped, runId: out.activeRun } };
    return { status: 202, body: { runId: out.run.id, stage: out.run.stage, status: out.run.status, created: out.created } };
  },
});
