#!/usr/bin/env node
// Entry point of the `scw-kloset` command. The sources are TypeScript, run through tsx's loader so
// that a checkout works without a build step; deployed functions and the job are bundled by esbuild.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
