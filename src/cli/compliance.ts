import type { Command } from 'commander';

export function registerCompliance(_program: Command): void {}
