import packageJson from '../../package.json' with { type: 'json' };

/** The User-Agent of webhook requests, e.g. `Ferry-Webhooks/0.1.0`. */
export const FERRY_VERSION_HEADER = `Ferry-Webhooks/${packageJson.version}`;
