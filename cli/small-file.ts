/** Small files named on the command line, read with a bound. */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { AcpError } from '../runtime/errors.js';

/**
 * The text of a small file named on the command line (a spec, a scenario), read up to `maxBytes`:
 * a device or a FIFO (`/dev/zero`, a pipe nobody writes) must not hang or fill memory.
 */
export function readSmallFile(path: string, what: string, maxBytes = 1024 * 1024): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    if (!fstatSync(fd).isFile()) throw new AcpError('ACP_ERR_CLI_USAGE', `${what} ${path}: not a regular file; give a file holding the JSON`);
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (let read = -1; read !== 0 && length <= maxBytes; length += read) read = readSync(fd, buffer, length, buffer.length - length, null);
    if (length > maxBytes) throw new AcpError('ACP_ERR_CLI_USAGE', `${what} ${path}: larger than ${maxBytes} bytes; that is no spec`);
    return buffer.subarray(0, length).toString('utf8');
  } catch (error) {
    if (error instanceof AcpError) throw error;
    throw new AcpError('ACP_ERR_CLI_USAGE', `cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
