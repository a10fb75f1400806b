import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SSHD = '/usr/sbin/sshd';

/**
 * A real SFTP server for tests: OpenSSH's sshd on 127.0.0.1 and a free port, with a
 * fresh ed25519 host key and client key in a temporary folder, public-key login only,
 * and the internal-sftp subsystem. Needs the Debian package openssh-server
 * (`apt-get install -y openssh-server`; .ci/run installs it).
 */
export interface TestSftpServer {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  /** The client's private key (OpenSSH format), authorized on the server. */
  readonly privateKey: string;
  /** The host key's fingerprint as `ssh-keygen -l -E sha256` prints it (`SHA256:…`). */
  readonly hostKeyFingerprint: string;
  /** The fingerprint of another, unrelated key: for mismatch tests. */
  readonly otherFingerprint: string;
  /** An empty folder on this machine that the tests upload into (an absolute path). */
  readonly uploadDir: string;
  stop(): Promise<void>;
}

export function sshdAvailable(): boolean {
  return existsSync(SSHD);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function keypair(file: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-test', '-f', file]);
}

async function fingerprint(publicKeyFile: string): Promise<string> {
  const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', publicKeyFile]);
  const match = /SHA256:[A-Za-z0-9+/]+/.exec(stdout);
  if (!match) throw new Error(`ssh-keygen printed no fingerprint: ${stdout}`);
  return match[0];
}

export async function startSftpServer(): Promise<TestSftpServer> {
  if (!sshdAvailable())
    throw new Error(
      `${SSHD} is missing: install it with apt-get update && apt-get install -y openssh-server`,
    );
  // sshd refuses to start without its privilege-separation directory.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => undefined);
  const dir = await mkdtemp(path.join(tmpdir(), 'ferry-sshd-'));
  const uploadDir = path.join(dir, 'upload');
  await mkdir(uploadDir);
  await Promise.all([
    keypair(path.join(dir, 'host_key')),
    keypair(path.join(dir, 'client_key')),
    keypair(path.join(dir, 'other_key')),
  ]);
  await writeFile(path.join(dir, 'authorized_keys'), await readFile(path.join(dir, 'client_key.pub')), {
    mode: 0o600,
  });
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host_key')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      'UsePAM no',
      'StrictModes no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'Subsystem sftp internal-sftp',
      'ChrootDirectory none',
      'LogLevel INFO',
      '',
    ].join('\n'),
  );
  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    await listening(child, port);
  } catch (err) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const [hostKeyFingerprint, otherFingerprint, privateKey] = await Promise.all([
    fingerprint(path.join(dir, 'host_key.pub')),
    fingerprint(path.join(dir, 'other_key.pub')),
    readFile(path.join(dir, 'client_key'), 'utf8'),
  ]);
  return {
    host: '127.0.0.1',
    port,
    username: userInfo().username,
    privateKey,
    hostKeyFingerprint,
    otherFingerprint,
    uploadDir,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function listening(child: ChildProcess, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`sshd did not start within 10 s:\n${log}`)), 10_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      log += text;
      if (log.includes(`Server listening on 127.0.0.1 port ${port}`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sshd exited with code ${code}:\n${log}`));
    });
  });
}
