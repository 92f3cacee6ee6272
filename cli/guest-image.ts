#!/usr/bin/env node
/** `npm run guest-image [-- --force]`: builds the test guest (see adapters/guest-image.ts). */
import { buildGuestImage, guestImageDir } from '../adapters/guest-image.js';
import { printError } from './output.js';

try {
  const image = buildGuestImage(guestImageDir(), (line) => process.stdout.write(`${line}\n`), process.argv.includes('--force'));
  process.stdout.write(`kernel ${image.kernel}\ninitrd ${image.initrd}\ncmdline ${image.cmdline}\n`);
} catch (error) {
  process.exitCode = printError(error, false);
}
