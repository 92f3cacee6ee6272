/**
 * The Hypervisor service with two things a race test needs in place of the real ones: simulated
 * guests whose VMM holds a chosen message until the test opens its gate (a VMM that is slow to
 * answer, as a busy QEMU is), and a simulated clock for its restart policy and migration deadlines.
 * A daemon loads it by module URL (`gatedBootOrder`) in this same process, so the test and the
 * daemon share `gates` and `clock`. Tests using it run serially.
 */
import type { ExecutionContext } from 'ava';
import { allRunning, makeHome } from './node.js';
import { Daemon } from '../../node/daemon.js';
import type { Actor, ActorContext, ServiceDefinition } from '../../runtime/actor.js';
import type { Message } from '../../runtime/messages.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { SimClock } from '../../runtime/sim.js';
import { BOOT_ORDER } from '../../node/boot-order.js';
import type { ServiceEntry } from '../../supervisors/service-tree.js';
import { createHypervisor, service as hypervisor } from '../../actors/hypervisor/index.js';
import { createVmm } from '../../actors/vmm/index.js';

interface Gate {
  reached: Promise<void>;
  arrive(): void;
  open(): void;
  opened: Promise<void>;
}

/** Held VMM messages, by type: the next one of a type that is held waits at its gate. */
export class Gates {
  private readonly gates = new Map<string, Gate>();

  /** Holds the next `type` message any VMM gets; `reached` resolves once one waits, `open` lets it through. */
  hold(type: string): { reached: Promise<void>; open: () => void } {
    let arrive: () => void = () => undefined;
    let open: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.gates.set(type, { reached, arrive, open, opened });
    return { reached, open };
  }

  /** The gate for this message, taken (each gate holds one message). */
  take(type: string): Gate | undefined {
    const gate = this.gates.get(type);
    this.gates.delete(type);
    return gate;
  }

  /** Opens every gate still set (a test that failed half-way must not leave a VMM held). */
  clear(): void {
    for (const gate of this.gates.values()) gate.open();
    this.gates.clear();
  }
}

export const gates = new Gates();
export let clock = new SimClock();

/** A fresh clock for the next test's daemon (the hypervisor takes it when it starts). */
export function resetClock(): SimClock {
  clock = new SimClock();
  return clock;
}

function gated(actor: Actor): Actor {
  return {
    ...actor,
    async receive(message: Message, sender) {
      const gate = gates.take(message.type);
      if (gate) {
        gate.arrive();
        await gate.opened;
      }
      return actor.receive(message, sender);
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  ...hypervisor,
  create(ctx: ActorContext, deps: ServiceDeps | undefined) {
    if (!deps) throw new Error('the hypervisor runs inline only');
    return createHypervisor(ctx, deps, { clock, simVmm: (vmmCtx, home) => gated(createVmm(vmmCtx, { home })) });
  },
};

/** The node's boot order with this hypervisor in place of the real one. */
export function gatedBootOrder(): ServiceEntry[] {
  const module = new URL(import.meta.url).href;
  return BOOT_ORDER.map((entry) => (entry.name === 'hypervisor' ? { name: 'hypervisor', module } : entry));
}

/** A daemon whose hypervisor runs behind the gates on a fresh sim clock, every service running; stopped, gates opened, after the test. */
export async function startGatedNode(t: ExecutionContext): Promise<{ daemon: Daemon; home: string }> {
  resetClock();
  const home = makeHome(t);
  const daemon = await Daemon.start({ home, logLevel: 'silent', services: gatedBootOrder() });
  t.teardown(async () => {
    gates.clear();
    await daemon.stop('test over');
  });
  await allRunning(daemon);
  return { daemon, home };
}
