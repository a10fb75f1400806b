import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyPluginAsyncTypebox, TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import type { Config } from '../config/config.ts';
import type { LinkSigner } from '../crypto/link-signer.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import type { DeliveryClients } from '../deliver/types.ts';
import type { JobQueue } from '../jobs/queue.ts';
import type { Logger } from '../lib/logger.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { StreamHub } from '../live/hub.ts';

/** The Fastify application with Ferry's type provider; route plugins extend it. */
export type FerryApp = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

/** What the HTTP layer is built from; the composition root supplies the adapters. */
export interface AppDeps {
  readonly database: Database;
  readonly config: Config;
  /** Defaults to a logger at `config.logLevel`. */
  readonly logger?: Logger;
  /** Extra route plugins registered after the built-in ones (tests, embedders). */
  readonly routes?: readonly RoutePlugin[];
  /** The clock for rate limits, quotas and expiry; the system clock by default (tests move it). */
  readonly now?: () => Date;
  /** The job queue exports are sent to; without it export requests answer 503. */
  readonly queue?: JobQueue;
  /** Where export files are stored; without it downloads answer 503. */
  readonly store?: ObjectStore;
  /** Signs and checks download links; without it signed downloads answer 503. */
  readonly signer?: LinkSigner;
  /** Seals and opens stored secrets; without it the app opens the keyring of `database` itself. */
  readonly secrets?: SecretBox;
  /** The process's live-stream listener; without it the stream route makes its own. */
  readonly stream?: StreamHub;
  /** The delivery targets' clients and the mailer, for a schedule's "test connection". */
  readonly deliveryClients?: DeliveryClients;
  readonly mailer?: Mailer;
}

/** What a route plugin receives as its options. */
export interface RouteDeps {
  readonly database: Database;
  readonly config: Config;
  readonly version: string;
  /** The clock, when the app was built with one. */
  readonly now?: () => Date;
  readonly queue?: JobQueue;
  readonly store?: ObjectStore;
  readonly signer?: LinkSigner;
  /** Seals and opens stored secrets (webhook, delivery and TOTP secrets, receipt keys). */
  readonly secrets: SecretBox;
  readonly stream?: StreamHub;
  readonly deliveryClients?: DeliveryClients;
  readonly mailer?: Mailer;
}

/**
 * One area of the API (health, exports, ...): a Fastify plugin in
 * src/http/routes/, listed in ROUTES in src/http/app.ts.
 */
export type RoutePlugin = FastifyPluginAsyncTypebox<RouteDeps>;
