import type { Command } from 'commander';

export function registerProcessors(_program: Command): void {}
