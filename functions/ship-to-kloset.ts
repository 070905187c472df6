// ship-to-kloset: queue trigger. Streams the exported image into the store (small images here,
// large ones by starting the Serverless Job). A duplicated message does nothing.
import { z } from 'zod';
import { makeHandler } from '../lib/pipeline/handler.js';
import { shipBackup } from '../lib/pipeline/backup.js';

const Message = z.object({ type: z.literal('ship'), runId: z.string().min(1), resource: z.string().min(1) });

export const handle = makeHandler({
  name: 'ship-to-kloset',
  schema: Message,
  async run(msg, p) {
    const out = await shipBackup(p, msg.resource, msg.runId);
    if (out.action === 'inline') return { status: 200, body: { action: out.action, runId: out.run.id, status: out.run.status, result: out.run.result } };
    return { status: 200, body: out };
  },
});
