import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * The guard for outbound connections to tenant-supplied hosts (webhook URLs, S3
 * endpoints, SFTP hosts): a host is resolved once, every address it resolves to is
 * checked, and the connection then goes to one of those checked addresses, so a DNS
 * answer that changes between the check and the connect (rebinding) cannot redirect it.
 *
 * Refused: every address that is not global unicast — private (RFC 1918), loopback,
 * link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10), CGNAT
 * (100.64.0.0/10), multicast, unspecified, broadcast, reserved and documentation
 * ranges, IPv6 unique-local (fc00::/7), and IPv6 forms that embed an IPv4 address
 * (IPv4-mapped addresses are judged by their IPv4 address; NAT64, 6to4 and Teredo are
 * refused). Numeric spellings such as `2130706433` or `0x7f.1` are normalised first.
 * The operator may allow hosts or ranges anyway with FERRY_OUTBOUND_ALLOW.
 */

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** Resolves a host name to all its addresses (the system resolver in production). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = async (hostname) => {
  const found = await dns.promises.lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

type AllowEntry =
  | { readonly kind: 'range'; readonly range: [ipaddr.IPv4 | ipaddr.IPv6, number] }
  | { readonly kind: 'host'; readonly host: string }
  | { readonly kind: 'suffix'; readonly suffix: string };

export interface OutboundPolicy {
  readonly allow: readonly AllowEntry[];
  readonly resolver: Resolver;
}

/** A host whose addresses passed the guard; connect only to these. */
export interface PinnedHost {
  readonly host: string;
  readonly addresses: readonly ResolvedAddress[];
  /** True when the operator allow-listed the host, or every address it resolves to. */
  readonly allowListed: boolean;
}

const HOST_NAME =
  /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/;

/**
 * One FERRY_OUTBOUND_ALLOW entry: an IP address, a CIDR range (`10.0.0.0/8`,
 * `fd00::/8`), a host name (`minio.internal`) or a domain wildcard (`*.corp.example`).
 * Throws an Error naming the entry when it is none of these.
 */
export function parseAllowEntry(entry: string): AllowEntry {
  const text = entry.trim().toLowerCase();
  if (text.includes('/')) {
    try {
      return { kind: 'range', range: ipaddr.parseCIDR(text) };
    } catch {
      throw new Error(`"${entry}" is not a valid CIDR range`);
    }
  }
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (net.isIP(bare)) {
    const ip = ipaddr.parse(bare);
    return { kind: 'range', range: [ip, ip.kind() === 'ipv4' ? 32 : 128] };
  }
  if (text.startsWith('*.') && HOST_NAME.test(text.slice(2)))
    return { kind: 'suffix', suffix: text.slice(1) };
  if (HOST_NAME.test(text)) return { kind: 'host', host: text.replace(/\.$/, '') };
  throw new Error(`"${entry}" is neither an IP address, a CIDR range nor a host name`);
}

/** The guard's policy: the operator's allow-list and the resolver to use. */
export function outboundPolicy(
  allow: readonly string[] = [],
  resolver: Resolver = systemResolver,
): OutboundPolicy {
  return Object.freeze({ allow: Object.freeze(allow.map(parseAllowEntry)), resolver });
}

/**
 * Why an address is refused (its range name, e.g. `private`, `loopback`), or null for
 * a global unicast address. IPv4-mapped IPv6 addresses are judged as IPv4.
 */
export function blockedRange(address: string): string | null {
  let ip: ipaddr.IPv4 | ipaddr.IPv6 = ipaddr.parse(address);
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress())
    ip = (ip as ipaddr.IPv6).toIPv4Address();
  const range = ip.range();
  return range === 'unicast' ? null : range;
}

/**
 * Lower-cases a host, strips IPv6 brackets and a trailing dot, and normalises numeric
 * IPv4 spellings (`2130706433`, `0x7f.1`, `017700000001`) the way URL parsers and
 * resolvers read them, so `127.1` cannot slip past as a "name".
 */
export function normalizeHost(host: string): string {
  let text = host.trim().toLowerCase();
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  if (net.isIP(text) === 6) return ipaddr.parse(text).toString();
  try {
    const parsed = new URL(`http://${text}/`).hostname;
    if (parsed.startsWith('[')) return ipaddr.parse(parsed.slice(1, -1)).toString();
    return parsed.replace(/\.$/, '');
  } catch {
    return text.replace(/\.$/, '');
  }
}

function hostAllowed(host: string, policy: OutboundPolicy): boolean {
  return policy.allow.some(
    (e) => (e.kind === 'host' && e.host === host) || (e.kind === 'suffix' && host.endsWith(e.suffix)),
  );
}

function addressAllowed(address: string, policy: OutboundPolicy): boolean {
  const ip = ipaddr.parse(address);
  const candidates: (ipaddr.IPv4 | ipaddr.IPv6)[] = [ip];
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress())
    candidates.push((ip as ipaddr.IPv6).toIPv4Address());
  return policy.allow.some(
    (e) =>
      e.kind === 'range' &&
      candidates.some((c) => c.kind() === e.range[0].kind() && c.match(e.range as [typeof c, number])),
  );
}

function refused(host: string, address: string, range: string): FerryError {
  const shown = host === address ? address : `${host} resolves to ${address}, which`;
  return new FerryError(
    'outbound_blocked',
    `${shown} is a ${range} address; Ferry only connects to public addresses ` +
      '(an operator can allow a host or range with FERRY_OUTBOUND_ALLOW)',
    { host, address, range },
  );
}

/**
 * Resolves `host` once and checks every address; throws `outbound_blocked` when any
 * address is refused (a name with one private address among public ones is refused
 * whole, since the connection could use any of them). The caller then connects only
 * to the returned addresses, e.g. through `pinnedLookup`.
 */
export async function resolveOutbound(host: string, policy: OutboundPolicy): Promise<PinnedHost> {
  const normalized = normalizeHost(host);
  const family = net.isIP(normalized);
  let addresses: ResolvedAddress[];
  if (family) addresses = [{ address: normalized, family: family === 6 ? 6 : 4 }];
  else {
    try {
      addresses = await policy.resolver(normalized);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new FerryError('outbound_blocked', `${normalized} cannot be resolved (${code ?? 'DNS error'})`, {
        host: normalized,
      });
    }
    if (addresses.length === 0)
      throw new FerryError('outbound_blocked', `${normalized} resolves to no address`, { host: normalized });
  }
  if (!family && hostAllowed(normalized, policy)) return { host: normalized, addresses, allowListed: true };
  let allowListed = true;
  for (const { address } of addresses) {
    const allowed = addressAllowed(address, policy);
    allowListed &&= allowed;
    const range = blockedRange(address);
    if (range && !allowed) throw refused(normalized, address, range);
  }
  return { host: normalized, addresses, allowListed };
}

/**
 * A `lookup` for `net.connect`/`http.request` that answers with the pinned, checked
 * addresses and never asks DNS again. Any other host name is an error.
 */
export function pinnedLookup(pinned: PinnedHost): LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: LookupCallback) => {
    if (normalizeHost(hostname) !== pinned.host) {
      const err = new Error(`lookup of ${hostname} is not pinned`) as NodeJS.ErrnoException;
      err.code = 'ENOTFOUND';
      callback(err, '', 0);
      return;
    }
    const wanted = options.family === 4 || options.family === 6 ? options.family : 0;
    const list = pinned.addresses.filter((a) => wanted === 0 || a.family === wanted);
    if (options.all) (callback as unknown as LookupAllCallback)(null, list);
    else if (list[0]) callback(null, list[0].address, list[0].family);
    else {
      const err = new Error(`${hostname} has no IPv${wanted} address`) as NodeJS.ErrnoException;
      err.code = 'ENOTFOUND';
      callback(err, '', 0);
    }
  }) as LookupFunction;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;
type LookupAllCallback = (err: NodeJS.ErrnoException | null, addresses: ResolvedAddress[]) => void;
type CreateConnection = (
  options: http.ClientRequestArgs & { host?: string; lookup?: LookupFunction },
  callback: (err: Error | null, socket?: net.Socket) => void,
) => net.Socket | undefined;

/**
 * HTTP and HTTPS agents whose every connection goes through the guard: the host is
 * resolved and checked before any socket exists, then the socket connects to the
 * checked address (TLS still verifies the certificate for the host name). For clients
 * that make many requests to one tenant host, such as the S3 SDK.
 */
export function guardedAgents(
  policy: OutboundPolicy,
  options: http.AgentOptions = {},
): { httpAgent: http.Agent; httpsAgent: https.Agent } {
  const httpAgent = new http.Agent(options);
  const httpsAgent = new https.Agent(options);
  for (const agent of [httpAgent, httpsAgent]) {
    const original = (agent as unknown as { createConnection: CreateConnection }).createConnection.bind(
      agent,
    );
    // Node's Agent accepts a socket either returned or passed to the callback later.
    (agent as unknown as { createConnection: CreateConnection }).createConnection = (opts, callback) => {
      resolveOutbound(String(opts.host ?? 'localhost'), policy).then(
        (pinned) => {
          try {
            callback(
              null,
              original({ ...opts, lookup: pinnedLookup(pinned) }, () => {}),
            );
          } catch (err) {
            callback(err as Error);
          }
        },
        (err: Error) => callback(err),
      );
      return undefined;
    };
  }
  return { httpAgent, httpsAgent };
}
