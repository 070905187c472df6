import type { Command } from 'commander';

export function registerStoreCommands(_program: Command): void {}
