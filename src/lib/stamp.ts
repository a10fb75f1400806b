/** A UTC instant in ISO 8601 basic format to the second (`20261122T031500Z`), as file names carry it. */
export function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}
