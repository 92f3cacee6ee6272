/**
 * A guest's graphical display in noVNC: the RFB stream over `/ws/display/<id>` (the same origin,
 * the session cookie; webapi/display.ts relays it to the guest's VNC socket). Keys and mouse reach
 * the guest, so the display needs the operator role; the server decides anyway.
 */
import RFB from '@novnc/novnc';
import { h } from './dom.js';

export class GuestDisplay {
  readonly element: HTMLElement;
  private readonly rfb: RFB;
  private readonly status: HTMLElement;

  constructor(id: string) {
    this.status = h('span.display-status', {}, 'connecting…');
    const screen = h('div.display-screen');
    const ctrlAltDel = h('button', { type: 'button', onclick: () => this.rfb.sendCtrlAltDel() }, 'Ctrl+Alt+Del');
    this.element = h('div.display', { dataset: { system: id, connected: 'false' } }, screen, h('p.hint', {}, 'Click the display to type into the guest. ', ctrlAltDel, ' ', this.status));
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    this.rfb = new RFB(screen, `${scheme}://${location.host}/ws/display/${encodeURIComponent(id)}`, { shared: true });
    this.rfb.scaleViewport = true;
    this.rfb.background = '#0b0f17';
    this.rfb.addEventListener('connect', () => {
      this.element.dataset.connected = 'true';
      this.status.textContent = 'connected';
    });
    this.rfb.addEventListener('disconnect', (event) => {
      this.element.dataset.connected = 'false';
      const clean = (event as CustomEvent<{ clean: boolean }>).detail.clean;
      this.status.textContent = clean ? 'closed' : 'refused or lost (is the system running here, with display vnc, and are you an operator?)';
    });
  }

  destroy(): void {
    this.rfb.disconnect();
  }
}
