// Small helpers every page uses: building DOM safely, Chinese labels, local times.

/** h('div', {class: 'x', onclick: f}, child, 'text', [more]) — text is always a text node, never HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

export const CHANNELS = { webchat: '网页咨询', wecom: '企业微信', wecom_kf: '微信客服', kf: '微信客服', telegram: 'Telegram', console: '命令行', sim: '模拟' };
export const channelName = (c) => CHANNELS[c] || c;

export const STATES = { bot: '机器人接待', handoff: '等待导购', human: '导购接待中' };

export const DECISIONS = { sent: '已发送', deferred: '已推迟', dropped: '未发送', skipped: '已跳过', send: '会发送', defer: '会推迟', drop: '不会发送', enrolled: '进入旅程', exited: '退出旅程' };
export const decisionName = (d) => DECISIONS[d] || d;

export const TIERS = { fuzzy: '近似原句', semantic: '语义相近', llm: '大模型判断', handoff: '转人工' };
export const GUARD_ACTIONS = { delete: '删除消息', warn: '警告', mute: '禁言', remove: '移出群聊', none: '仅记录', kept: '保留' };
export const ROLES = { guide: '导购', operator: '运营' };

const pad = (n) => String(n).padStart(2, '0');

/** 「11-23 20:38」 in the viewer's own time zone (the browser's), with the year when it is not this year. */
export function localTime(iso, withYear = false) {
  if (!iso) return '';
  const d = new Date(iso);
  const now = new Date();
  const year = withYear || d.getFullYear() !== now.getFullYear() ? `${d.getFullYear()}-` : '';
  return `${year}${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A short time for lists: 「20:38」 today, 「昨天」, 「11-20」 otherwise. */
export function shortTime(iso) {
  if (!iso) return '';
  const d = new Date(iso), now = new Date();
  const sameDay = (a, b) => a.toDateString() === b.toDateString();
  if (sameDay(d, now)) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const yesterday = new Date(now); yesterday.setDate(now.getDate() - 1);
  if (sameDay(d, yesterday)) return '昨天';
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** How long since `iso`, in Chinese: 「刚刚」「5 分钟」「2 小时 10 分」「3 天 4 小时」. */
export function waited(iso, now = Date.now()) {
  const minutes = Math.max(0, Math.floor((now - new Date(iso).getTime()) / 60000));
  if (minutes < 1) return '刚刚';
  if (minutes < 60) return `${minutes} 分钟`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} 小时 ${minutes % 60} 分` : `${hours} 小时`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} 天 ${hours % 24} 小时` : `${days} 天`;
}

/** YYYY-MM-DD of a Date in the viewer's time zone. */
export function isoDay(d) { return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; }

export function percent(x) { return x === null || x === undefined ? '—' : `${(x * 100).toFixed(1)}%`; }

let toastTimer = null;
/** A short note at the bottom right; `bad` for errors. */
export function toast(text, bad = false) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.className = 'toast' + (bad ? ' bad' : '');
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 3500);
}

export function initial(name) { return (name || '?').trim().slice(0, 1) || '?'; }

/** A colour from a name, so one customer keeps one avatar colour. */
export function colourOf(name) {
  let hash = 0;
  for (const ch of name || '') hash = (hash * 31 + ch.codePointAt(0)) % 360;
  return `hsl(${hash}, 38%, 58%)`;
}

/** A modal dialog; resolves when closed. `build(close)` returns its content. */
export function modal(build) {
  return new Promise((resolve) => {
    const back = h('div', { class: 'modal-back' });
    const close = (value) => { back.remove(); resolve(value); };
    back.addEventListener('click', (e) => { if (e.target === back) close(null); });
    back.appendChild(h('div', { class: 'modal', role: 'dialog' }, build(close)));
    document.body.appendChild(back);
    const first = back.querySelector('input, select, textarea');
    if (first) first.focus();
  });
}
