// The console's shell: login, the sidebar, and a hash router (#/inbox/12, #/dashboard …).
import { api, setCsrf, whenUnauthorized } from './api.js';
import { ROLES, clear } from './util.js';
import { showInbox } from './inbox.js';
import { showTeach } from './teach.js';
import { showDashboard } from './dashboard.js';
import { showGuard } from './guard.js';
import { showPreview } from './preview.js';
import { showLifecycle } from './lifecycle.js';

const $ = (id) => document.getElementById(id);
let me = null;
let leave = null; // the current page's clean-up (timers)

const PAGES = {
  inbox: showInbox,
  teach: showTeach,
  dashboard: showDashboard,
  guard: showGuard,
  preview: showPreview,
  lifecycle: showLifecycle,
};
const OPERATOR_ONLY = new Set(['dashboard', 'guard', 'preview', 'lifecycle']);

function showLogin(message) {
  me = null;
  if (leave) { leave(); leave = null; }
  $('shell').hidden = true;
  $('login').hidden = false;
  $('login-error').hidden = !message;
  $('login-error').textContent = message || '';
  $('login-staff').focus();
}

function enter(session) {
  me = session;
  setCsrf(session.csrf_token);
  $('login').hidden = true;
  $('shell').hidden = false;
  $('me-name').textContent = session.name;
  $('me-role').textContent = `${ROLES[session.role] || session.role} · ${session.staff}`;
  for (const link of document.querySelectorAll('[data-role="operator"]')) link.hidden = session.role !== 'operator';
  route();
}

function route() {
  if (!me) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const page = PAGES[name] && (!OPERATOR_ONLY.has(name) || me.role === 'operator') ? name : 'inbox';
  if (page !== name) { location.replace('#/' + page); return; }
  for (const link of document.querySelectorAll('[data-nav]')) link.classList.toggle('active', link.dataset.nav === page);
  if (leave) { leave(); leave = null; }
  const view = clear($('view'));
  leave = PAGES[page](view, { me, args: rest.map(decodeURIComponent) }) || null;
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const staff = $('login-staff').value.trim(), password = $('login-password').value;
  $('login-submit').disabled = true;
  try {
    const session = await api('POST', '/session', { staff, password });
    $('login-password').value = '';
    enter(session);
  } catch (e) {
    showLogin(e.status === 401 ? '工号或密码不对，请重新输入' : e.message);
  } finally {
    $('login-submit').disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  await api('DELETE', '/session').catch(() => null);
  showLogin('已退出登录');
});

whenUnauthorized(() => showLogin('登录已过期，请重新登录'));
window.addEventListener('hashchange', route);

(async () => {
  try {
    enter(await api('GET', '/session'));
  } catch (e) {
    showLogin(e.status === 401 ? '' : e.message);
  }
})();
