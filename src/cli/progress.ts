import cliProgress from 'cli-progress';

/** A progress bar on stderr when it is a terminal; silent when piped or in CI. */
export interface Progress {
  update(done: number, total: number | null, extra?: Record<string, string | number>): void;
  stop(): void;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function createProgress(label: string, unit = 'rows'): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {bytes} | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total, extra = {}) {
      if (!started) {
        bar.start(total ?? done, done, { bytes: '0 B', ...extra });
        started = true;
      }
      if (total !== null) bar.setTotal(Math.max(total, done));
      else bar.setTotal(done);
      bar.update(done, extra);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
