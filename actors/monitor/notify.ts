/**
 * Alarm notifications: every alarm this primary raises or clears is POSTed as JSON to each target
 * (`object/alarm-target/<name>`) whose `minSeverity` it reaches, with retries and backoff. The
 * delivery id (`X-ACP-Delivery`) is the cluster, alarm, change and term, the same on every retry: a
 * change is sent once per term, and a new primary that adopts open alarms sends nothing for them.
 * The POST itself is the adapter's (adapters/webhook.ts); retries come back as messages to self.
 */
import { postWebhook } from '../../adapters/webhook.js';
import type { ActorContext } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { RecordView } from '../cdb/index.js';
import { alarmTargetObjectSchema, type AlarmTargetObject } from '../model.js';
import type { AlarmEffect, Severity } from './alarms.js';

export const TARGET_PREFIX = 'object/alarm-target/';
const RANK: Readonly<Record<Severity, number>> = { info: 0, warning: 1, major: 2, critical: 3 };
const ATTEMPTS = 5;
const FIRST_RETRY_MS = 500;
const TIMEOUT_MS = 5000;

interface Pending {
  target: string;
  deliveryId: string;
  body: Record<string, unknown>;
  attempt: number;
}

export class Notifier {
  private readonly targets = new Map<string, AlarmTargetObject>();
  private readonly pending = new Map<string, Pending>();
  /** Stored targets the schema refuses, with why: `acp alarm target test` says so. */
  private readonly invalid = new Map<string, string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  sent = 0;
  failed = 0;

  constructor(private readonly ctx: ActorContext) {}

  /** The targets' feed: records of `object/alarm-target/`. */
  apply(records: readonly RecordView[]): void {
    for (const record of records) {
      if (!record.key.startsWith(TARGET_PREFIX)) continue;
      const name = record.key.slice(TARGET_PREFIX.length);
      const parsed = alarmTargetObjectSchema.safeParse(record.value);
      this.invalid.delete(name);
      if (record.deleted || !parsed.success) this.targets.delete(name);
      else this.targets.set(name, parsed.data);
      if (!record.deleted && !parsed.success) {
        // Written before the schema refused it (a URL with user info, a bad bearer): said once, not at every alarm.
        const issue = parsed.error.issues[0];
        const why = `${issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'value'}: ${issue?.message ?? 'invalid'}`;
        this.invalid.set(name, why);
        this.ctx.log.warn({ target: name }, `alarm target '${name}' is not used, it is invalid: ${why}; write it again with acp alarm target add ${name}`);
      }
    }
  }

  notify(effect: AlarmEffect): void {
    const body = { type: 'alarm', op: effect.op, id: effect.id, rule: effect.rule, subject: effect.subject, severity: effect.severity, term: effect.term, by: effect.by, detail: effect.detail, at: new Date().toISOString(), cluster: this.ctx.node.cluster };
    for (const target of this.targets.values()) {
      if (RANK[effect.severity] < RANK[target.minSeverity]) continue;
      const deliveryId = `${this.ctx.node.cluster}:${effect.id}:${effect.op}:${effect.term}`;
      this.deliver({ target: target.name, deliveryId, body, attempt: 1 });
    }
  }

  /** `acp alarm target test NAME`: one POST, no retry; the status or the error is the answer. */
  async test(name: string, term: number): Promise<{ type: 'monitor.alarm.tested'; target: string; status: number }> {
    const target = this.targets.get(name);
    const invalid = this.invalid.get(name);
    if (invalid !== undefined) throw new AcpError('ACP_ERR_MONITOR_WEBHOOK', `alarm target '${name}' is not used, it is invalid: ${invalid}; write it again with acp alarm target add ${name}`);
    if (!target) throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no alarm target '${name}'; add it with acp alarm target add ${name} --webhook URL`);
    const body = { type: 'alarm', op: 'test', id: 'test', rule: 'test', subject: name, severity: 'info', term, by: this.ctx.node.node, detail: 'a test notification (acp alarm target test)', at: new Date().toISOString(), cluster: this.ctx.node.cluster };
    const status = await postWebhook({ url: target.webhook, body, deliveryId: `${this.ctx.node.cluster}:test:${Date.now()}`, timeoutMs: TIMEOUT_MS, ...this.secrets(target) }).catch((error: unknown) => {
      throw new AcpError('ACP_ERR_MONITOR_WEBHOOK', `POST to alarm target '${name}' failed: ${errorMessage(error)}; check the URL and that the receiver is up`);
    });
    if (status < 200 || status >= 300) throw new AcpError('ACP_ERR_MONITOR_WEBHOOK', `alarm target '${name}' answered HTTP ${status}; check the receiver's log`);
    return { type: 'monitor.alarm.tested', target: name, status };
  }

  /** A retry came due (a message to self): try again if it is still pending. */
  retry(deliveryKey: string): void {
    const pending = this.pending.get(deliveryKey);
    if (pending) this.deliver(pending);
  }

  stop(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private secrets(target: AlarmTargetObject): { bearer?: string; hmacSecret?: string } {
    return { ...(target.bearer ? { bearer: target.bearer } : {}), ...(target.hmacSecret ? { hmacSecret: target.hmacSecret } : {}) };
  }

  private deliver(pending: Pending): void {
    const key = `${pending.target}|${pending.deliveryId}`;
    this.pending.set(key, pending);
    const target = this.targets.get(pending.target);
    if (!target) {
      this.pending.delete(key);
      return;
    }
    const outcome = (ok: boolean, why: string) => {
      if (ok) {
        this.sent += 1;
        this.pending.delete(key);
        return;
      }
      if (pending.attempt >= ATTEMPTS) {
        this.failed += 1;
        this.pending.delete(key);
        this.ctx.log.error({ target: pending.target, delivery: pending.deliveryId, attempts: pending.attempt }, `alarm notification dropped: ${why}`);
        return;
      }
      const delay = FIRST_RETRY_MS * 2 ** (pending.attempt - 1);
      this.pending.set(key, { ...pending, attempt: pending.attempt + 1 });
      this.ctx.log.warn({ target: pending.target, delivery: pending.deliveryId, attempt: pending.attempt, retryInMs: delay }, `alarm notification failed: ${why}`);
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.ctx.self.tell({ type: 'monitor.webhook.retry', key });
      }, delay);
      this.timers.add(timer);
    };
    postWebhook({ url: target.webhook, body: pending.body, deliveryId: pending.deliveryId, timeoutMs: TIMEOUT_MS, ...this.secrets(target) }).then(
      (status) => outcome(status >= 200 && status < 300, `HTTP ${status}`),
      (error: unknown) => outcome(false, errorMessage(error)),
    );
  }
}
