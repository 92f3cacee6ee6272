import { execFileSync } from 'node:child_process';
import test from 'ava';
import { QEMU_BINARY } from '../../adapters/drivers/qemu-args.js';
import { guestImage } from '../../adapters/guest-image.js';

/** CI sets CI=true: there every test must run, so one that would skip fails instead, saying why. */
export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

/**
 * `test` when nothing is missing; otherwise `test.skip` (the reason belongs in the title), or, in
 * CI, a test that fails naming what is missing: CI installs everything the suite needs.
 */
export function runsWhen(missing: string | undefined | false): typeof test {
  if (!missing) return test;
  if (!IN_CI) {
    // A skipped test's title says what is missing, whatever its author wrote.
    const named = (title: string) => (title.includes('skipped') ? title : `${title} (skipped: ${missing})`);
    const skipping = (title: string, ...rest: unknown[]) => (test.skip as (title: string, ...rest: unknown[]) => void)(named(title), ...rest);
    return Object.assign(skipping, { serial: skipping }) as unknown as typeof test;
  }
  const failing = (title: string) => test(title, (t) => t.fail(`CI must run this test, but ${missing}`));
  return Object.assign(failing, { serial: failing }) as unknown as typeof test;
}

/**
 * For what no install can bring: a kernel feature the machine's kernel lacks (this workplace's
 * kernels load no modules, so 802.1Q links may be impossible). Skips, saying so, in CI too.
 */
export function unlessKernelLacks(missing: string | undefined): typeof test {
  return missing ? (test.skip as unknown as typeof test) : test;
}

/** Why QEMU cannot run here (its binary does not answer --version), or undefined when it can. */
export function qemuMissing(): string | undefined {
  try {
    execFileSync(QEMU_BINARY, ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return `${QEMU_BINARY} is not installed (apt-get install qemu-system-x86)`;
  }
}

/** Why qemu-img cannot run here, or undefined when it can. */
export function qemuImgMissing(): string | undefined {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'qemu-img is not installed (apt-get install qemu-utils)';
  }
}

/** Why a QEMU test guest cannot run here (no QEMU, or the test guest not built), or undefined when it can. */
export function guestMissing(): string | undefined {
  return qemuMissing() ?? (guestImage() ? undefined : 'the test guest is not built (npm run guest-image)');
}
