import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** A `ferry worker` child process and what it printed. */
export interface WorkerProcess {
  child: ChildProcess;
  output: string[];
  exited: Promise<void>;
}

/** `npx ferry worker` in a process group of its own, so a SIGKILL takes npx and node down together. */
export function startWorker(env: Record<string, string>): WorkerProcess {
  const child = spawn('npx', ['ferry', 'worker'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, output, exited };
}

/** Signals the worker's whole process group, unless it has already exited. */
export function killGroup(worker: WorkerProcess, signal: NodeJS.Signals): void {
  if (worker.child.exitCode === null && worker.child.signalCode === null)
    process.kill(-worker.child.pid!, signal);
}
