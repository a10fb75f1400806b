import type { Command } from 'commander';

export function registerRetention(_program: Command): void {}
