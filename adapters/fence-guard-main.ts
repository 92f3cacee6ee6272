/**
 * The fence guard: a small process apart from `acpd` (started by it in a process group of its
 * own, so it outlives the daemon and a signal to the daemon's group), fed by the daemon over its
 * stdin. Each feed is one JSON line: `{"type":"feed","timeoutMs":N,"guests":[{"pid":P,"start":S}]}`,
 * the HA guests of the node with their start times (field 22 of /proc/<pid>/stat, so a recycled pid
 * is never killed). Unless fed again within `timeoutMs`, it kills every one of them with SIGKILL:
 * a daemon that hangs, stops or dies cannot leave an HA guest running past its lease plus this
 * timeout. `{"type":"disarm"}` stands it down (no HA guest left). Its stdin closing (the daemon
 * died) changes nothing: it fires when its time is up, then exits.
 *
 * `--watchdog PATH` (off by default) also keeps a hardware watchdog device (/dev/watchdog) alive
 * while fed, so a host whose guard itself cannot run is reset by the hardware; a disarm closes it
 * with the magic 'V'. Each event is one JSON line on stdout.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { startTimeOf } from './proc-stat.js';

const guestSchema = z.strictObject({ pid: z.number().int().min(2).max(4_194_304), start: z.string().regex(/^\d{1,20}$/) });
const lineSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('feed'), timeoutMs: z.number().int().min(100).max(600_000), guests: z.array(guestSchema).max(4096) }),
  z.strictObject({ type: z.literal('disarm') }),
]);
type Guest = z.infer<typeof guestSchema>;

const CHECK_MS = 100;

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...event })}\n`);
}

function main(): void {
  const args = process.argv.slice(2);
  const watchdogPath = args[0] === '--watchdog' ? args[1] : undefined;
  let watchdog: number | null = null;
  if (watchdogPath !== undefined) {
    watchdog = openSync(watchdogPath, 'w');
    say({ event: 'watchdog', path: watchdogPath });
  }
  let deadline = Infinity;
  let guests: Guest[] = [];
  let inputOpen = true;
  const fire = (): void => {
    const killed: number[] = [];
    for (const guest of guests) {
      if (startTimeOf(guest.pid) !== guest.start) continue;
      try {
        process.kill(guest.pid, 'SIGKILL');
        killed.push(guest.pid);
      } catch {
        // Gone meanwhile.
      }
    }
    say({ event: 'fired', killed, guests: guests.map((guest) => guest.pid) });
    deadline = Infinity;
    guests = [];
  };
  const timer = setInterval(() => {
    const now = performance.now();
    if (now >= deadline) fire();
    else if (watchdog !== null && deadline !== Infinity) writeSync(watchdog, '\0');
    if (!inputOpen && deadline === Infinity) {
      clearInterval(timer);
      process.exit(0);
    }
  }, CHECK_MS);
  const input = createInterface({ input: process.stdin });
  input.on('line', (text) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      say({ event: 'bad-line', error: 'not JSON' });
      return;
    }
    const line = lineSchema.safeParse(parsed);
    if (!line.success) {
      say({ event: 'bad-line', error: line.error.issues[0]?.message ?? 'invalid' });
      return;
    }
    if (line.data.type === 'feed') {
      deadline = performance.now() + line.data.timeoutMs;
      guests = line.data.guests;
      return;
    }
    deadline = Infinity;
    guests = [];
    if (watchdog !== null) {
      writeSync(watchdog, 'V');
      closeSync(watchdog);
      watchdog = null;
    }
    say({ event: 'disarmed' });
  });
  input.on('close', () => {
    inputOpen = false;
    say({ event: 'input-closed', armed: deadline !== Infinity });
  });
  say({ event: 'started' });
}

main();
