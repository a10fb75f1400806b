import type { Command } from 'commander';

export function registerConsent(_program: Command): void {}
