// import-volume: queue trigger. Imports the uploaded image as a Block snapshot; poll-export then
// creates the volume and cleans up. A duplicated message does nothing.
import { z } from 'zod';
import { makeHandler } from '../lib/pipeline/handler.js';
import { importVolume } from '../lib/pipeline/restore.js';

const Message = z.object({ type: z.literal('import'), runId: z.string().min(1), resource: z.string().min(1) });

export const handle = makeHandler({
  name: 'import-volume',
  schema: Message,
  async run(msg, p) {
    const out = await importVolume(p, msg.resource, msg.runId);
    return { status: 200, body: { action: out.action, reason: out.reason, runId: msg.runId, stage: out.run?.stage } };
  },
});
