// The operator's dashboard: journey funnel with A/B, touch decisions over time, FAQ question types and
// gaps, guard actions by rule, churn. One date range for all; each section has its CSV.
import { api, csvUrl } from './api.js';
import { Charts, DECISION_COLOURS, PALETTE } from './charts.js';
import { GUARD_ACTIONS, channelName, clear, decisionName, h, isoDay, localTime, percent } from './util.js';
import { currentRange, range, rangePicker } from './range.js';
import { teachDialog } from './teach.js';
import { guardTable } from './guard.js';

const HANDED_OFF = '(handed off)';
const csvLink = (path) => h('a', { class: 'csv', href: csvUrl(path, currentRange()), download: '' }, '导出 CSV');

export function showDashboard(view) {
  const charts = new Charts();
  const journeySelect = h('select', { id: 'funnel-journey' });
  const sections = {
    funnel: h('div', { id: 'funnel' }),
    decisions: h('div', { id: 'decisions' }),
    faq: h('div', { id: 'faq' }),
    guard: h('div', { id: 'guard-summary' }),
    churn: h('div', { id: 'churn' }),
  };
  const heads = {
    funnel: h('h3', {}), decisions: h('h3', {}), faq: h('h3', {}), guard: h('h3', {}), churn: h('h3', {}),
  };
  view.appendChild(h('div', { class: 'page' },
    h('div', { class: 'page-head' },
      h('div', { class: 'grow' }, h('h2', {}, '数据看板'), h('div', { class: 'muted' }, '按品牌当地日期统计；切换日期后所有图表一起更新')),
      rangePicker(load)),
    h('div', { class: 'card' }, heads.funnel, sections.funnel),
    h('div', { class: 'card' }, heads.decisions, sections.decisions),
    h('div', { class: 'grid2' },
      h('div', { class: 'card' }, heads.faq, sections.faq),
      h('div', { class: 'card' }, heads.guard, sections.guard)),
    h('div', { class: 'card' }, heads.churn, sections.churn)));

  journeySelect.addEventListener('change', () => { range.journey = journeySelect.value; loadFunnel(); });

  async function load() {
    clear(heads.decisions, h('span', { class: 'grow' }, '触达决策（按原因，每天）'), csvLink('/dashboard/decisions'));
    clear(heads.faq, h('span', { class: 'grow' }, '顾客在问什么'), csvLink('/dashboard/faq'));
    clear(heads.guard, h('span', { class: 'grow' }, '群防骚扰（按规则）'), h('a', { class: 'csv', href: '#/guard' }, '查看明细'), csvLink('/guard/summary'));
    clear(heads.churn, h('span', { class: 'grow' }, '流失顾客（删除了导购）'), csvLink('/dashboard/churn'));
    await Promise.all([loadFunnel(), loadDecisions(), loadFaq(), loadGuard(), loadChurn()]);
  }

  async function loadFunnel() {
    try {
      if (!journeySelect.options.length) {
        const journeys = await api('GET', '/journeys');
        clear(journeySelect, journeys.map((j) => h('option', { value: j.id }, j.title ? `${j.title}（${j.id}）` : j.id)));
        if (range.journey && journeys.some((j) => j.id === range.journey)) journeySelect.value = range.journey;
      }
      const journey = journeySelect.value;
      clear(heads.funnel, h('span', {}, '旅程漏斗'), journeySelect, h('span', { class: 'grow' }), journey ? csvLink(`/journeys/${encodeURIComponent(journey)}/funnel`) : null);
      if (!journey) { clear(sections.funnel, h('div', { class: 'empty' }, '还没有旅程')); return; }
      const funnel = await api('GET', `/journeys/${encodeURIComponent(journey)}/funnel?from=${range.from}&to=${range.to}`);
      renderFunnel(funnel);
    } catch (e) { clear(sections.funnel, h('div', { class: 'error' }, e.message)); }
  }

  function renderFunnel(funnel) {
    const canvas = h('canvas', { id: 'funnel-chart', 'aria-label': '旅程漏斗图' });
    const abCanvas = h('canvas', { id: 'ab-chart', 'aria-label': 'A/B 回复率' });
    const abSteps = funnel.steps.filter((s) => Object.keys(s.variants || {}).length > 1);
    const first = funnel.steps[0];
    clear(sections.funnel,
      first ? h('div', { style: 'margin-bottom:10px' },
        stat(first.enrolled, '进入旅程'), stat(sum(funnel.steps, 'sent'), '共发送'),
        stat(sum(funnel.steps, 'replied'), '48 小时内回复'), stat(Math.max(0, ...funnel.steps.map((s) => s.purchased)), '发送后购买')) : null,
      h('div', { class: 'chart-box' }, canvas),
      h('table', { class: 'data', id: 'funnel-table', style: 'margin-top:12px' },
        h('thead', {}, h('tr', {}, ['步骤', '进入', '发送', '48h 回复', '回复率', '购买', '购买率'].map((t, i) => h('th', { class: i ? 'num' : '' }, t)))),
        h('tbody', {}, funnel.steps.map((s) => h('tr', {},
          h('td', {}, s.step), num(s.enrolled), num(s.sent), num(s.replied), num(percent(s.reply_rate)), num(s.purchased), num(percent(s.purchase_rate)))))),
      abSteps.length ? h('div', { style: 'margin-top:18px' },
        h('h3', {}, 'A/B 对比（回复率，双比例 z 检验）'),
        h('div', { class: 'grid2' },
          h('div', { class: 'chart-box' }, abCanvas),
          h('div', { id: 'ab-table' }, abSteps.map(abTable)))) : h('p', { class: 'hint' }, '这个旅程没有 A/B 方案。'));
    charts.draw('funnel', canvas, {
      type: 'bar',
      data: {
        labels: funnel.steps.map((s) => s.step),
        datasets: [
          ['进入旅程', 'enrolled', '#c3d7cb'], ['已发送', 'sent', '#07a35a'], ['48 小时内回复', 'replied', '#2f6fdc'], ['发送后购买', 'purchased', '#f08c00'],
        ].map(([label, key, colour]) => ({ label, data: funnel.steps.map((s) => s[key]), backgroundColor: colour, borderRadius: 3 })),
      },
      options: { plugins: { tooltip: { mode: 'index', intersect: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    if (abSteps.length) {
      const variants = [...new Set(abSteps.flatMap((s) => Object.keys(s.variants)))].sort();
      charts.draw('ab', abCanvas, {
        type: 'bar',
        data: {
          labels: abSteps.map((s) => s.step),
          datasets: variants.map((v, i) => ({
            label: `方案 ${v}`, backgroundColor: PALETTE[i + 1],
            data: abSteps.map((s) => (s.variants[v] ? +(s.variants[v].reply_rate * 100).toFixed(1) : null)),
          })),
        },
        options: { scales: { y: { beginAtZero: true, title: { display: true, text: '回复率 %' } } } },
      });
    }
  }

  function abTable(step) {
    const t = step.ab_test;
    const significant = t && t.p < 0.05;
    return h('div', { class: 'ab', dataset: { step: step.step } },
      h('b', {}, step.step),
      h('table', { class: 'data' },
        h('thead', {}, h('tr', {}, ['方案', '发送', '回复', '回复率', '购买', '购买率'].map((x, i) => h('th', { class: i ? 'num' : '' }, x)))),
        h('tbody', {}, Object.entries(step.variants).sort().map(([v, c]) => h('tr', {},
          h('td', {}, `方案 ${v}`), num(c.sent), num(c.replied), num(percent(c.reply_rate)), num(c.purchased), num(percent(c.purchase_rate)))))),
      t ? h('p', { class: significant ? 'sig' : 'nosig' },
        `${t.a} vs ${t.b}：z = ${t.z.toFixed(2)}，p = ${t.p < 0.001 ? '< 0.001' : t.p.toFixed(3)}，`,
        significant ? `差异显著（p < 0.05），方案 ${betterOf(step, t)} 回复率更高` : '差异不显著，继续积累样本')
        : h('p', { class: 'hint' }, '样本不足，暂不做检验'));
  }

  async function loadDecisions() {
    try {
      const data = await api('GET', `/dashboard/decisions?from=${range.from}&to=${range.to}`);
      const canvas = h('canvas', { id: 'decisions-chart', 'aria-label': '触达决策图' });
      const days = daysBetween(data.date_from, data.date_to);
      const series = new Map();
      for (const row of data.rows) {
        const key = `${row.decision}|${row.reason}`;
        if (!series.has(key)) series.set(key, { decision: row.decision, label: `${decisionName(row.decision)} · ${row.reason_text || row.reason}`, counts: new Map() });
        series.get(key).counts.set(row.day, (series.get(key).counts.get(row.day) || 0) + row.count);
      }
      const used = {};
      const ordered = [...series.values()].sort((a, b) => order(a.decision) - order(b.decision) || a.label.localeCompare(b.label));
      const totals = Object.fromEntries(['sent', 'deferred', 'dropped'].map((d) => [d, data.rows.filter((r) => r.decision === d).reduce((n, r) => n + r.count, 0)]));
      clear(sections.decisions,
        h('div', { style: 'margin-bottom:8px' }, stat(totals.sent, '已发送'), stat(totals.deferred, '推迟'), stat(totals.dropped, '未发送')),
        data.rows.length ? h('div', { class: 'chart-box tall' }, canvas) : h('div', { class: 'empty' }, '这段时间没有触达决策'));
      if (!data.rows.length) return;
      charts.draw('decisions', canvas, {
        type: 'bar',
        data: {
          labels: days.map((d) => d.slice(5)),
          datasets: ordered.map((s) => {
            const family = DECISION_COLOURS[s.decision] || PALETTE;
            const colour = family[(used[s.decision] = (used[s.decision] ?? -1) + 1) % family.length];
            return { label: s.label, data: days.map((d) => s.counts.get(d) || 0), backgroundColor: colour, stack: 'all' };
          }),
        },
        options: {
          plugins: { tooltip: { mode: 'index', intersect: false, filter: (item) => item.raw > 0 }, legend: { position: 'bottom' } },
          scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        },
      });
    } catch (e) { clear(sections.decisions, h('div', { class: 'error' }, e.message)); }
  }

  async function loadFaq() {
    try {
      const data = await api('GET', `/dashboard/faq?from=${range.from}&to=${range.to}`);
      const byIntent = new Map();
      for (const s of data.shares) byIntent.set(s.intent, (byIntent.get(s.intent) || 0) + s.count);
      const total = [...byIntent.values()].reduce((a, b) => a + b, 0);
      const sorted = [...byIntent.entries()].sort((a, b) => b[1] - a[1]);
      const top = sorted.slice(0, 8);
      const rest = sorted.slice(8).reduce((n, [, c]) => n + c, 0);
      if (rest) top.push(['其他', rest]);
      const canvas = h('canvas', { id: 'faq-chart', 'aria-label': '问题类型占比' });
      const handed = byIntent.get(HANDED_OFF) || 0;
      clear(sections.faq,
        h('div', { style: 'margin-bottom:8px' }, stat(total, '顾客提问'), stat(total ? percent((total - handed) / total) : '—', '机器人答上'), stat(handed, '转人工')),
        total ? h('div', { class: 'chart-box' }, canvas) : h('div', { class: 'empty' }, '这段时间没有顾客提问'),
        h('h3', { style: 'margin-top:14px' }, '没答上的问题（相似问法已归组）'),
        data.gaps.length ? h('ol', { class: 'clusters', id: 'faq-gaps' }, data.gaps.slice(0, 10).map((g) => h('li', {},
          h('b', {}, g.example), h('span', { class: 'muted' }, ` × ${g.count} `),
          h('button', { class: 'small', onclick: async () => { if (await teachDialog({ text: g.example })) loadFaq(); } }, '教给机器人'),
          g.variants.length > 1 ? h('div', { class: 'hint' }, g.variants.filter((v) => v !== g.example).slice(0, 4).join(' / ')) : null)))
          : h('div', { class: 'hint' }, '没有没答上的问题'));
      if (!total) return;
      charts.draw('faq', canvas, {
        type: 'doughnut',
        data: {
          labels: top.map(([intent]) => (intent === HANDED_OFF ? '转人工（没答上）' : intent)),
          datasets: [{ data: top.map(([, c]) => c), backgroundColor: top.map(([intent], i) => intentColour(intent, i)) }],
        },
        options: { plugins: { legend: { position: 'right' }, tooltip: { callbacks: { label: (c) => ` ${c.label}：${c.raw}（${percent(c.raw / total)}）` } } } },
      });
    } catch (e) { clear(sections.faq, h('div', { class: 'error' }, e.message)); }
  }

  async function loadGuard() {
    try {
      const [data, events] = await Promise.all([
        api('GET', `/guard/summary?from=${range.from}&to=${range.to}`),
        api('GET', `/guard/events?from=${range.from}&to=${range.to}`),
      ]);
      const canvas = h('canvas', { id: 'guard-chart', 'aria-label': '群防骚扰按规则' });
      const actions = [...new Set(data.rules.flatMap((r) => Object.keys(r.actions)))];
      clear(sections.guard,
        h('div', { style: 'margin-bottom:8px' }, stat(data.rules.reduce((n, r) => n + r.count, 0), '次处理')),
        data.rules.length ? h('div', { class: 'chart-box' }, canvas) : h('div', { class: 'empty' }, '这段时间群里很安静'),
        events.length ? h('h3', { style: 'margin-top:14px' }, '最近的处理（判断错了就点「不是垃圾」）') : null,
        events.length ? guardTable(events.slice(0, 6), true) : null);
      if (!data.rules.length) return;
      const colours = { delete: '#f08c00', warn: '#fcc419', mute: '#d63939', remove: '#862e9c' };
      charts.draw('guard', canvas, {
        type: 'bar',
        data: {
          labels: data.rules.map((r) => r.name || r.rule),
          datasets: actions.map((a, i) => ({ label: GUARD_ACTIONS[a] || a, data: data.rules.map((r) => r.actions[a] || 0), backgroundColor: colours[a] || PALETTE[i] })),
        },
        options: { indexAxis: 'y', scales: { x: { stacked: true, ticks: { precision: 0 } }, y: { stacked: true } } },
      });
    } catch (e) { clear(sections.guard, h('div', { class: 'error' }, e.message)); }
  }

  async function loadChurn() {
    try {
      const data = await api('GET', `/dashboard/churn?from=${range.from}&to=${range.to}`);
      clear(sections.churn, data.customers.length ? h('table', { class: 'data', id: 'churn-table' },
        h('thead', {}, h('tr', {}, ['顾客', '渠道', '导购', '添加于', '流失于', '相处天数'].map((t) => h('th', {}, t)))),
        h('tbody', {}, data.customers.map((c) => h('tr', {},
          h('td', {}, h('a', { href: `#/inbox/${c.id}` }, c.customer)), h('td', {}, channelName(c.channel)), h('td', {}, c.guide || '—'),
          h('td', {}, localTime(c.added_at, true)), h('td', {}, localTime(c.churned_at, true)),
          h('td', {}, `${Math.max(0, Math.round((new Date(c.churned_at) - new Date(c.added_at)) / 86400000))} 天`)))))
        : h('div', { class: 'empty' }, '这段时间没有顾客流失'));
    } catch (e) { clear(sections.churn, h('div', { class: 'error' }, e.message)); }
  }

  load();
  return () => charts.destroy();
}

const INTENT_COLOURS = PALETTE.filter((c) => c !== '#f08c00' && c !== '#868e96');
function intentColour(intent, i) {
  if (intent === HANDED_OFF) return '#f08c00';  // what the bot could not answer stands out
  if (intent === '其他') return '#ced4da';
  return INTENT_COLOURS[i % INTENT_COLOURS.length];
}

function stat(value, label) { return h('div', { class: 'stat' }, h('b', {}, value), h('span', {}, label)); }
function num(value) { return h('td', { class: 'num' }, value); }
function sum(rows, key) { return rows.reduce((n, r) => n + (r[key] || 0), 0); }
function order(decision) { return { sent: 0, deferred: 1, dropped: 2, skipped: 3 }[decision] ?? 4; }

function betterOf(step, test) {
  const a = step.variants[test.a], b = step.variants[test.b];
  return a && b && a.reply_rate >= b.reply_rate ? test.a : test.b;
}

function daysBetween(from, to) {
  const days = [];
  const end = new Date(to + 'T00:00:00');
  for (let d = new Date(from + 'T00:00:00'); d <= end; d.setDate(d.getDate() + 1)) days.push(isoDay(d));
  return days;
}
