// Journey preview: pick a journey and a customer profile, see every message it would send on a timeline
// with the touch policy's decision. The server runs the simulator on a private in-memory database.
import { api } from './api.js';
import { clear, decisionName, h } from './util.js';

const ZONES = ['Asia/Shanghai', 'Asia/Hong_Kong', 'Asia/Tokyo', 'Asia/Singapore', 'Europe/London', 'America/New_York', 'America/Los_Angeles', 'Australia/Sydney'];
const INTERESTS = [['sensitive', '敏感肌'], ['whitening', '美白提亮'], ['anti_aging', '抗初老'], ['hydrating', '补水保湿']];

export function showPreview(view) {
  const journey = h('select', { id: 'preview-journey', name: 'journey' });
  const name = h('input', { id: 'preview-name', value: '林小姐', maxlength: 64 });
  const tags = h('input', { id: 'preview-tags', placeholder: '逗号分隔，如 high_value, 老客' });
  const interests = INTERESTS.map(([value, label]) => h('label', { style: 'display:inline-flex;gap:4px;margin-right:10px;color:inherit' },
    h('input', { type: 'checkbox', value, style: 'width:auto' }), label));
  const source = h('select', { id: 'preview-source' }, ['', '门店扫码', '小红书', '直播间', '朋友推荐', '官网在线咨询'].map((s) => h('option', { value: s }, s || '（未知）')));
  const birthday = h('input', { id: 'preview-birthday', type: 'date' });
  const zone = h('select', { id: 'preview-zone' }, h('option', { value: '' }, '品牌默认时区'), ZONES.map((z) => h('option', { value: z }, z)));
  const days = h('input', { id: 'preview-days', type: 'number', min: 1, max: 120, value: 35 });
  const start = h('input', { id: 'preview-start', type: 'datetime-local' });
  const result = h('div', { id: 'preview-result', class: 'card' }, h('div', { class: 'empty' }, '左边选好旅程和顾客，点「生成预览」'));
  const submit = h('button', { class: 'primary', id: 'preview-run', style: 'margin-top:14px;width:100%' }, '生成预览');

  view.appendChild(h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h2', {}, '旅程预览'),
      h('div', { class: 'muted' }, '模拟一位顾客加上导购后会收到什么、什么时候收到、为什么推迟或不发。不会给任何真实顾客发消息。'))),
    h('div', { class: 'preview' },
      h('form', { class: 'card', onsubmit: (e) => { e.preventDefault(); run(); } },
        h('label', {}, '旅程'), journey,
        h('label', {}, '顾客昵称'), name,
        h('label', {}, '标签'), tags,
        h('label', {}, '兴趣'), h('div', {}, interests),
        h('label', {}, '来源'), source,
        h('label', {}, '生日'), birthday,
        h('label', {}, '时区'), zone,
        h('label', {}, '模拟天数'), days,
        h('label', {}, '添加导购的时间（默认现在）'), start,
        submit),
      result)));

  (async () => {
    try {
      const journeys = await api('GET', '/journeys');
      clear(journey, journeys.map((j) => h('option', { value: j.id }, j.title ? `${j.title}（${j.id}）` : j.id)));
    } catch (e) { clear(result, h('div', { class: 'error' }, e.message)); }
  })();

  async function run() {
    const body = {
      name: name.value.trim() || '预览顾客',
      tags: tags.value.split(/[,，\s]+/).map((t) => t.trim()).filter(Boolean),
      interests: interests.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
      source: source.value || null,
      birthday: birthday.value || null,
      timezone: zone.value || null,
      days: Number(days.value) || 35,
      start: start.value ? new Date(start.value).toISOString() : null,
    };
    submit.disabled = true;
    clear(result, h('div', { class: 'muted' }, '模拟中…'));
    try {
      render(await api('POST', `/journeys/${encodeURIComponent(journey.value)}/preview`, body));
    } catch (e) {
      clear(result, h('div', { class: 'error' }, e.message));
    } finally {
      submit.disabled = false;
    }
  }

  function render(preview) {
    const sent = preview.lines.filter((l) => l.kind === 'sent').length;
    const held = preview.lines.filter((l) => l.kind === 'deferred' || l.kind === 'dropped').length;
    const timeline = h('div', { class: 'ptl' });
    let day = null;
    for (const line of preview.lines) {
      if (line.day !== day) { day = line.day; timeline.appendChild(h('div', { class: 'day' }, `第 ${line.day} 天 · ${line.local_time.slice(0, 10)}`)); }
      timeline.appendChild(h('div', { class: `item ${line.kind}`, dataset: { kind: line.kind } },
        h('span', { class: 'time' }, line.local_time.slice(11, 16)),
        h('div', { class: 'head' },
          h('span', { class: `pill ${line.kind}` }, decisionName(line.kind)),
          line.step ? h('b', {}, line.step) : null,
          line.variant ? h('span', { class: 'tag' }, `方案 ${line.variant}`) : null,
          line.reason_text ? h('span', { class: 'muted' }, line.reason_text) : null),
        line.text ? h('div', { class: line.kind === 'sent' ? 'bubble' : 'note' }, line.text) : null));
    }
    clear(result,
      h('h3', {}, `${preview.journey}：${sent} 条会发送，${held} 次推迟或不发`),
      preview.lines.length ? timeline : h('div', { class: 'empty' }, '这位顾客在这段时间里不会收到这个旅程的消息'));
  }
}
