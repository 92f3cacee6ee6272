import { counterRate } from '../../runtime/rate.js';
import type { LinkCounters } from '../../adapters/iproute2.js';

/** An interface's counters and per-second rates since the previous sample (null on the first). */
export interface LinkStats extends LinkCounters {
  rxBytesPerSec: number | null;
  txBytesPerSec: number | null;
  rxPacketsPerSec: number | null;
  txPacketsPerSec: number | null;
}

export interface Sample {
  readonly counters: LinkCounters;
  readonly at: number;
}

/** Counters with rates from the previous sample of the same interface. */
export function withRates(counters: LinkCounters, previous: Sample | undefined, at: number): LinkStats {
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const of = (field: keyof LinkCounters) => counterRate(counters[field], previous?.counters[field], seconds, 1);
  return { ...counters, rxBytesPerSec: of('rxBytes'), txBytesPerSec: of('txBytes'), rxPacketsPerSec: of('rxPackets'), txPacketsPerSec: of('txPackets') };
}
