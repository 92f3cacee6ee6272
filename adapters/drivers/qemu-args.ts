/** QEMU's command line for a system: the binary, its options, and how a path is quoted in one. */
import { join } from 'node:path';
import { generatedMac, tapName } from '../interface-names.js';
import { diskArgs } from './disks.js';
import type { GuestPaths, GuestSpec } from './driver.js';
import { vncSocket } from './vnc.js';

export const QEMU_BINARY = process.env.ACP_QEMU ?? 'qemu-system-x86_64';

/** QEMU option values separate with commas: a comma inside a path is written twice. */
export function optionValue(text: string): string {
  return text.replace(/,/g, ',,');
}

/** Where a guest's serial port listens (QEMU is the server; one client at a time). */
export function serialSocket(runDir: string): string {
  return join(runDir, 'serial.sock');
}

/**
 * The QEMU command line for a system: the serial port on a Unix socket (input from the console's
 * users) with everything the guest prints logged to the console file whether or not anyone is
 * connected, QMP on a Unix socket; no display, or with `display: 'vnc'` a VGA card and a VNC
 * server on a Unix socket in the run dir (no TCP port: only this node's web API reaches it).
 */
export function qemuArgs(id: string, spec: GuestSpec, paths: GuestPaths, accelerator: 'kvm' | 'tcg', incoming?: string): string[] {
  const args = [
    '-name',
    `acp-${id}`,
    '-machine',
    `pc,accel=${accelerator}`,
    '-m',
    String(spec.memoryMiB),
    '-smp',
    String(spec.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-chardev',
    `socket,id=console,path=${optionValue(serialSocket(paths.runDir))},server=on,wait=off,logfile=${optionValue(paths.consoleLog)}`,
    '-serial',
    'chardev:console',
    '-qmp',
    `unix:${optionValue(join(paths.runDir, 'qmp.sock'))},server=on,wait=off`,
  ];
  if (spec.display === 'vnc') args.push('-device', 'VGA', '-vnc', `unix:${optionValue(vncSocket(paths.runDir))}`);
  if (spec.boot && 'kernel' in spec.boot) {
    args.push('-kernel', spec.boot.kernel);
    if (spec.boot.initrd) args.push('-initrd', spec.boot.initrd);
    args.push('-append', spec.boot.cmdline ?? 'console=ttyS0 quiet');
  } else if (spec.boot && 'disk' in spec.boot && spec.boot.disk.startsWith('/')) {
    // An image file named by path (before pools); `POOL/VOLUME` is one of its disks, booted first.
    args.push('-drive', `file=${optionValue(spec.boot.disk)},if=virtio,format=qcow2`);
  }
  args.push(...diskArgs(paths.disks ?? [], paths.cdrom));
  args.push(...nicArgs(id, spec));
  if (incoming) args.push('-incoming', incoming);
  return args;
}

/**
 * Each NIC: the tap the Network service made for it (named from the system's id and the NIC's
 * index, checked there), opened by QEMU with no scripts, and the guest's device with its MAC.
 */
export function nicArgs(id: string, spec: GuestSpec): string[] {
  return spec.nics.flatMap((nic, index) => [
    '-netdev',
    `tap,id=net${index},ifname=${tapName(id, index)},script=no,downscript=no`,
    '-device',
    `${nic.model === 'e1000' ? 'e1000' : 'virtio-net-pci'},netdev=net${index},mac=${nic.mac ?? generatedMac(id, index)}`,
  ]);
}

