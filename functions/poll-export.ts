// poll-export: cron every minute. Advances every run waiting on Scaleway (snapshots, exports,
// job runs, imports, volumes) and cleans up after finished or failed ones.
import { z } from 'zod';
import { makeHandler } from '../lib/pipeline/handler.js';
import { pollRuns } from '../lib/pipeline/poll.js';

const Input = z.object({ resource: z.string().optional(), runId: z.string().optional() });

export const handle = makeHandler({
  name: 'poll-export',
  schema: Input,
  async run(input, p) {
    return { status: 200, body: await pollRuns(p, input) };
  },
});
