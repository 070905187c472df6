#!/usr/bin/env node
// Entry point of the `scw-kloset` command. The sources are TypeScript, run through tsx's loader so
// that a checkout works without a build step; deployed functions and the job are bundled by esbuild.
import { register } from 'tsx/esm/api';

// The AWS SDK warns that its 2027 releases will need Node 22; production runs on node22 already.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
register();
await import('../cli/main.ts');
