import type { Command } from 'commander';

// Placeholder until the local Scaleway lands (issue 3): `scw-kloset local`.
export function registerLocalCommand(_program: Command): void {}
