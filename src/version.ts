import packageJson from '../package.json' with { type: 'json' };

/** Ferry's version, from package.json. */
export const FERRY_VERSION: string = packageJson.version;
