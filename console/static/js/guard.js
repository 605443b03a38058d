// What the group guard did, and the staff's word on it: "not spam" undoes the strike and keeps the message
// as a normal example; "spam" keeps it as a spam example for the guard.
import { api, csvUrl } from './api.js';
import { GUARD_ACTIONS, channelName, clear, h, toast } from './util.js';
import { currentRange, rangePicker } from './range.js';

const VERDICTS = { spam: '已确认是垃圾', not_spam: '已标记不是垃圾' };

export function showGuard(view) {
  const table = h('div', { id: 'guard-events' }, h('div', { class: 'muted' }, '加载中…'));
  const csv = h('a', { class: 'csv', download: '' }, '导出 CSV');
  view.appendChild(h('div', { class: 'page' },
    h('div', { class: 'page-head' },
      h('div', { class: 'grow' }, h('h2', {}, '群防骚扰'), h('div', { class: 'muted' }, '机器人在群里删掉、警告、禁言或移出的记录。判断错了就点「不是垃圾」：撤销这次记过，这条消息以后当作正常发言的例子。')),
      rangePicker(load)),
    h('div', { class: 'card' }, h('h3', {}, h('span', { class: 'grow' }, '处理记录（最新在前）'), csv), table)));

  async function load() {
    const { from, to } = currentRange();
    csv.href = csvUrl('/guard/events', { from, to });
    try {
      const events = await api('GET', `/guard/events?from=${from}&to=${to}`);
      clear(table, events.length ? guardTable(events) : h('div', { class: 'empty' }, '这段时间没有处理记录'));
    } catch (e) { clear(table, h('div', { class: 'error' }, e.message)); }
  }

  load();
}

/** Guard actions with the staff's verdict buttons; `compact` leaves out the group and the reason. */
export function guardTable(events, compact = false) {
  const columns = compact ? ['时间 · 成员', '消息 · 规则 → 处理', ''] : ['时间', '群', '成员', '规则', '第几次', '处理', '原因', '消息', ''];
  return h('table', { class: 'data' },
    h('thead', {}, h('tr', {}, columns.map((t) => h('th', {}, t)))),
    h('tbody', {}, events.map((e) => row(e, compact))));
}

function row(e, compact) {
  const cell = h('td', { class: 'verdict-cell' + (compact ? ' stacked' : ' nowrap') });
  const showVerdict = (verdict) => clear(cell, verdict
    ? h('span', { class: `pill ${verdict === 'spam' ? 'bad' : 'good'}` }, VERDICTS[verdict])
    : [h('button', { class: 'small not-spam', onclick: () => decide('not-spam') }, '不是垃圾'), ' ',
      h('button', { class: 'small danger spam', onclick: () => decide('spam') }, '确认是垃圾')]);
  async function decide(which) {
    try {
      const result = await api('POST', `/guard/events/${e.id}/${which}`);
      toast(result.message);
      showVerdict(result.verdict);
    } catch (err) { toast(err.message, true); }
  }
  showVerdict(e.verdict);
  const names = e.rule_names && e.rule_names.length ? e.rule_names : e.rule.split(',');
  const tags = () => names.map((r) => h('span', { class: 'tag' }, r));
  const rules = h('td', { title: e.rule }, tags());
  const action = h('td', { class: 'nowrap' }, GUARD_ACTIONS[e.action] || e.action);
  if (compact) {
    return h('tr', { dataset: { event: e.id } },
      h('td', { class: 'nowrap' }, e.local_time.slice(5), h('div', { class: 'hint', title: e.member }, e.member_name)),
      h('td', {}, e.excerpt || '（非文字消息）', h('div', { title: e.rule }, tags(), '→ ', GUARD_ACTIONS[e.action] || e.action)), cell);
  }
  return h('tr', { dataset: { event: e.id } },
    h('td', { class: 'nowrap' }, e.local_time.slice(5)), h('td', {}, e.group, h('div', { class: 'hint' }, channelName(e.channel))), h('td', { title: e.member }, e.member_name),
    rules, h('td', { class: 'num' }, e.strike), action, h('td', {}, e.reason), h('td', {}, e.excerpt), cell);
}
