// Teaching: a handed-off question becomes an example of an FAQ intent, or the first example of a new one.
// The server writes scripts/faq.yaml (comments kept), checks it like `siyu check`, and answers with it at once.
import { api } from './api.js';
import { clear, h, isoDay, modal, toast } from './util.js';

let intentsCache = null;

async function intents(fresh = false) {
  if (!intentsCache || fresh) intentsCache = await api('GET', '/faq/intents');
  return intentsCache;
}

/** The teaching dialog for one question; resolves with the FaqChange, or null when cancelled. */
export async function teachDialog({ text, message_id = null, intent = null }) {
  let all;
  try { all = await intents(true); } catch (e) { toast(e.message, true); return null; }
  return modal((close) => {
      let mode = 'existing';
      const error = h('p', { class: 'error', role: 'alert', hidden: true });
      const exampleInput = h('input', { id: 'teach-example', value: text || '', maxlength: 500 });
      const intentSelect = h('select', { id: 'teach-intent' },
        all.map((i) => h('option', { value: i.id, selected: i.id === intent }, `${i.description || i.id}（${i.id}）`)));
      const answerPreview = h('div', { class: 'hint', id: 'teach-answer' });
      const showAnswer = () => {
        const chosen = all.find((i) => i.id === intentSelect.value);
        answerPreview.textContent = chosen ? `机器人会这样回答：${chosen.answer}` : '';
      };
      intentSelect.addEventListener('change', showAnswer);
      showAnswer();
      const newId = h('input', { id: 'teach-new-id', placeholder: '英文小写和下划线，如 night_cream_usage', maxlength: 64, pattern: '[a-z][a-z0-9_]*' });
      const newDescription = h('input', { id: 'teach-new-description', placeholder: '一句话说明，如 晚霜的用法', maxlength: 200 });
      const newAnswer = h('textarea', { id: 'teach-new-answer', rows: 3, placeholder: '机器人以后怎么回答这个问题', maxlength: 2000 });
      const newExamples = h('textarea', { id: 'teach-new-examples', rows: 3 }, text || '');
      const existing = h('div', {}, h('label', {}, '加到哪个问题'), intentSelect, answerPreview, h('label', {}, '例句（顾客的原话，可修改）'), exampleInput);
      const fresh = h('div', { hidden: true },
        h('label', {}, '问题编号'), newId, h('label', {}, '说明'), newDescription,
        h('label', {}, '答案'), newAnswer, h('label', {}, '例句（每行一句）'), newExamples);
      const tabExisting = h('button', { type: 'button', class: 'on', onclick: () => pick('existing') }, '加到已有问题');
      const tabNew = h('button', { type: 'button', id: 'teach-tab-new', onclick: () => pick('new') }, '新建问题');
      function pick(which) {
        mode = which;
        tabExisting.classList.toggle('on', which === 'existing');
        tabNew.classList.toggle('on', which === 'new');
        existing.hidden = which !== 'existing';
        fresh.hidden = which !== 'new';
      }
      const submit = h('button', { class: 'primary', id: 'teach-submit', type: 'submit' }, '保存并生效');
      const finish = close;
      return h('form', {
        onsubmit: async (e) => {
          e.preventDefault();
          error.hidden = true;
          submit.disabled = true;
          try {
            const result = mode === 'existing'
              ? await api('POST', '/faq/examples', { intent: intentSelect.value, text: exampleInput.value.trim(), message_id })
              : await api('POST', '/faq/intents', {
                id: newId.value.trim(), description: newDescription.value.trim() || null, answer: newAnswer.value.trim(),
                examples: newExamples.value.split('\n').map((s) => s.trim()).filter(Boolean), message_id,
              });
            intentsCache = null;
            toast(result.message);
            finish(result);
          } catch (err) {
            error.textContent = err.message;
            error.hidden = false;
          } finally {
            submit.disabled = false;
          }
        },
      },
      h('h3', {}, '教给机器人'),
      text ? h('div', { class: 'quote' }, `顾客问：「${text}」`) : null,
      h('div', { class: 'tabs' }, tabExisting, tabNew),
      existing, fresh, error,
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => finish(null) }, '取消'), submit));
  });
}

/** The teaching page: questions the bot could not answer (operators), and every intent with its examples. */
export function showTeach(view, { me }) {
  const gaps = h('div', { id: 'gaps' }, h('div', { class: 'muted' }, '加载中…'));
  const list = h('div', { id: 'intents' }, h('div', { class: 'muted' }, '加载中…'));
  view.appendChild(h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', { class: 'grow' }, h('h2', {}, '教机器人'),
      h('div', { class: 'muted' }, '把机器人没答上的问题变成例句，或新建一个问题。保存后写入 scripts/faq.yaml，检查通过即刻生效。'))),
    me.role === 'operator' ? h('div', { class: 'card' }, h('h3', {}, '最近没答上的问题（近 30 天，相似问法已归组）'), gaps) : null,
    h('div', { class: 'card' }, h('h3', {}, h('span', { class: 'grow' }, '现有问题'),
      h('button', { id: 'new-intent', onclick: async () => { if (await teachDialog({ text: '' })) load(); } }, '＋ 新建问题')), list)));

  async function load() {
    try {
      const all = await intents(true);
      clear(list, h('table', { class: 'data' },
        h('thead', {}, h('tr', {}, h('th', {}, '问题'), h('th', {}, '答案'), h('th', {}, '例句'), h('th', {}))),
        h('tbody', {}, all.map((i) => h('tr', { dataset: { intent: i.id } },
          h('td', {}, h('b', {}, i.description || i.id), h('div', { class: 'hint' }, i.id)),
          h('td', {}, i.answer),
          h('td', {}, i.examples.slice(0, 6).map((x) => h('span', { class: 'tag' }, x)), i.examples.length > 6 ? h('span', { class: 'hint' }, `等 ${i.examples.length} 句`) : null),
          h('td', {}, h('button', { class: 'small', onclick: async () => { if (await teachDialog({ text: '', intent: i.id })) load(); } }, '加例句')))))));
    } catch (e) { clear(list, h('div', { class: 'error' }, e.message)); }
  }

  async function loadGaps() {
    const to = new Date(), from = new Date(Date.now() - 29 * 86400000);
    try {
      const insights = await api('GET', `/dashboard/faq?from=${isoDay(from)}&to=${isoDay(to)}`);
      clear(gaps, insights.gaps.length ? h('ol', { class: 'clusters' }, insights.gaps.map((g) => h('li', {},
        h('b', {}, g.example), h('span', { class: 'muted' }, ` × ${g.count}`), ' ',
        h('button', { class: 'small', onclick: async () => { if (await teachDialog({ text: g.example })) loadGaps(); } }, '教给机器人'),
        g.variants.length > 1 ? h('div', { class: 'hint' }, '相似问法：', g.variants.filter((v) => v !== g.example).slice(0, 5).join(' / ')) : null)))
        : h('div', { class: 'empty' }, '近 30 天没有没答上的问题 🎉'));
    } catch (e) { clear(gaps, h('div', { class: 'error' }, e.message)); }
  }

  load();
  if (me.role === 'operator') loadGaps();
}
