// The date range the operator pages share (brand-local days, inclusive), kept while the console is open.
import { h, isoDay, toast } from './util.js';

export const range = { from: isoDay(new Date(Date.now() - 29 * 86400000)), to: isoDay(new Date()), journey: null };

/** The date-range picker shared by the dashboard and the guard page. */
export function rangePicker(onChange) {
  const from = h('input', { type: 'date', id: 'range-from', value: range.from });
  const to = h('input', { type: 'date', id: 'range-to', value: range.to });
  const set = (days) => {
    range.to = isoDay(new Date());
    range.from = isoDay(new Date(Date.now() - (days - 1) * 86400000));
    from.value = range.from; to.value = range.to;
    onChange();
  };
  const changed = () => {
    if (!from.value || !to.value) return;
    if (from.value > to.value) { toast('开始日期不能晚于结束日期', true); return; }
    range.from = from.value; range.to = to.value;
    onChange();
  };
  from.addEventListener('change', changed);
  to.addEventListener('change', changed);
  return h('div', { class: 'range' }, '日期', from, '至', to,
    h('button', { class: 'small', onclick: () => set(7) }, '近 7 天'),
    h('button', { class: 'small', onclick: () => set(30) }, '近 30 天'),
    h('button', { class: 'small', onclick: () => set(60) }, '近 60 天'));
}

export function currentRange() { return { from: range.from, to: range.to }; }

