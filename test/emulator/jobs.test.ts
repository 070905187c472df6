// Serverless Jobs through the real @scaleway/sdk: definitions, runs as local processes, stop.
import { readFile } from 'node:fs/promises';
import { Errors } from '@scaleway/sdk-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalScaleway } from '../../emulator/local.js';
import { sdkClients, startTestScaleway, waitFor } from './helpers.js';

let local: LocalScaleway;
let api: ReturnType<typeof sdkClients>;

beforeAll(async () => {
  local = await startTestScaleway();
  api = sdkClients(local);
});
afterAll(async () => {
  await local?.stop();
});

const ACTIVE = ['queued', 'scheduled', 'running'];

function define(name: string, command: string, environmentVariables: Record<string, string> = {}) {
  return api.jobs.createJobDefinition({
    name,
    cpuLimit: 1000,
    memoryLimit: 1024,
    imageUri: 'rg.fr-par.scw.cloud/scw-kloset/job:latest',
    command,
    description: `test ${name}`,
    environmentVariables,
    jobTimeout: '3600s',
  });
}

const finished = (id: string) =>
  waitFor(() => api.jobs.getJobRun({ jobRunId: id }), (r) => !ACTIVE.includes(r.state));

describe('job definitions', () => {
  it('creates, gets, lists, updates and deletes', async () => {
    const d = await define('def-crud', 'true', { A: '1' });
    expect(d.name).toBe('def-crud');
    expect(d.projectId).toBe(local.projectId);
    expect(d.region).toBe('fr-par');
    expect(d.environmentVariables).toEqual({ A: '1' });
    expect(d.jobTimeout).toBe('3600s');
    expect((await api.jobs.getJobDefinition({ jobDefinitionId: d.id })).command).toBe('true');

    await define('def-crud-2', 'true');
    await define('def-crud-3', 'true');
    const page = await api.jobs.listJobDefinitions({ pageSize: 2, page: 2 });
    expect(page.totalCount).toBeGreaterThanOrEqual(3);
    expect(page.jobDefinitions.length).toBeGreaterThanOrEqual(1);
    const all = await api.jobs.listJobDefinitions({ pageSize: 1 }).all();
    expect(all.map((x) => x.name)).toEqual(expect.arrayContaining(['def-crud', 'def-crud-2', 'def-crud-3']));

    const u = await api.jobs.updateJobDefinition({ jobDefinitionId: d.id, command: 'echo updated', environmentVariables: { B: '2' } });
    expect(u.command).toBe('echo updated');
    expect(u.environmentVariables).toEqual({ B: '2' });

    await api.jobs.deleteJobDefinition({ jobDefinitionId: d.id });
    await expect(api.jobs.getJobDefinition({ jobDefinitionId: d.id })).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
  });

  it('validates names and reserved variables with InvalidArgumentsError', async () => {
    await expect(define('x', 'true')).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
    await expect(define('reserved', 'true', { SCW_SLS_X: '1' })).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
  });
});

describe('job runs', () => {
  it('a command that exits 3 ends failed with exit code 3', async () => {
    const d = await define('exit-three', "sh -c 'exit 3'");
    const { jobRuns } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id });
    expect(jobRuns).toHaveLength(1);
    expect(jobRuns[0]!.state).toBe('queued');
    const run = await finished(jobRuns[0]!.id);
    expect(run.state).toBe('failed');
    expect(run.exitCode).toBe(3);
    expect(run.errorMessage).toContain('3');
    expect(run.terminatedAt).toBeInstanceOf(Date);
  });

  it('a succeeding run gets the per-run environment over the definition, and a command override', async () => {
    const d = await define('env-run', 'echo "$A-$B" && test "$B" = override', { A: 'def', B: 'def' });
    const { jobRuns } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id, environmentVariables: { B: 'override' } });
    const run = await finished(jobRuns[0]!.id);
    expect(run.state).toBe('succeeded');
    expect(run.exitCode).toBe(0);
    expect(run.environmentVariables).toEqual({ A: 'def', B: 'override' });
    expect(await readFile(local.emulator.jobRunLogPath(run.id), 'utf8')).toBe('def-override\n');

    const { jobRuns: other } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id, command: 'echo other; exit 0' });
    const o = await finished(other[0]!.id);
    expect(o.command).toBe('echo other; exit 0');
    expect(o.state).toBe('succeeded');
    expect(await readFile(local.emulator.jobRunLogPath(o.id), 'utf8')).toBe('other\n');

    const runs = await api.jobs.listJobRuns({ jobDefinitionId: d.id });
    expect(runs.totalCount).toBe(2);
    expect((await api.jobs.listJobRuns({ jobDefinitionId: d.id, state: 'succeeded', pageSize: 1 })).jobRuns).toHaveLength(1);
  });

  it('stop cancels a running command', async () => {
    const d = await define('long-run', 'sleep 60');
    const { jobRuns } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id });
    await waitFor(() => api.jobs.getJobRun({ jobRunId: jobRuns[0]!.id }), (r) => r.state === 'running');
    await api.jobs.stopJobRun({ jobRunId: jobRuns[0]!.id });
    const run = await finished(jobRuns[0]!.id);
    expect(run.state).toBe('canceled');
  });

  it('a run over its job_timeout ends failed', async () => {
    const d = await api.jobs.createJobDefinition({
      name: 'too-long',
      cpuLimit: 1000,
      memoryLimit: 1024,
      imageUri: 'x',
      command: 'sleep 30',
      description: '',
      jobTimeout: '1s',
    });
    const { jobRuns } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id });
    const run = await finished(jobRuns[0]!.id);
    expect(run.state).toBe('failed');
    expect(run.errorMessage).toContain('timeout');
  });

  it('stopping a finished run is refused', async () => {
    const d = await define('quick', 'true');
    const { jobRuns } = await api.jobs.startJobDefinition({ jobDefinitionId: d.id });
    await finished(jobRuns[0]!.id);
    await expect(api.jobs.stopJobRun({ jobRunId: jobRuns[0]!.id })).rejects.toBeInstanceOf(Errors.PreconditionFailedError);
  });

  it('unknown runs answer ResourceNotFoundError', async () => {
    await expect(api.jobs.getJobRun({ jobRunId: '11111111-2222-4333-8444-555555555555' })).rejects.toBeInstanceOf(
      Errors.ResourceNotFoundError,
    );
  });
});
