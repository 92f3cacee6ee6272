/**
 * Hybrid logical clock: versions that follow wall time when clocks behave and stay monotonic
 * when they do not. A version orders by (wall, logical), ties broken by node name, so every node
 * picks the same last writer.
 */
export interface Version {
  readonly wall: number;
  readonly logical: number;
  readonly node: string;
}

export function compareVersions(a: Version, b: Version): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  if (a.node !== b.node) return a.node < b.node ? -1 : 1;
  return 0;
}

/** `1795616242319.0@n1`: the form shown to users and accepted by compare-and-set. */
export function formatVersion(version: Version): string {
  return `${version.wall}.${version.logical}@${version.node}`;
}

export function parseVersion(text: string): Version | undefined {
  const match = /^(\d{1,16})\.(\d{1,9})@([a-z0-9][a-z0-9._-]{0,62})$/.exec(text);
  if (!match) return undefined;
  return { wall: Number(match[1]), logical: Number(match[2]), node: match[3]! };
}

export class HybridClock {
  private wall = 0;
  private logical = 0;

  constructor(
    readonly node: string,
    private readonly now: () => number,
  ) {}

  /** A new version for a local write, later than every version this clock has issued or seen. */
  tick(): Version {
    const physical = this.now();
    if (physical > this.wall) {
      this.wall = physical;
      this.logical = 0;
    } else {
      this.logical += 1;
    }
    return { wall: this.wall, logical: this.logical, node: this.node };
  }

  /** Moves past a version seen from elsewhere (a replicated write, or one read back from disk). */
  observe(version: Version): void {
    if (version.wall > this.wall || (version.wall === this.wall && version.logical > this.logical)) {
      this.wall = version.wall;
      this.logical = version.logical;
    }
  }
}
