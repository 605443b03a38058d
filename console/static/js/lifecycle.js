// 客户交接 and 渠道活码: hand a guide's customers to another guide (在职/离职继承) and see what the platform
// made of each; below, recent transfers and each channel code's adds, replies and purchases.
import { api } from './api.js';
import { channelName, clear, h, localTime, toast } from './util.js';

const STATUS = { waiting: '等待平台确认', accepted: '已接替', refused: '被拒绝', failed: '失败' };
const PILL = { waiting: 'deferred', accepted: 'good', refused: 'bad', failed: 'bad' };
const status = (s) => h('span', { class: `pill ${PILL[s] || ''}` }, STATUS[s] || s);

export function showLifecycle(view) {
  const from = h('select', { id: 'transfer-from', name: 'from', required: true });
  const to = h('select', { id: 'transfer-to', name: 'to', required: true });
  const customers = h('textarea', { id: 'transfer-customers', rows: 3, placeholder: '留空＝交出这位导购的全部客户；\n或填客户编号、平台 ID、姓名，逗号或换行分隔',
    style: 'width:100%;box-sizing:border-box' });
  const departed = h('input', { id: 'transfer-departed', type: 'checkbox', style: 'width:auto' });
  const submit = h('button', { class: 'primary', id: 'transfer-run', type: 'submit', style: 'margin-top:14px;width:100%' }, '开始交接');
  const report = h('div', { id: 'transfer-report', class: 'card' },
    h('div', { class: 'empty' }, '左边选好交出和接手的导购，点「开始交接」。企业微信上由平台确认，客户可能需要一天才接受。'));
  const recent = h('div', { id: 'transfers' }, h('div', { class: 'muted' }, '加载中…'));
  const codes = h('div', { id: 'channel-codes' }, h('div', { class: 'muted' }, '加载中…'));

  view.appendChild(h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h2', {}, '客户交接'),
      h('div', { class: 'muted' }, '导购离职或换店时，把客户连同待发的消息和转人工一起交给另一位导购；新导购会按触达规则向客户做个简短的自我介绍。'))),
    h('div', { class: 'preview' },
      h('form', { class: 'card', id: 'transfer-form', onsubmit: (e) => { e.preventDefault(); run(); } },
        h('label', { for: 'transfer-from' }, '交出客户的导购'), from,
        h('label', { for: 'transfer-to' }, '接手的导购'), to,
        h('label', { for: 'transfer-customers' }, '只交接这些客户（可选）'), customers,
        h('label', { style: 'display:flex;gap:6px;align-items:center;color:inherit;margin-top:10px' }, departed,
          '离职继承（原导购已离职）'),
        submit),
      report),
    h('div', { class: 'card' }, h('h3', {}, h('span', { class: 'grow' }, '最近的交接（最新在前）')), recent),
    h('div', { class: 'card' }, h('h3', {}, h('span', { class: 'grow' }, '渠道活码')),
      h('div', { class: 'hint', style: 'margin-bottom:8px' }, '新建活码：siyu channel-code create 名称 --guides 导购1,导购2 [--tags 标签]'), codes)));

  async function loadGuides() {
    try {
      const guides = await api('GET', '/guides');
      const options = () => guides.map((g) => h('option', { value: g.id }, `${g.name}（${g.id}，${g.customers} 位客户）`));
      clear(from, options());
      clear(to, options());
      if (guides.length > 1) to.value = guides[1].id;
    } catch (e) { clear(report, h('div', { class: 'error' }, e.message)); }
  }

  async function loadTransfers() {
    try {
      const rows = await api('GET', '/transfers');
      clear(recent, rows.length ? transferTable(rows) : h('div', { class: 'empty' }, '还没有交接记录'));
    } catch (e) { clear(recent, h('div', { class: 'error' }, e.message)); }
  }

  async function loadCodes() {
    try {
      const rows = await api('GET', '/channel-codes');
      clear(codes, rows.length ? codeTable(rows) : h('div', { class: 'empty' }, '还没有渠道活码'));
    } catch (e) { clear(codes, h('div', { class: 'error' }, e.message)); }
  }

  async function run() {
    const body = {
      from: from.value, to: to.value, departed: departed.checked,
      customers: customers.value.split(/[,，、\n]+/).map((c) => c.trim()).filter(Boolean),
    };
    if (!body.customers.length) delete body.customers;
    submit.disabled = true;
    clear(report, h('div', { class: 'muted' }, '交接中…'));
    try {
      const result = await api('POST', '/customers/transfer', body);
      clear(report, reportView(result));
      toast(result.summary);
      loadTransfers();
      loadGuides().then(() => { from.value = body.from; to.value = body.to; });
    } catch (e) {
      clear(report, h('div', { class: 'error' }, e.message));
    } finally { submit.disabled = false; }
  }

  loadGuides();
  loadTransfers();
  loadCodes();
}

function reportView(r) {
  return [
    h('h3', {}, `${r.departed ? '离职继承' : '在职继承'}：${r.from_guide} → ${r.to_guide}，共 ${r.rows.length} 位客户`),
    h('div', { style: 'margin-bottom:10px' }, ['accepted', 'waiting', 'refused', 'failed'].map((s) =>
      h('div', { class: 'stat' }, h('b', {}, r.counts[s] ?? 0), h('span', {}, STATUS[s])))),
    h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, ['客户', '渠道', '结果', '说明'].map((t) => h('th', {}, t)))),
      h('tbody', {}, r.rows.map((row) => h('tr', { dataset: { contact: row.contact_id } },
        h('td', {}, `${row.name}（#${row.contact_id}）`), h('td', {}, channelName(row.channel)),
        h('td', {}, status(row.status)), h('td', {}, row.detail || ''))))),
  ];
}

function transferTable(rows) {
  return h('table', { class: 'data' },
    h('thead', {}, h('tr', {}, ['发起时间', '客户', '渠道', '交出 → 接手', '方式', '结果', '确认时间', '说明'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.map((t) => h('tr', { dataset: { transfer: t.id } },
      h('td', { class: 'nowrap' }, localTime(t.requested_at)), h('td', {}, `${t.name}（#${t.contact_id}）`),
      h('td', {}, channelName(t.channel)), h('td', { class: 'nowrap' }, `${t.from_guide} → ${t.to_guide}`),
      h('td', {}, t.departed ? '离职继承' : '在职继承'), h('td', {}, status(t.status)),
      h('td', { class: 'nowrap' }, localTime(t.settled_at)), h('td', {}, t.detail || '')))));
}

function codeTable(rows) {
  return h('table', { class: 'data' },
    h('thead', {}, h('tr', {}, ['名称', '渠道', '导购', '标签', '添加', '回复', '购买', '二维码 / 链接'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.map((c) => h('tr', { dataset: { code: c.state } },
      h('td', {}, c.name), h('td', {}, channelName(c.channel)), h('td', {}, c.guides.join('、')),
      h('td', {}, c.tags.map((t) => h('span', { class: 'tag' }, t))),
      h('td', {}, c.adds), h('td', {}, c.replies), h('td', {}, c.purchases),
      h('td', {}, /^https?:\/\//.test(c.link) ? h('a', { href: c.link, target: '_blank', rel: 'noopener' }, c.channel === 'wecom' ? '查看二维码' : c.link) : c.link)))));
}
