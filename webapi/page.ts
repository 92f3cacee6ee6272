/**
 * The status page: a table of the node's services, refreshed every second from /api/v1/status.
 * Logged in by `acp ui`'s link or an API token, both kept as an HttpOnly session cookie.
 */
export const statusPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ACP</title>
<style>
body{font:14px system-ui,sans-serif;margin:2rem;color:#1d2330}
table{border-collapse:collapse;min-width:40rem}th,td{padding:.35rem .8rem;border-bottom:1px solid #dde;text-align:left}
.running{color:#17803d}.restarting,.starting{color:#b7791f}.failed,.stopped{color:#c53030}
#err{color:#c53030}
</style></head>
<body><h1>ACP node <span id="node"></span></h1>
<form id="login"><label>API token <input id="token" type="password" autocomplete="off" size="60"></label> <button>Sign in</button>
<p>Create one with <code>acp token api create --role auditor</code>.</p></form>
<p id="who"></p><p id="summary"></p><p id="err"></p>
<table><thead><tr><th>service</th><th>state</th><th>restarts</th><th>isolation</th><th>pid</th><th>path</th></tr></thead>
<tbody id="services"></tbody></table>
<script>
const text = (tag, value, cls) => { const el = document.createElement(tag); el.textContent = String(value ?? ''); if (cls) el.className = cls; return el; };
const login = document.getElementById('login');
login.addEventListener('submit', async (event) => {
  event.preventDefault();
  const response = await fetch('/api/v1/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: document.getElementById('token').value.trim() }) });
  const answer = await response.json();
  document.getElementById('err').textContent = response.ok ? '' : answer.error.message;
  if (response.ok) { login.hidden = true; refresh(); }
});
async function refresh() {
  if (!login.hidden) return;
  try {
    const response = await fetch('/api/v1/status');
    if (response.status === 401) { login.hidden = false; return; }
    const status = await response.json();
    if (!document.getElementById('who').textContent) {
      const who = await (await fetch('/api/v1/whoami')).json();
      document.getElementById('who').textContent = 'signed in as ' + who.principal + ' (' + who.role + ')';
    }
    if (!response.ok) throw new Error(status.error?.message ?? response.statusText);
    document.getElementById('node').textContent = status.cluster + '/' + status.node;
    document.getElementById('summary').textContent = 'pid ' + status.pid + ', up ' + Math.round(status.uptimeMs / 1000) + ' s, dead letters ' + status.deadLetters;
    const rows = status.services.map((s) => { const tr = document.createElement('tr'); tr.append(text('td', s.name), text('td', s.state, s.state), text('td', s.restarts), text('td', s.isolation), text('td', s.pid), text('td', s.path)); return tr; });
    document.getElementById('services').replaceChildren(...rows);
    document.getElementById('err').textContent = '';
  } catch (error) { document.getElementById('err').textContent = 'cannot reach the node: ' + error.message; }
}
login.hidden = true; refresh(); setInterval(refresh, 1000);
</script></body></html>`;
