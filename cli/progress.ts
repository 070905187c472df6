// Progress for long commands: a bar on stderr when it is a terminal, nothing otherwise (stdout may
// carry an image or JSON). Functions and the job log structured progress instead.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface Progress {
  update(done: number, total?: number): void;
  stop(): void;
}

const MiB = 1024 * 1024;

export function byteProgress(label: string, total: number | undefined, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return { update() {}, stop() {} };
  // Loaded only for a terminal: scripts and jobs, the usual callers, skip its start-up cost.
  const cliProgress = require('cli-progress') as typeof import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | {speed} MiB/s | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  const start = Date.now();
  let t = total ?? 0;
  bar.start(Math.max(t, 1), 0, { doneMiB: '0', totalMiB: total ? (total / MiB).toFixed(0) : '?', speed: '0' });
  return {
    update(done, newTotal) {
      if (newTotal !== undefined && newTotal !== t) {
        t = newTotal;
        bar.setTotal(Math.max(t, done, 1));
      } else if (done > t) bar.setTotal(done);
      const secs = (Date.now() - start) / 1000;
      bar.update(done, {
        doneMiB: (done / MiB).toFixed(0),
        totalMiB: t ? (t / MiB).toFixed(0) : '?',
        speed: secs > 0 ? (done / MiB / secs).toFixed(0) : '0',
      });
    },
    stop() {
      bar.stop();
    },
  };
}
