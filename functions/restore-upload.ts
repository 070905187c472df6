// restore-upload: HTTP (or a queue message). Given a store snapshot and a target, creates a restore
// run and streams the image into the staging bucket (here if small, else by the Serverless Job).
import { makeHandler } from '../lib/pipeline/handler.js';
import { RestoreRequestSchema, startRestore } from '../lib/pipeline/restore.js';

export const handle = makeHandler({
  name: 'restore-upload',
  schema: RestoreRequestSchema,
  async run(req, p) {
    const { run, created } = await startRestore(p, req, 'http');
    return { status: 202, body: { runId: run.id, stage: run.stage, status: run.status, created, error: run.error } };
  },
});
