import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AcpError } from '../runtime/errors.js';

export interface Vote {
  term: number;
  votedFor: string | null;
}

/**
 * The monitor's term and vote, in `<home>/data/monitor-vote.json`. Written durably (fsync, then
 * an atomic rename) before the vote is sent, so a node that restarts never votes twice in a term.
 * Synchronous on purpose: it happens only when the term or the vote changes, and the next message
 * must not go out before it is on disk.
 */
export class VoteStore {
  readonly file: string;

  constructor(dataDir: string) {
    this.file = join(dataDir, 'monitor-vote.json');
  }

  read(): Vote {
    if (!existsSync(this.file)) return { term: 0, votedFor: null };
    const text = readFileSync(this.file, 'utf8');
    try {
      const value = JSON.parse(text) as Partial<Vote>;
      if (typeof value.term === 'number' && Number.isSafeInteger(value.term) && value.term >= 0 && (value.votedFor === null || typeof value.votedFor === 'string')) {
        return { term: value.term, votedFor: value.votedFor };
      }
    } catch {
      // Reported below.
    }
    throw new AcpError('ACP_ERR_CONFIG_INVALID', `${this.file} does not hold a term and vote (${JSON.stringify(text.slice(0, 60))}); restore it, or remove it only when this node's monitor has been stopped for longer than a lease`);
  }

  write(vote: Vote): void {
    mkdirSync(dirname(this.file), { recursive: true });
    const temp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify(vote)}\n`, { mode: 0o600 });
    const fd = openSync(temp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.file);
  }
}
