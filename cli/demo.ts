import type { Command } from 'commander';

// Placeholder for `npm start` (the end-to-end demo).
export function registerDemoCommand(_program: Command): void {}
