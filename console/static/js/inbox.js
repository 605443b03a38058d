// The guide's workspace: the inbox (waiting hand-offs first), one conversation with the bot's reasons,
// the reply box, take over / release, tags, triggering a step with the policy's verdict, the timeline.
import { api } from './api.js';
import {
  STATES, TIERS, channelName, clear, colourOf, decisionName, h, initial, localTime, shortTime,
  toast, waited,
} from './util.js';
import { teachDialog } from './teach.js';

const POLL_MS = 3000;
const FILTERS = [['all', '全部'], ['handoff', '等待接待'], ['human', '接待中'], ['bot', '机器人']];

export function showInbox(view, { args }) {
  const state = {
    filter: 'all', conversations: [], selected: args[0] ? Number(args[0]) : null,
    history: null, signature: '', journeys: null, sending: false,
  };
  const list = h('div', { class: 'conv-items', id: 'conversations' });
  const filterBar = h('div', { class: 'filters' });
  const chat = h('section', { class: 'chat', id: 'chat' });
  const side = h('section', { class: 'side', id: 'customer-panel' });
  view.appendChild(h('div', { class: 'inbox' },
    h('section', { class: 'conv-list' },
      h('header', {}, h('h2', {}, '收件箱'), filterBar),
      list),
    chat, side));

  function renderFilters() {
    clear(filterBar, FILTERS.map(([key, label]) => {
      const count = key === 'all' ? null : state.conversations.filter((c) => c.state === key).length;
      return h('button', {
        class: state.filter === key ? 'on' : '', dataset: { filter: key },
        onclick: () => { state.filter = key; renderList(); renderFilters(); },
      }, label, count ? ` ${count}` : '');
    }));
  }

  function renderList() {
    const shown = state.conversations.filter((c) => state.filter === 'all' || c.state === state.filter);
    const waiting = state.conversations.filter((c) => c.state === 'handoff').length;
    const badge = document.getElementById('waiting-badge');
    badge.hidden = !waiting;
    badge.textContent = waiting;
    if (!shown.length) { clear(list, h('div', { class: 'empty' }, '这里还没有会话')); return; }
    clear(list, shown.map((c) => h('a', {
      class: 'conv' + (c.id === state.selected ? ' active' : '') + (c.state === 'handoff' ? ' waiting' : ''),
      href: `#/inbox/${c.id}`, dataset: { conversation: c.id, state: c.state },
    },
    h('div', { class: 'avatar', style: `background:${colourOf(c.customer)}` }, initial(c.customer)),
    h('div', { class: 'conv-main' },
      h('div', { class: 'conv-top' },
        h('span', { class: 'conv-name' }, c.customer),
        h('span', { class: 'conv-time' }, shortTime(c.last_message_at))),
      h('div', { class: 'conv-last' }, c.last_message || ' '),
      h('div', { class: 'conv-meta' },
        statePill(c),
        h('span', { class: 'channel' }, channelName(c.channel)),
        (c.tags || []).slice(0, 2).map((t) => h('span', { class: 'tag' }, t)))))));
  }

  async function loadList() {
    try {
      state.conversations = await api('GET', '/conversations');
    } catch (e) {
      if (e.status !== 401) clear(list, h('div', { class: 'empty error' }, e.message));
      return;
    }
    renderFilters();
    renderList();
  }

  async function loadConversation(force = false) {
    if (!state.selected) { renderEmptyChat(); return; }
    let history;
    try {
      history = await api('GET', `/conversations/${state.selected}/messages`);
    } catch (e) {
      if (e.status !== 401) clear(chat, h('div', { class: 'placeholder error' }, e.message));
      return;
    }
    const last = history.items[history.items.length - 1];
    const signature = `${history.conversation.state}|${history.items.length}|${last ? last.id : ''}|${(history.conversation.tags || []).join(',')}`;
    const changed = force || signature !== state.signature || history.conversation.id !== (state.history && state.history.conversation.id);
    // the side panel keeps what the guide is typing there unless the customer or their tags changed
    const sideSignature = `${history.conversation.id}|${(history.conversation.tags || []).join(',')}`;
    state.history = history;
    if (changed) {
      state.signature = signature;
      renderChat();
      if (sideSignature !== state.sideSignature) { state.sideSignature = sideSignature; renderSide(); } else if (state.refreshTimeline) state.refreshTimeline();
    } else {
      renderHeadState(); // the waited time moves on
    }
  }

  function renderEmptyChat() {
    clear(chat, h('div', { class: 'placeholder' }, h('p', {}, '从左侧选择一个会话'), h('p', { class: 'hint' }, '等待接待的会话排在最前面')));
    clear(side, h('div', { class: 'hint' }, '选择会话后，这里显示顾客资料、标签、触发话术（先看策略判断）和时间线。'));
  }

  const head = h('div', { class: 'chat-head' });
  const messages = h('div', { class: 'messages', id: 'messages' });
  const composer = h('div', { class: 'composer' });
  const replyBox = h('textarea', {
    id: 'reply-text', maxlength: 2000,
    onkeydown: (e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(replyBox); } },
  });

  function renderHeadState() {
    const c = state.history.conversation;
    clear(head,
      h('div', { class: 'avatar', style: `background:${colourOf(c.customer)}` }, initial(c.customer)),
      h('div', {}, h('h2', {}, c.customer), h('div', { class: 'hint' }, channelName(c.channel), c.guide ? ` · 导购 ${c.guide}` : '')),
      statePill(c),
      h('div', { class: 'grow' }),
      c.state !== 'human' ? h('button', { id: 'takeover', onclick: () => act('takeover', '已接管，机器人暂停回复') }, '接管对话') : null,
      c.state !== 'bot' ? h('button', { id: 'release', class: 'primary', onclick: () => act('release', '已交还机器人，它会继续回答') }, '交还机器人') : null);
  }

  async function act(what, done) {
    try {
      await api('POST', `/conversations/${state.selected}/${what}`);
      toast(done);
    } catch (e) { toast(e.message, true); }
    await Promise.all([loadConversation(true), loadList()]);
  }

  function renderChat() {
    const c = state.history.conversation;
    renderHeadState();
    const nearBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
    clear(messages, renderItems(state.history.items, (item) => teachDialog({ text: item.text, message_id: item.message_id })));
    if (!state.history.items.length) messages.appendChild(h('div', { class: 'empty' }, '还没有消息'));
    const box = replyBox;  // one box for the whole visit: a new message arriving never loses what the guide typed
    box.placeholder = c.can_reply ? '输入回复，回车发送（Shift+回车换行）' : '';
    box.disabled = !c.can_reply;
    clear(composer,
      c.can_reply ? null : h('div', { class: 'note' }, c.reply_note || '这个渠道不能从工作台回复'),
      c.state === 'handoff' && c.can_reply ? h('div', { class: 'hint' }, '回复后机器人会暂停，直到你交还或超时；顾客会收到「导购已加入对话」。') : null,
      h('form', { onsubmit: (e) => { e.preventDefault(); send(box); } },
        box, h('button', { class: 'primary', id: 'send', disabled: !c.can_reply }, '发送')));
    if (!chat.contains(head)) clear(chat, head, messages, composer);
    if (nearBottom || !state.rendered) messages.scrollTop = messages.scrollHeight;
    state.rendered = true;
  }

  async function send(box) {
    const text = box.value.trim();
    if (!text || state.sending) return;
    state.sending = true;
    try {
      await api('POST', `/conversations/${state.selected}/messages`, { text });
      box.value = '';
    } catch (e) {
      toast(e.message, true);
    } finally {
      state.sending = false;
    }
    await Promise.all([loadConversation(true), loadList()]);
    messages.scrollTop = messages.scrollHeight;
    box.focus();
  }

  function renderSide() {
    const c = state.history.conversation;
    const tagInput = h('input', { id: 'tag-input', placeholder: '新标签，如 高意向', maxlength: 64 });
    const journeySelect = h('select', { id: 'trigger-journey' });
    const stepSelect = h('select', { id: 'trigger-step' });
    const verdictBox = h('div', { id: 'trigger-result' });
    const timeline = h('ul', { class: 'timeline', id: 'timeline' }, h('li', { class: 'muted' }, '加载中…'));
    clear(side,
      h('h4', {}, '客户'),
      h('div', {}, h('b', {}, c.customer), ' ', h('span', { class: 'channel' }, channelName(c.channel))),
      h('div', { class: 'hint' }, `会话 #${c.id}`, c.last_message_at ? ` · 最近消息 ${localTime(c.last_message_at)}` : ''),
      h('h4', {}, '标签'),
      h('div', { id: 'tags' }, (c.tags || []).length ? c.tags.map((t) => h('span', { class: 'tag' }, t)) : h('span', { class: 'hint' }, '暂无标签')),
      h('form', { class: 'row', onsubmit: async (e) => {
        e.preventDefault();
        const tag = tagInput.value.trim();
        if (!tag) return;
        try {
          const result = await api('POST', `/conversations/${c.id}/tags`, { tag });
          toast(result.message);
          tagInput.value = '';
        } catch (err) { toast(err.message, true); }
        await loadConversation(true);
      } }, tagInput, h('button', {}, '添加')),
      h('h4', {}, '触发话术'),
      h('div', { class: 'row' }, journeySelect),
      h('div', { class: 'row' }, stepSelect),
      h('div', { class: 'row' },
        h('button', { id: 'trigger-preview', onclick: () => trigger(true) }, '预览策略判断'),
        h('button', { id: 'trigger-go', class: 'primary', onclick: () => trigger(false) }, '触发')),
      verdictBox,
      h('h4', {}, '时间线（为什么发 / 没发）'),
      timeline);

    function fillSteps() {
      const journey = (state.journeys || []).find((j) => j.id === journeySelect.value);
      clear(stepSelect,
        (journey ? journey.steps : []).map((s) => h('option', { value: s.id }, s.variants.length ? `${s.id}（A/B：${s.variants.join('/')}）` : s.id)),
        h('option', { value: '' }, '整段旅程（从头开始，不预览）'));
    }
    journeySelect.addEventListener('change', fillSteps);
    (async () => {
      if (!state.journeys) state.journeys = await api('GET', '/journeys').catch(() => []);
      clear(journeySelect, state.journeys.map((j) => h('option', { value: j.id }, `${j.title || j.id}（${j.id}）`)));
      fillSteps();
    })();

    async function trigger(dryRun) {
      const body = { journey: journeySelect.value, step: stepSelect.value || null, dry_run: dryRun };
      try {
        const result = await api('POST', `/conversations/${c.id}/trigger`, body);
        clear(verdictBox, verdictView(result));
        if (!dryRun) { toast(result.message); loadTimeline(); }
      } catch (e) { clear(verdictBox, h('div', { class: 'verdict error' }, e.message)); }
    }

    async function loadTimeline() {
      try {
        const t = await api('GET', `/conversations/${c.id}/timeline`);
        clear(timeline, t.entries.length ? t.entries.map((e) => h('li', { class: e.decision },
          h('div', {}, h('b', {}, `${e.journey} · ${e.step}`), ' ', h('span', { class: `pill ${e.decision}` }, decisionName(e.decision))),
          h('div', { class: 'muted' }, e.local_time, ' · ', e.reason_text))) : h('li', { class: 'muted' }, '还没有触达记录'));
        if (t.zone) timeline.appendChild(h('li', { class: 'hint' }, `时间为顾客当地时间（${t.zone}）`));
      } catch (e) { clear(timeline, h('li', { class: 'error' }, e.message)); }
    }
    state.refreshTimeline = loadTimeline;
    loadTimeline();
  }

  function verdictView(result) {
    const p = result.preview;
    return h('div', { class: 'verdict' },
      p ? h('div', {}, '策略判断：', h('span', { class: `pill ${p.verdict}` }, decisionName(p.verdict)), ' ', p.reason_text,
        p.until_local ? `（最早 ${p.until_local}）` : '') : null,
      h('div', { class: 'hint' }, result.message),
      result.text ? h('div', { class: 'text' }, result.text) : null);
  }

  const onHash = () => {
    const m = location.hash.match(/^#\/inbox\/(\d+)/);
    const id = m ? Number(m[1]) : null;
    if (id === state.selected) return;
    state.selected = id; state.signature = ''; state.sideSignature = ''; state.rendered = false;
    replyBox.value = '';
    renderList();
    loadConversation(true);
  };
  window.addEventListener('hashchange', onHash);

  loadList();
  loadConversation(true);
  const timer = setInterval(() => { loadList(); loadConversation(); }, POLL_MS);
  return () => { clearInterval(timer); window.removeEventListener('hashchange', onHash); };
}

function statePill(c) {
  const label = c.state === 'handoff' && c.waiting_since ? `已等待 ${waited(c.waiting_since)}` : STATES[c.state] || c.state;
  return h('span', { class: `pill ${c.state}`, title: STATES[c.state] || c.state }, label);
}

/** The history as the guide reads it: bubbles both ways, the bot's reasons under its messages. */
export function renderItems(items, teach) {
  const out = [];
  let day = '';
  for (const item of items) {
    const itemDay = (item.local_time || '').slice(0, 10);
    if (itemDay && itemDay !== day) { day = itemDay; out.push(h('div', { class: 'day-sep' }, day)); }
    const time = (item.local_time || '').slice(11, 16);
    if (item.kind === 'decision') {
      out.push(h('div', { class: 'event-line', dataset: { item: item.id } }, h('span', {}, `${time} · `, reasonText(item.reason) || item.text)));
      continue;
    }
    if (item.kind === 'guard') {
      out.push(h('div', { class: 'event-line guard', dataset: { item: item.id } },
        h('span', {}, `${time} · 群防骚扰：`, reasonText(item.reason), item.text ? `「${item.text}」` : '')));
      continue;
    }
    const outgoing = item.direction === 'out';
    const who = outgoing ? (item.sender === 'staff' ? `导购 ${item.sender_name || ''}` : '机器人') : (item.sender_name || '顾客');
    out.push(h('div', { class: `msg ${outgoing ? 'out' : 'in'} ${item.sender || ''}${item.handed_off ? ' handed' : ''}`, dataset: { item: item.id } },
      h('div', { class: 'who' }, `${who} · ${time}`, outgoing && item.delivered === false ? ' · 未送达' : ''),
      h('div', { class: 'bubble' }, item.text),
      reasonChips(item, teach)));
  }
  return out;
}

function reasonChips(item, teach) {
  const r = item.reason;
  const chips = [];
  if (r) {
    if (r.kind === 'faq' && item.direction === 'in') {
      // the bot's answer below carries the intent; the question only says how sure the match was
      if (r.confidence !== null && r.confidence !== undefined) chips.push(h('span', { class: 'chip' }, `已匹配 · ${TIERS[r.tier] || r.tier || ''} ${r.confidence.toFixed(2)}`));
    } else if (r.kind === 'faq') {
      chips.push(h('span', { class: 'chip faq' }, `FAQ · ${r.intent}`));
      if (r.tier) chips.push(h('span', { class: 'chip' }, TIERS[r.tier] || r.tier));
      if (r.confidence !== null && r.confidence !== undefined) chips.push(h('span', { class: 'chip' }, `置信度 ${r.confidence.toFixed(2)}`));
    } else if (r.kind === 'handoff') {
      chips.push(h('span', { class: 'chip handoff' }, '转人工'));
      if (r.intent) chips.push(h('span', { class: 'chip' }, `最接近 ${r.intent}`));
      if (r.confidence !== null && r.confidence !== undefined) chips.push(h('span', { class: 'chip' }, `置信度 ${r.confidence.toFixed(2)}`));
    } else if (r.kind === 'journey' || r.kind === 'decision') {
      chips.push(h('span', { class: 'chip journey' }, `旅程 ${r.journey} · ${r.step}${r.variant ? ` · 方案 ${r.variant}` : ''}`));
      if (r.decision) chips.push(h('span', { class: 'chip' }, `策略：${decisionName(r.decision)}${r.policy_reason ? `（${r.policy_reason}）` : ''}`));
    } else {
      chips.push(h('span', { class: 'chip', title: r.summary }, r.summary));
    }
  }
  if (item.handed_off) {
    if (!r || r.kind !== 'handoff') chips.push(h('span', { class: 'chip handoff' }, '机器人没答上，已转人工'));
    if (item.message_id) chips.push(h('button', { class: 'small teach', onclick: () => teach(item) }, '教给机器人'));
  }
  return chips.length ? h('div', { class: 'why', title: r ? r.summary : '' }, chips) : null;
}

function reasonText(r) {
  if (!r) return '';
  if (r.kind === 'guard') return r.summary;  // the rules in Chinese, the strike and what was done
  if (r.kind === 'decision' || r.kind === 'journey') {
    return `旅程 ${r.journey} · ${r.step}${r.variant ? `（方案 ${r.variant}）` : ''}：${decisionName(r.decision)}${r.summary ? ` — ${r.summary}` : ''}`;
  }
  return r.summary;
}
