/** The main pane: one view per route (#/, #/node/N, #/system/ID, #/create, #/networks, …). */
import { allows, restOrThrow, type Role } from './api.js';
import { ChartPanel, NODE_CHARTS, SYSTEM_CHARTS } from './charts.js';
import { SerialConsole } from './console.js';
import type { GuestDisplay } from './display.js';
import { bytes, clear, h, redraw } from './dom.js';
import { alarms, nodes, systems, type SystemView } from './model.js';
import type { Store } from './store.js';
import type { TaskLog } from './tasks.js';
import type { Message, Wire } from './wire.js';

interface Context {
  wire: Wire;
  store: Store;
  tasks: TaskLog;
  role: Role;
  self: string;
  main: HTMLElement;
}

const STOPPED = ['stopped', 'defined', 'crashed'];

export class Views {
  private route = '';
  /** Torn down when the view changes: charts, console. */
  private disposers: (() => void)[] = [];
  /** Redrawn on every store change (the live parts of the current view). */
  private live: (() => void) | undefined = undefined;

  constructor(private readonly ctx: Context) {}

  show(route: string): void {
    this.route = route || '#/';
    this.leave();
    const [, kind, name] = this.route.split('/');
    const main = this.ctx.main;
    clear(main);
    if (kind === 'node' && name) this.node(decodeURIComponent(name));
    else if (kind === 'system' && name) this.system(decodeURIComponent(name));
    else if (kind === 'create') this.create();
    else if (kind === 'networks') this.records('Networks', 'object/network/', 'meta/network/');
    else if (kind === 'storage') this.records('Storage pools and volumes', 'object/storage/', 'stats/storage/');
    else if (kind === 'alarms') this.alarms();
    else if (kind === 'tokens') this.tokens();
    else this.cluster();
    this.changed();
  }

  changed(): void {
    this.live?.();
  }

  /** The current view torn down (its charts, console and display stopped): on a new view, or when the page leaves. */
  leave(): void {
    for (const dispose of this.disposers.splice(0)) dispose();
    this.live = undefined;
  }

  private can(needed: Role): boolean {
    return allows(this.ctx.role, needed);
  }

  /** A button the role may not use is shown disabled, saying why (the node refuses it anyway). */
  private button(label: string, needed: Role, action: () => void, extra: Record<string, unknown> = {}): HTMLButtonElement {
    const allowed = this.can(needed);
    return h('button', { ...extra, disabled: !allowed, title: allowed ? label : `needs the ${needed} role (you are ${this.ctx.role})`, onclick: action, dataset: { action: label.toLowerCase() } }, label);
  }

  private hypervisorOf(view: SystemView): string {
    const running = view.node && !STOPPED.includes(view.state) ? view.node : (view.spec.node ?? view.node ?? this.ctx.self);
    return this.ctx.wire.path(running, 'hypervisor');
  }

  private cluster(): void {
    const body = h('tbody');
    this.ctx.main.append(h('h1', {}, 'Cluster'), h('table.list', {}, h('thead', {}, h('tr', {}, h('th', {}, 'node'), h('th', {}, 'state'), h('th', {}, 'systems'), h('th', {}, 'cpu'), h('th', {}, 'memory'))), body));
    this.live = () => {
      const all = systems(this.ctx.store);
      clear(
        body,
        ...nodes(this.ctx.store, this.ctx.self).map((n) => {
          const stats = this.ctx.store.value<{ cpuPercent?: number; memory?: { usedBytes: number; totalBytes: number } }>(`stats/node/${n.name}@${n.name}`);
          return h(
            'tr',
            {},
            h('td', {}, h('a', { href: `#/node/${n.name}` }, n.name)),
            h('td', { class: `state-${n.state}` }, n.state),
            h('td', {}, String(all.filter((s) => s.node === n.name && !STOPPED.includes(s.state)).length), ' running of ', String(all.filter((s) => (s.node ?? this.ctx.self) === n.name).length)),
            h('td', {}, stats?.cpuPercent === undefined ? '–' : `${stats.cpuPercent.toFixed(1)} %`),
            h('td', {}, stats?.memory ? `${bytes(stats.memory.usedBytes)} / ${bytes(stats.memory.totalBytes)}` : '–'),
          );
        }),
      );
    };
  }

  private node(name: string): void {
    const list = h('ul.inline');
    const panel = new ChartPanel(`stats/node/${name}@${name}`, NODE_CHARTS, this.ctx.store, this.ctx.wire, this.ctx.self);
    this.disposers.push(() => panel.destroy());
    this.ctx.main.append(h('h1', {}, 'Node ', name), h('h2', {}, 'Systems'), list, h('h2', {}, 'Live'), panel.element);
    this.live = () =>
      clear(
        list,
        ...systems(this.ctx.store)
          .filter((s) => (s.node ?? this.ctx.self) === name)
          .map((s) => h('li', {}, h('a', { href: `#/system/${s.id}`, class: `state-${s.state}` }, h('span.dot'), s.id, ' ', h('small', {}, s.state)))),
      );
  }

  private system(id: string): void {
    const { wire, store, tasks } = this.ctx;
    const find = () => systems(store).find((s) => s.id === id);
    const title = h('h1', {}, 'System ', id, ' ', h('span#state.badge'));
    const facts = h('dl.facts');
    const target = h('select#migrate-to', { 'aria-label': 'Migrate to node' });
    const act = (verb: string, extra: Record<string, unknown> = {}) => () => {
      const view = find();
      if (!view) return;
      void tasks.run(`${verb} ${id}`, () => wire.ask(this.hypervisorOf(view), { type: `system.${verb}`, id, ...extra }, verb === 'migrate' ? 900_000 : 180_000));
    };
    const buttons = h(
      'div.actions',
      {},
      this.button('Start', 'operator', act('start')),
      this.button('Stop', 'operator', act('stop')),
      this.button('Pause', 'operator', act('pause')),
      this.button('Resume', 'operator', act('resume')),
      this.button('Restart', 'operator', act('restart')),
      h('span.group', {}, target, this.button('Migrate', 'operator', () => act('migrate', { to: target.value })())),
      this.button('Delete', 'operator', () => {
        if (!confirm(`Delete system ${id}? Its definition is removed from the cluster.`)) return;
        void tasks.run(`delete ${id}`, async () => {
          const view = find();
          if (view && !STOPPED.includes(view.state)) throw new Error(`system '${id}' is ${view.state} on ${view.node}; stop it first`);
          const reply = await wire.ask(wire.path(this.ctx.self, 'cdb'), { type: 'cdb.delete', key: `object/system/${id}` });
          location.hash = '#/';
          return reply;
        });
      }, { class: 'danger' }),
    );
    const chartsHolder = h('div');
    const consoleHolder = h('div');
    const displayHolder = h('div');
    this.ctx.main.append(title, facts, buttons, h('h2', {}, 'Live'), chartsHolder, h('h2', {}, 'Serial console'), consoleHolder, displayHolder);
    let chartNode: string | undefined;
    let panel: ChartPanel | undefined;
    let consoleNode: string | undefined;
    let serial: SerialConsole | undefined;
    let displayNode: string | undefined;
    let display: GuestDisplay | undefined;
    this.disposers.push(() => {
      panel?.destroy();
      serial?.destroy();
      display?.destroy();
    });
    this.live = () => {
      const view = find();
      if (!view) {
        clear(facts, h('p', {}, `no system '${id}'`));
        return;
      }
      const badge = title.querySelector('#state')!;
      badge.textContent = view.state;
      badge.className = `badge state-${view.state}`;
      clear(
        facts,
        ...([
          ['node', view.node ?? view.spec.node ?? '–'],
          ['driver', view.spec.driver ?? 'qemu'],
          ['vcpus', String(view.spec.vcpus ?? 1)],
          ['memory', `${view.spec.memoryMiB ?? 512} MiB`],
          ['ha', view.spec.ha ? 'yes' : 'no'],
          ['reason', view.reason ?? '–'],
        ] as const).flatMap(([k, v]) => [h('dt', {}, k), h('dd', { dataset: { fact: k } }, v)]),
      );
      const stopped = STOPPED.includes(view.state);
      const enable = (action: string, on: boolean) => {
        const button = buttons.querySelector<HTMLButtonElement>(`[data-action="${action}"]`)!;
        button.disabled = !this.can('operator') || !on;
      };
      enable('start', stopped);
      enable('stop', !stopped);
      enable('pause', view.state === 'running');
      enable('resume', view.state === 'paused');
      enable('restart', !stopped);
      // A witness runs no systems: it is no migration target.
      const others = nodes(store, this.ctx.self).filter((n) => n.name !== view.node && !n.witness);
      enable('migrate', !stopped && others.length > 0);
      if (this.can('operator')) buttons.querySelector<HTMLButtonElement>('[data-action="migrate"]')!.title = others.length === 0 ? 'no other node to migrate to' : 'Migrate';
      enable('delete', stopped);
      const shown = [...target.options].map((option) => option.value).join(',');
      if (shown !== others.map((n) => n.name).join(',')) clear(target, ...others.map((n) => h('option', { value: n.name }, n.name)));
      const runningOn = stopped ? undefined : view.node;
      if (runningOn !== chartNode) {
        panel?.destroy();
        panel = undefined;
        chartNode = runningOn;
        clear(chartsHolder, runningOn ? '' : h('p.hint', {}, 'Not running: charts show while it runs.'));
        if (runningOn) {
          panel = new ChartPanel(`stats/system/${id}@${runningOn}`, SYSTEM_CHARTS, store, wire, this.ctx.self);
          chartsHolder.replaceChildren(panel.element);
        }
      }
      // The console log is on the node where it runs (or last ran).
      const consoleAt = view.node ?? view.spec.node;
      if (consoleAt !== consoleNode) {
        serial?.destroy();
        consoleNode = consoleAt;
        serial = consoleAt ? new SerialConsole(wire, wire.path(consoleAt, 'hypervisor'), id, this.can('operator'), tasks) : undefined;
        clear(consoleHolder, serial ? serial.element : h('p.hint', {}, 'It has not run yet: its console shows once it starts.'));
      }
      // The display (noVNC) while it runs, on whichever node (operator role).
      const showAt = view.spec.display === 'vnc' && view.state === 'running' && this.can('operator') ? runningOn : undefined;
      if (showAt !== displayNode || (view.spec.display === 'vnc') !== displayHolder.hasChildNodes()) {
        display?.destroy();
        display = undefined;
        displayNode = showAt;
        if (view.spec.display !== 'vnc') clear(displayHolder);
        else {
          const why = this.can('operator') ? 'it shows while the system runs' : `needs the operator role (you are ${this.ctx.role})`;
          clear(displayHolder, h('h2', {}, 'Display'), h('p.hint', {}, showAt ? 'Loading the display…' : `Display: ${why}.`));
          // noVNC is loaded only when a display shows (a chunk of its own).
          if (showAt)
            void import('./display.js').then(({ GuestDisplay }) => {
              if (displayNode !== showAt || display || !displayHolder.isConnected) return;
              display = new GuestDisplay(id);
              clear(displayHolder, h('h2', {}, 'Display'), display.element);
            });
        }
      }
    };
  }

  private create(): void {
    const field = (label: string, input: HTMLInputElement | HTMLSelectElement) => h('label', {}, label, input);
    const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9._\\-]{0,62}', placeholder: 'web1' });
    const driver = h('select', { name: 'driver' }, h('option', { value: 'qemu' }, 'qemu'), h('option', { value: 'sim' }, 'sim (simulated)'));
    const vcpus = h('input', { name: 'vcpus', type: 'number', min: '1', max: '512', value: '1' });
    const memory = h('input', { name: 'memoryMiB', type: 'number', min: '16', value: '512' });
    const node = h('select', { name: 'node' }, h('option', { value: '' }, '(any)'), ...nodes(this.ctx.store, this.ctx.self).filter((n) => !n.witness).map((n) => h('option', { value: n.name }, n.name)));
    // A kernel, an initrd or an image file is a host file the daemon opens: the CDB takes it from an admin only.
    const kernel = h('input', { name: 'kernel', placeholder: '/path/to/vmlinuz (an admin names host files)' });
    const initrd = h('input', { name: 'initrd' });
    const cmdline = h('input', { name: 'cmdline', placeholder: 'console=ttyS0' });
    const disk = h('input', { name: 'disk', placeholder: '/path/to/disk.qcow2 (instead of a kernel; admin)' });
    // Said on submit when an initrd or command line has no kernel; cleared as soon as any of them changes.
    for (const input of [kernel, initrd, cmdline]) input.addEventListener('input', () => kernel.setCustomValidity(''));
    const ha = h('input', { name: 'ha', type: 'checkbox' });
    const display = h('select', { name: 'display' }, h('option', { value: 'none' }, 'none (serial only)'), h('option', { value: 'vnc' }, 'vnc (qemu)'));
    const form = h(
      'form#create.card',
      {
        onsubmit: (event: Event) => {
          event.preventDefault();
          // An initrd or a command line boots only with a kernel: not dropped without a word.
          kernel.setCustomValidity(!kernel.value.trim() && (initrd.value.trim() || cmdline.value.trim()) ? 'an initrd or a kernel command line needs a kernel; give one, or leave them empty' : '');
          if (!kernel.reportValidity()) return;
          const spec: Record<string, unknown> = { name: name.value.trim(), driver: driver.value, vcpus: Number(vcpus.value), memoryMiB: Number(memory.value), ha: ha.checked };
          if (node.value) spec.node = node.value;
          if (display.value === 'vnc') spec.display = 'vnc';
          if (kernel.value.trim()) spec.boot = { kernel: kernel.value.trim(), ...(initrd.value.trim() ? { initrd: initrd.value.trim() } : {}), ...(cmdline.value.trim() ? { cmdline: cmdline.value.trim() } : {}) };
          else if (disk.value.trim()) spec.boot = { disk: disk.value.trim() };
          void this.ctx.tasks
            .run(`create ${spec.name}`, () => restOrThrow('/api/v1/systems', { method: 'POST', body: JSON.stringify(spec) }))
            .then((done) => {
              if (done) location.hash = `#/system/${spec.name}`;
            });
        },
      },
      field('Name', name),
      field('Driver', driver),
      field('vCPUs', vcpus),
      field('Memory (MiB)', memory),
      field('Node', node),
      field('Kernel', kernel),
      field('Initrd', initrd),
      field('Kernel command line', cmdline),
      field('Disk image', disk),
      field('Display', display),
      h('label.check', {}, ha, 'High availability'),
      this.button('Create', 'operator', () => undefined, { type: 'submit', class: 'primary' }),
    );
    this.ctx.main.append(h('h1', {}, 'New system'), form);
  }

  /** A table of the records under a prefix (networks, storage), with each node's view beside it. */
  private records(heading: string, prefix: string, perNode: string): void {
    const body = h('div');
    this.ctx.main.append(h('h1', {}, heading), body);
    this.live = () => {
      const records = this.ctx.store.under(prefix);
      if (records.length === 0) {
        clear(body, h('p.hint', {}, `Nothing under ${prefix} yet.`));
        return;
      }
      clear(
        body,
        h(
          'table.list',
          {},
          h('thead', {}, h('tr', {}, h('th', {}, 'name'), h('th', {}, 'definition'), h('th', {}, 'on the nodes'))),
          h(
            'tbody',
            {},
            records.map((record) => {
              const id = record.key.slice(prefix.length);
              const seen = this.ctx.store.under(`${perNode}${id}@`);
              return h(
                'tr',
                { dataset: { key: record.key } },
                h('td', {}, id),
                h('td', {}, summary(record.value)),
                h('td', {}, seen.length === 0 ? '–' : seen.map((meta) => h('div', {}, h('b', {}, meta.key.split('@')[1] ?? ''), ' ', summary(meta.value)))),
              );
            }),
          ),
        ),
      );
    };
  }

  private alarms(): void {
    const body = h('tbody');
    this.ctx.main.append(
      h('h1', {}, 'Alarms'),
      h('table.list#alarms', {}, h('thead', {}, h('tr', {}, h('th', {}, 'alarm'), h('th', {}, 'severity'), h('th', {}, 'state'), h('th', {}, 'raised'), h('th', {}, 'detail'), h('th', {}, ''))), body),
    );
    this.live = () => {
      const shown = alarms(this.ctx.store).sort((a, b) => Number(b.open) - Number(a.open) || b.raisedAt.localeCompare(a.raisedAt));
      redraw(body, JSON.stringify(shown), () =>
        shown.map((alarm) =>
            h(
              'tr',
              { class: alarm.open ? `severity-${alarm.severity}` : 'cleared' },
              h('td', {}, alarm.name),
              h('td', {}, alarm.severity),
              h('td', {}, alarm.open ? (alarm.acked ? 'open, acknowledged' : 'open') : 'cleared'),
              h('td', {}, new Date(alarm.raisedAt).toLocaleString()),
              h('td', {}, alarm.detail),
              h(
                'td',
                {},
                alarm.open && !alarm.acked
                  ? this.button('Acknowledge', 'operator', () => void this.ctx.tasks.run(`acknowledge ${alarm.name}`, () => this.ctx.wire.ask(`acp://${this.ctx.wire.cluster}/@primary/monitor`, { type: 'monitor.alarm.ack', id: alarm.name })))
                  : '',
              ),
            ),
          ),
      );
    };
  }

  private tokens(): void {
    const { wire, tasks } = this.ctx;
    const api = wire.path(this.ctx.self, 'api');
    const body = h('tbody');
    const secret = h('p#token-secret.secret');
    const role = h('select', { 'aria-label': 'Role' }, ...['auditor', 'operator', 'admin'].map((r) => h('option', { value: r }, r)));
    const comment = h('input', { placeholder: 'comment', maxlength: '200' });
    const load = async () => {
      if (!this.can('admin')) {
        clear(body, h('tr', {}, h('td', { colspan: '5' }, `Listing tokens needs the admin role (you are ${this.ctx.role}).`)));
        return;
      }
      const reply = await tasks.run('list tokens', () => wire.ask<Message & { tokens: { id: string; role: string; createdAt: string; expiresAt: string | null; comment: string | null }[] }>(api, { type: 'api.token.list' }));
      clear(
        body,
        ...(reply?.tokens ?? []).map((token) =>
          h(
            'tr',
            {},
            h('td', {}, token.id),
            h('td', {}, token.role),
            h('td', {}, token.createdAt),
            h('td', {}, token.expiresAt ?? 'never'),
            h('td', {}, token.comment ?? '', ' ', this.button('Remove', 'admin', () => void tasks.run(`remove token ${token.id}`, () => wire.ask(api, { type: 'api.token.remove', id: token.id })).then(load), { class: 'danger' })),
          ),
        ),
      );
    };
    const create = this.button('Create token', 'admin', () =>
      void tasks
        .run('create token', () => wire.ask<Message & { secret: string }>(api, { type: 'api.token.create', role: role.value, ...(comment.value ? { comment: comment.value } : {}) }))
        .then((reply) => {
          if (reply) secret.textContent = `New token (shown once): ${reply.secret}`;
          return load();
        }),
    );
    this.ctx.main.append(
      h('h1', {}, 'API tokens'),
      h('div.actions', {}, role, comment, create),
      secret,
      h('table.list', {}, h('thead', {}, h('tr', {}, h('th', {}, 'id'), h('th', {}, 'role'), h('th', {}, 'created'), h('th', {}, 'expires'), h('th', {}, 'comment'))), body),
    );
    void load();
  }
}

function summary(value: unknown): string {
  if (value === null || typeof value !== 'object') return String(value);
  return Object.entries(value as Record<string, unknown>)
    .filter(([key]) => key !== 'name' && key !== 'at')
    .map(([key, v]) => `${key}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ')
    .slice(0, 300);
}
