// Fault injection of the local Scaleway: error answers for a share of calls, failing or slow exports,
// denied actions. Controlled from tests (the Faults object) and over HTTP (`/_emulator/faults`).
import { errors, type ApiError } from './http.js';

export interface ErrorRule {
  /** 429 (too_many_requests) or a 5xx. */
  status: number;
  /** Share of the matching calls answered with the error, 0..1 (default 1). */
  share?: number;
  /** HTTP method to match (default: any). */
  method?: string;
  /** Regular expression (source) matched against the request path (default: any API path). */
  path?: string;
  /** Only fail this many calls, then the rule disappears (default: unlimited). */
  count?: number;
}

export interface FaultState {
  errors: (ErrorRule & { id: number })[];
  failNextExports: number;
  slowExportsMs: number;
  deniedActions: string[];
}

export class Faults {
  private rules: (ErrorRule & { id: number; regex?: RegExp })[] = [];
  private nextId = 1;
  private failExports = 0;
  private slowMs = 0;
  private denied = new Set<string>();
  /** Random source for shares; tests may replace it to be deterministic. */
  random: () => number = Math.random;

  /** Answers a share of the matching calls with `status`. Returns the rule id (for removeErrors). */
  addErrors(rule: ErrorRule): number {
    if (!(rule.status === 429 || (rule.status >= 500 && rule.status <= 599))) {
      throw new Error(`fault status must be 429 or 5xx, got ${rule.status}`);
    }
    const share = rule.share ?? 1;
    if (!(share >= 0 && share <= 1)) throw new Error(`fault share must be within 0..1, got ${share}`);
    const id = this.nextId++;
    this.rules.push({ ...rule, share, id, regex: rule.path ? new RegExp(rule.path) : undefined });
    return id;
  }

  removeErrors(id?: number): void {
    this.rules = id === undefined ? [] : this.rules.filter((r) => r.id !== id);
  }

  /** The next `n` exports end with the snapshot in `error` (no object written). */
  failNextExports(n: number): void {
    this.failExports = Math.max(0, Math.floor(n));
  }

  /** Every export takes at least `ms` more milliseconds. */
  slowExports(ms: number): void {
    this.slowMs = Math.max(0, ms);
  }

  /** Calls of `action` (the SDK method name, e.g. `exportSnapshotToObjectStorage`) answer permissions_denied. */
  denyAction(action: string): void {
    this.denied.add(action);
  }

  allowAction(action: string): void {
    this.denied.delete(action);
  }

  clear(): void {
    this.rules = [];
    this.failExports = 0;
    this.slowMs = 0;
    this.denied.clear();
  }

  state(): FaultState {
    return {
      errors: this.rules.map(({ regex: _r, ...rule }) => rule),
      failNextExports: this.failExports,
      slowExportsMs: this.slowMs,
      deniedActions: [...this.denied],
    };
  }

  /** Applies a JSON description (the admin endpoint's body, snake_case). */
  apply(body: Record<string, unknown>): void {
    if (body.clear === true) this.clear();
    const rules = body.errors;
    if (Array.isArray(rules)) {
      for (const r of rules as Record<string, unknown>[]) {
        this.addErrors({
          status: Number(r.status),
          share: r.share === undefined ? undefined : Number(r.share),
          method: typeof r.method === 'string' ? r.method : undefined,
          path: typeof r.path === 'string' ? r.path : undefined,
          count: r.count === undefined ? undefined : Number(r.count),
        });
      }
    }
    if (body.fail_next_exports !== undefined) this.failNextExports(Number(body.fail_next_exports));
    if (body.slow_exports_ms !== undefined) this.slowExports(Number(body.slow_exports_ms));
    if (Array.isArray(body.deny_actions)) for (const a of body.deny_actions) this.denyAction(String(a));
    if (Array.isArray(body.allow_actions)) for (const a of body.allow_actions) this.allowAction(String(a));
  }

  /** The error to answer for this call, if a rule fires. */
  errorFor(method: string, path: string, action: string, resource: string): ApiError | null {
    if (this.denied.has(action)) return errors.permissionsDenied(action, resource);
    for (const rule of this.rules) {
      if (rule.method && rule.method.toUpperCase() !== method) continue;
      if (rule.regex && !rule.regex.test(path)) continue;
      if (this.random() >= (rule.share ?? 1)) continue;
      if (rule.count !== undefined) {
        rule.count -= 1;
        if (rule.count <= 0) this.rules = this.rules.filter((r) => r !== rule);
      }
      return rule.status === 429 ? errors.tooManyRequests() : errors.server(rule.status);
    }
    return null;
  }

  /** Consumes one "failing export" if any are left. */
  takeExportFailure(): boolean {
    if (this.failExports <= 0) return false;
    this.failExports -= 1;
    return true;
  }

  get exportDelayMs(): number {
    return this.slowMs;
  }
}
