/**
 * The fence guard: a small process apart from `acpd` (started by it in a process group of its
 * own, so it outlives the daemon and a signal to the daemon's group), fed by the daemon over its
 * stdin. Each feed is one JSON line: `{"type":"feed","timeoutMs":N,"guests":[{"pid":P,"start":S}]}`,
 * the HA guests of the node with their start times (field 22 of /proc/<pid>/stat, so a recycled pid
 * is never killed). Unless fed again within `timeoutMs`, it fires: it kills every one of them, and
 * every QEMU it started itself, with SIGKILL: a daemon that hangs, stops or dies cannot leave an
 * HA guest running past its lease plus this timeout. `{"type":"disarm"}` stands it down (no HA
 * guest left).
 *
 * `--run DIR` (the node's run dir) opens its spawn channel (fence-guard-spawner.ts): the node's
 * HA QEMU guests are started by the guard, as its children under `setpriv --pdeathsig KILL`, so
 * that they also die the moment the guard itself dies (kill -9 of the daemon and its guard).
 *
 * Its stdin closing (the daemon died or let go of it) closes the spawn channel (a new daemon's
 * guard takes the socket over; this one takes no more guests) and the guard fires when its time is
 * up, at once when it is not armed; then it exits, once its children are reaped. It never exits
 * with a live child otherwise.
 *
 * `--watchdog PATH` (off by default) also keeps a hardware watchdog device (/dev/watchdog) alive
 * while armed (adapters/watchdog.ts), so a host whose guard itself cannot run is reset by the
 * hardware; a disarm, or its firing, closes it with the magic 'V'. Each event is one JSON line on
 * stdout.
 */
import { isAbsolute } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { GuardSpawner } from './fence-guard-spawner.js';
import { startTimeOf } from './proc-stat.js';
import { Watchdog } from './watchdog.js';

const guestSchema = z.strictObject({ pid: z.number().int().min(2).max(4_194_304), start: z.string().regex(/^\d{1,20}$/) });
const lineSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('feed'), timeoutMs: z.number().int().min(100).max(600_000), guests: z.array(guestSchema).max(4096) }),
  z.strictObject({ type: z.literal('disarm') }),
]);
type Guest = z.infer<typeof guestSchema>;

const CHECK_MS = 100;
/** After firing with its daemon gone, how long it waits for its killed children to be reaped before it exits. */
const REAP_MS = 5000;

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...event })}\n`);
}

/** `--watchdog PATH` and `--run DIR`, each at most once, both optional. */
function options(args: readonly string[]): { watchdog?: string; run?: string } {
  const out: { watchdog?: string; run?: string } = {};
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i];
    const value = args[i + 1];
    if ((flag !== '--watchdog' && flag !== '--run') || value === undefined || !isAbsolute(value)) {
      throw new Error(`usage: fence-guard-main [--watchdog PATH] [--run DIR] (absolute paths); got ${JSON.stringify(args)}`);
    }
    out[flag === '--run' ? 'run' : 'watchdog'] = value;
  }
  return out;
}

async function main(): Promise<void> {
  const { watchdog: watchdogPath, run } = options(process.argv.slice(2));
  const watchdog = watchdogPath === undefined ? null : new Watchdog(watchdogPath, say);
  let deadline = Infinity;
  let guests: Guest[] = [];
  let inputOpen = true;
  /** Set once it fired with its daemon gone: it exits when its children are reaped, or at this time. */
  let exitBy: number | null = null;
  const spawner = run === undefined ? null : new GuardSpawner(run, { say, armed: () => deadline !== Infinity && performance.now() < deadline });
  const fire = (why: string): void => {
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
    const children = spawner?.killAll() ?? [];
    say({ event: 'fired', killed: [...new Set([...killed, ...children])], guests: guests.map((guest) => guest.pid), why });
    deadline = Infinity;
    guests = [];
    watchdog?.release('fired: its guests are dead');
  };
  const timer = setInterval(() => {
    const now = performance.now();
    if (now >= deadline) fire('not fed in time');
    else if (deadline !== Infinity) watchdog?.keepAlive();
    if (inputOpen) return;
    if (exitBy === null && deadline === Infinity) {
      // Its daemon is gone and it is not armed: nothing feeds it again; none of its guests stays.
      if ((spawner?.live.length ?? 0) > 0) fire('its daemon is gone and it is not armed');
      exitBy = now + REAP_MS;
    }
    if (exitBy !== null && ((spawner?.live.length ?? 0) === 0 || now >= exitBy)) {
      clearInterval(timer);
      process.exit(0);
    }
  }, CHECK_MS);
  if (spawner !== null) {
    try {
      await spawner.listen();
    } catch (error) {
      // It still guards by its feeds; HA QEMU starts are refused by the driver, which finds no socket.
      say({ event: 'spawn-channel-failed', socket: spawner.socket, error: (error as Error).message });
    }
  }
  // Read once the channel is open: a feed waits in the pipe meanwhile, and a closed input finds it bound.
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
      watchdog?.keepAlive();
      return;
    }
    deadline = Infinity;
    guests = [];
    watchdog?.release('disarmed');
    say({ event: 'disarmed' });
  });
  input.on('close', () => {
    inputOpen = false;
    spawner?.close();
    say({ event: 'input-closed', armed: deadline !== Infinity, children: spawner?.live ?? [] });
  });
  say({ event: 'started', ...(spawner !== null ? { socket: spawner.socket } : {}) });
}

void main();
