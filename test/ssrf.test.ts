import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import {
  blockedRange,
  guardedAgents,
  normalizeHost,
  outboundPolicy,
  pinnedLookup,
  type Resolver,
  resolveOutbound,
} from '../src/lib/ssrf.ts';

/** A resolver answering from a table; counts its calls. Never touches real DNS. */
function stubResolver(table: Record<string, string[] | string[][]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const answers = new Map(Object.entries(table).map(([k, v]) => [k, v]));
  const resolver = (async (hostname: string) => {
    calls.push(hostname);
    const entry = answers.get(hostname);
    if (!entry) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
    // A list of lists answers differently per call (DNS rebinding).
    const list = Array.isArray(entry[0])
      ? (entry as string[][])[calls.filter((c) => c === hostname).length - 1]!
      : (entry as string[]);
    return list.map((address) => ({
      address,
      family: net.isIP(address) === 6 ? (6 as const) : (4 as const),
    }));
  }) as Resolver & { calls: string[] };
  resolver.calls = calls;
  return resolver;
}

/** Spies on every way a TCP or TLS connection can start. */
function spyConnections() {
  return [
    vi.spyOn(net.Socket.prototype, 'connect'),
    vi.spyOn(net, 'connect'),
    vi.spyOn(net, 'createConnection'),
    vi.spyOn(tls, 'connect'),
  ];
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('blockedRange', () => {
  test.each([
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'linkLocal'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['224.0.0.251', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['fe80::1', 'linkLocal'],
    ['ff02::1', 'multicast'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:169.254.169.254', 'linkLocal'],
    ['64:ff9b::a00:1', 'rfc6052'],
    ['2002:a00:1::', '6to4'],
  ])('%s is refused as %s', (address, range) => {
    expect(blockedRange(address)).toBe(range);
  });

  test.each(['93.184.215.14', '8.8.8.8', '2606:4700:4700::1111', '::ffff:93.184.215.14'])(
    '%s is public',
    (address) => {
      expect(blockedRange(address)).toBeNull();
    },
  );
});

describe('normalizeHost', () => {
  test('reads numeric IPv4 spellings as addresses', () => {
    expect(normalizeHost('2130706433')).toBe('127.0.0.1');
    expect(normalizeHost('0x7f.1')).toBe('127.0.0.1');
    expect(normalizeHost('017700000001')).toBe('127.0.0.1');
    expect(normalizeHost('[::FFFF:7F00:1]')).toBe('::ffff:7f00:1');
    expect(normalizeHost('Hooks.Example.COM.')).toBe('hooks.example.com');
  });
});

describe('resolveOutbound', () => {
  test('refuses private, loopback, link-local and mapped addresses without connecting', async () => {
    const spies = spyConnections();
    const resolver = stubResolver({
      'intranet.example': ['10.0.0.7'],
      'metadata.example': ['169.254.169.254'],
      'mixed.example': ['93.184.215.14', '192.168.0.10'],
      'ula.example': ['fd00::1'],
      'mapped.example': ['::ffff:127.0.0.1'],
    });
    const policy = outboundPolicy([], resolver);
    for (const host of [
      'intranet.example',
      'metadata.example',
      'mixed.example',
      'ula.example',
      'mapped.example',
      '127.0.0.1',
      '2130706433',
      '0x7f.0.0.1',
      '[::1]',
      '169.254.169.254',
    ]) {
      await expect(resolveOutbound(host, policy), host).rejects.toMatchObject({ code: 'outbound_blocked' });
    }
    await expect(resolveOutbound('mixed.example', policy)).rejects.toThrow(
      'mixed.example resolves to 192.168.0.10, which is a private address',
    );
    await expect(resolveOutbound('nowhere.example', policy)).rejects.toThrow('cannot be resolved');
    for (const spy of spies) expect(spy).not.toHaveBeenCalled();
  });

  test('lets public addresses through, and allow-listed hosts and ranges', async () => {
    const resolver = stubResolver({
      'hooks.example': ['93.184.215.14', '2606:2800::1'],
      'minio.internal': ['10.20.0.5'],
      'sftp.corp.example': ['192.168.4.4'],
    });
    const policy = outboundPolicy(['127.0.0.1', '10.20.0.0/16', '*.corp.example'], resolver);
    expect((await resolveOutbound('hooks.example', policy)).addresses).toHaveLength(2);
    expect((await resolveOutbound('minio.internal', policy)).addresses[0]!.address).toBe('10.20.0.5');
    expect((await resolveOutbound('sftp.corp.example', policy)).host).toBe('sftp.corp.example');
    expect((await resolveOutbound('127.0.0.1', policy)).addresses).toEqual([
      { address: '127.0.0.1', family: 4 },
    ]);
    // A range covers the IPv4-mapped spelling of its addresses too.
    expect((await resolveOutbound('::ffff:127.0.0.1', policy)).host).toBe('::ffff:7f00:1');
    await expect(resolveOutbound('127.0.0.2', policy)).rejects.toMatchObject({ code: 'outbound_blocked' });
  });

  test('the allow-list comes from FERRY_OUTBOUND_ALLOW and is validated there', () => {
    const config = loadConfig({
      FERRY_OUTBOUND_ALLOW: '127.0.0.1, 10.0.0.0/8 ,minio.internal,*.corp.example',
    });
    expect(config.outboundAllow).toEqual(['127.0.0.1', '10.0.0.0/8', 'minio.internal', '*.corp.example']);
    expect(() => loadConfig({ FERRY_OUTBOUND_ALLOW: '10.0.0.0/99' })).toThrow(
      'FERRY_OUTBOUND_ALLOW: "10.0.0.0/99" is not a valid CIDR range',
    );
    expect(() => loadConfig({ FERRY_OUTBOUND_ALLOW: 'not a host' })).toThrow('FERRY_OUTBOUND_ALLOW');
  });
});

describe('connecting through the guard (loopback only)', () => {
  let server: Server;
  let port: number;
  const seen: string[] = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.headers.host}`);
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  function get(url: string, options: Parameters<typeof request>[1]): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request(url, options, (res) => {
        let body = '';
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
  }

  test('a pinned host connects to the checked address even when DNS changes afterwards (rebinding)', async () => {
    // First answer loopback (allowed for the test), later answers a private address.
    const resolver = stubResolver({ 'rebind.example': [['127.0.0.1'], ['10.0.0.1'], ['10.0.0.1']] });
    const policy = outboundPolicy(['127.0.0.1'], resolver);
    const pinned = await resolveOutbound('rebind.example', policy);
    const body = await get(`http://rebind.example:${port}/x`, { lookup: pinnedLookup(pinned), agent: false });
    expect(body).toBe('ok');
    expect(seen.at(-1)).toBe(`GET rebind.example:${port}`);
    expect(resolver.calls).toEqual(['rebind.example']);
  });

  test('guarded agents refuse private targets before a socket exists', async () => {
    const resolver = stubResolver({ 'internal.example': ['10.0.0.1'], 'local.example': ['127.0.0.1'] });
    const { httpAgent } = guardedAgents(outboundPolicy([], resolver));
    const spies = spyConnections();
    await expect(get(`http://internal.example:${port}/`, { agent: httpAgent })).rejects.toMatchObject({
      code: 'outbound_blocked',
    });
    await expect(get(`http://127.0.0.1:${port}/`, { agent: httpAgent })).rejects.toMatchObject({
      code: 'outbound_blocked',
    });
    await expect(get(`http://2130706433:${port}/`, { agent: httpAgent })).rejects.toMatchObject({
      code: 'outbound_blocked',
    });
    for (const spy of spies) expect(spy).not.toHaveBeenCalled();
    httpAgent.destroy();
  });

  test('guarded agents connect allowed hosts to the resolved address', async () => {
    const resolver = stubResolver({ 'local.example': ['127.0.0.1'] });
    const { httpAgent } = guardedAgents(outboundPolicy(['127.0.0.0/8'], resolver));
    expect(await get(`http://local.example:${port}/y`, { agent: httpAgent })).toBe('ok');
    expect(await get(`http://127.0.0.1:${port}/y`, { agent: httpAgent })).toBe('ok');
    expect(resolver.calls).toEqual(['local.example']);
    httpAgent.destroy();
  });
});
