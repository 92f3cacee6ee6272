/**
 * ACP's web UI: log in (an API token, or `acp ui`'s one-time link), then the cluster live over
 * /ws: a resource tree (cluster → nodes → systems), cluster status, per node and per system live
 * charts, system actions with a task log, the serial console, and the networks, storage, alarms
 * and tokens views. What the user's role cannot do is disabled here and refused by the node anyway.
 */
import 'uplot/dist/uPlot.min.css';
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { allows, rest, type Role } from './api.js';
import { h, clear, redraw } from './dom.js';
import { nodes, systems, alarms } from './model.js';
import { Store } from './store.js';
import { TaskLog } from './tasks.js';
import { Views } from './views.js';
import { Wire } from './wire.js';

interface Status {
  cluster: string;
  node: string;
}

const app = document.getElementById('app')!;

function applyTheme(theme: string): void {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem('acp-theme', theme);
}
applyTheme(localStorage.getItem('acp-theme') ?? (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));

function loginPage(message = ''): void {
  const token = h('input#token', { type: 'password', autocomplete: 'off', placeholder: 'acp_…', required: true, 'aria-label': 'API token' });
  const error = h('p#login-error.error', {}, message);
  const form = h(
    'form#login.card',
    {
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const { status, body } = await rest<{ role: string }>('/api/v1/login', { method: 'POST', body: JSON.stringify({ token: token.value.trim() }) });
        if (status === 200) void boot();
        else error.textContent = `${body.error?.code ?? status}: ${body.error?.message ?? 'login failed'}`;
      },
    },
    h('h1', {}, 'ACP'),
    h('label', {}, 'API token', token),
    h('button.primary', { type: 'submit' }, 'Sign in'),
    h('p.hint', {}, 'Create a token with ', h('code', {}, 'acp token api create --role operator'), ', or open the one-time link ', h('code', {}, 'acp ui'), ' prints.'),
    error,
  );
  clear(app, h('main.login', {}, form));
  token.focus();
}

/** How long the page waits before it asks the node again when it could not reach it (a restart, say). */
const RETRY_MS = 2000;

/** The node did not answer: said where the page shows it (its banner, or a page of its own), and asked again soon. */
function unreachable(): void {
  const message = `the node at ${location.host} does not answer; trying again every ${RETRY_MS / 1000} s…`;
  const banner = document.getElementById('banner');
  if (banner) banner.textContent = message;
  else clear(app, h('main.login', {}, h('div.card', {}, h('h1', {}, 'ACP'), h('p#login-error.error', {}, message))));
  setTimeout(() => void boot(), RETRY_MS);
}

async function boot(): Promise<void> {
  let who: Awaited<ReturnType<typeof rest<{ principal: string; role: Role }>>>;
  let status: Awaited<ReturnType<typeof rest<Status>>>;
  try {
    who = await rest<{ principal: string; role: Role }>('/api/v1/whoami');
    if (who.status === 401) return loginPage();
    status = await rest<Status>('/api/v1/status');
  } catch {
    return unreachable();
  }
  // A node that answers but cannot serve yet (starting, a service restarting) is asked again, as one that does not answer.
  if (who.status >= 500 || status.status >= 500) return unreachable();
  if (who.status !== 200) return loginPage(who.body.error?.message ?? `the node answered ${who.status}`);
  if (status.status !== 200) return loginPage(status.body.error?.message ?? `the node answered ${status.status}`);
  const { cluster, node } = status.body;
  const role = who.body.role;
  const wire = new Wire(cluster);
  const banner = h('p#banner.error');
  const store = new Store(wire, node, (message) => (banner.textContent = message));
  const tasks = new TaskLog();
  let alive = true;
  let healthTimer: ReturnType<typeof setInterval> | undefined;
  /** This page's connection and everything that uses it, stopped: nothing of it asks the node again. */
  const end = () => {
    if (!alive) return;
    alive = false;
    clearInterval(healthTimer);
    views.leave();
    store.stop();
    window.onhashchange = null;
    wire.onClose = () => undefined;
    wire.close();
  };
  wire.onClose = (reason) => {
    banner.textContent = `${reason}; reconnecting…`;
    end();
    setTimeout(() => void boot(), RETRY_MS);
  };

  const search = h('input#search', { type: 'search', placeholder: 'Search nodes and systems', 'aria-label': 'Search' });
  const tree = h('nav#tree', { 'aria-label': 'Resources' });
  const clusterStatus = h('div#cluster-status');
  const main = h('main#view');
  const themeButton = h(
    'button#theme',
    {
      title: 'Light or dark',
      onclick: () => {
        applyTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
        // Charts paint on a canvas with the theme's colours: the view is drawn again.
        views.show(location.hash);
      },
    },
    '◐',
  );
  const menu = h('button#menu', { 'aria-label': 'Resources', onclick: () => document.body.classList.toggle('tree-open') }, '☰');
  const logout = h(
    'button#logout',
    {
      onclick: async () => {
        // Torn down first: the node closing the socket on logout must not start a reconnect.
        end();
        await rest('/api/v1/logout', { method: 'POST', body: '{}' }).catch(() => undefined);
        loginPage('signed out');
      },
    },
    'Sign out',
  );
  clear(
    app,
    h('header#top', {}, menu, h('b.brand', {}, 'ACP'), h('span#where', {}, `${cluster} · ${node}`), clusterStatus, h('span.spacer'), h('span#who', {}, `${who.body.principal} (${role})`), themeButton, logout),
    banner,
    h('div#layout', {}, h('aside#side', {}, search, tree), h('div#content', {}, main, tasks.element)),
  );

  const views = new Views({ wire, store, tasks, role, self: node, main });
  const drawTree = () => {
    const filter = search.value.trim().toLowerCase();
    const allSystems = systems(store);
    const route = location.hash;
    const link = (href: string, label: string, state: string, kind: string) =>
      h('a', { href, class: `${kind} state-${state}${route === href ? ' current' : ''}`, dataset: { state, name: label } }, h('span.dot'), label, h('small', {}, state));
    const nodeList = nodes(store, node).map((n) => {
      const own = allSystems.filter((s) => (s.node ?? node) === n.name && (!filter || s.id.includes(filter) || n.name.includes(filter)));
      if (filter && own.length === 0 && !n.name.includes(filter)) return null;
      return h('li', {}, link(`#/node/${n.name}`, n.name, n.state, 'node'), h('ul', {}, own.map((s) => h('li', {}, link(`#/system/${s.id}`, s.id, s.state, 'system')))));
    });
    const placedElsewhere = allSystems.filter((s) => s.node !== undefined && !nodes(store, node).some((n) => n.name === s.node));
    const shown = JSON.stringify([filter, route, nodes(store, node).map((n) => [n.name, n.state]), allSystems.map((s) => [s.id, s.state, s.node])]);
    redraw(tree, shown, () => [
      h(
        'ul',
        {},
        h('li', {}, h('a.cluster', { href: '#/', class: route === '#/' || route === '' ? 'current' : '' }, cluster), h('ul', {}, nodeList, placedElsewhere.map((s) => h('li', {}, link(`#/system/${s.id}`, s.id, s.state, 'system'))))),
      ),
      h(
        'ul.sections',
        {},
        [
          ['#/create', 'New system'],
          ['#/networks', 'Networks'],
          ['#/storage', 'Storage'],
          ['#/alarms', 'Alarms'],
          ['#/tokens', 'Tokens'],
        ].map(([href, label]) => h('li', {}, h('a', { href, class: route === href ? 'current' : '' }, label!))),
      ),
    ]);
  };
  let health: { score?: number; primary?: string | null } = {};
  const drawStatus = () => {
    const open = alarms(store).filter((alarm) => alarm.open);
    clear(
      clusterStatus,
      h('span', { title: 'Primary monitor' }, 'primary ', h('b#primary', {}, health.primary ?? '–')),
      h('span', { title: 'Health score' }, 'health ', h('b#health', {}, health.score === undefined ? '–' : String(health.score))),
      h('a#open-alarms', { href: '#/alarms', class: open.length > 0 ? 'alarming' : '' }, `${open.length} open alarm${open.length === 1 ? '' : 's'}`),
    );
  };
  const refreshHealth = async () => {
    const [status, score] = await Promise.all([
      wire.ask<{ type: string; primary: string | null }>(wire.path(node, 'monitor'), { type: 'monitor.status' }, 5000).catch(() => undefined),
      wire.ask<{ type: string; score: number }>(wire.path(node, 'monitor'), { type: 'monitor.health' }, 5000).catch(() => undefined),
    ]);
    health = { primary: status?.primary ?? null, ...(score ? { score: score.score } : {}) };
    drawStatus();
  };
  store.onChange = () => {
    drawTree();
    drawStatus();
    views.changed();
  };
  search.addEventListener('input', drawTree);
  window.onhashchange = () => {
    document.body.classList.remove('tree-open');
    drawTree();
    views.show(location.hash);
  };
  try {
    await store.start();
  } catch (error) {
    banner.textContent = `cannot watch the cluster: ${(error as Error).message}`;
  }
  // Closed while it watched (the node restarted): this page is over, the next boot draws its own.
  if (!alive) return;
  drawTree();
  views.show(location.hash);
  void refreshHealth();
  // The monitor's lease and score are asked of it (they are not CDB records); alarms come live.
  healthTimer = setInterval(() => void refreshHealth(), 5000);
  document.body.dataset.ready = 'true';
  document.body.dataset.role = role;
  if (!allows(role, 'operator')) document.body.classList.add('read-only');
}

void boot();
