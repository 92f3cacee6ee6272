import type { MemberState, SyncTimings } from './sync-protocol.js';

/** Classifies nodes from when each was last heard from. */
export class Membership {
  private readonly heard = new Map<string, { at: number; incarnation: number }>();

  constructor(
    private readonly self: string,
    private readonly timings: Pick<SyncTimings, 'suspectAfterMs' | 'downAfterMs'>,
  ) {}

  hear(node: string, incarnation: number, now: number): void {
    if (node === this.self) return;
    const known = this.heard.get(node);
    // An older incarnation's heartbeat arriving late says nothing about the node now.
    if (known && incarnation < known.incarnation) return;
    this.heard.set(node, { at: now, incarnation });
  }

  state(node: string, now: number): MemberState {
    if (node === this.self) return 'up';
    const known = this.heard.get(node);
    if (!known) return 'down';
    const silent = now - known.at;
    if (silent >= this.timings.downAfterMs) return 'down';
    return silent >= this.timings.suspectAfterMs ? 'suspect' : 'up';
  }

  lastHeard(node: string): { at: number; incarnation: number } | undefined {
    return this.heard.get(node);
  }
}
