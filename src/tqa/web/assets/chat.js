// The conversation (#tqa-chat; Gradio's js_on_load gives `element`, `trigger` and `watch`): a citation mark opens
// its passage in the source viewer (the 'cite' event), copy buttons copy, 'New conversation' clears; the newest
// turn is scrolled into view when the conversation changes.
element.addEventListener('click', (ev) => {
  const t = ev.target instanceof Element ? ev.target : null;
  if (!t) return;
  const cite = t.closest('[data-cite]');
  if (cite) {
    ev.preventDefault();
    element.querySelectorAll('.tqa-active').forEach((e) => e.classList.remove('tqa-active'));
    const card = element.querySelector('#tqa-p-' + cite.dataset.cite.replace(':', '-'));
    if (card) card.classList.add('tqa-active');
    trigger('cite', {cite: cite.dataset.cite});
    return;
  }
  const copy = t.closest('[data-copy]');
  if (copy) { ev.preventDefault(); copyQuote(copy); return; }
  if (t.closest('[data-newchat]')) { ev.preventDefault(); trigger('newchat'); }
});
const toLatest = () => {
  const box = element.querySelector('.tqa-conv');
  const turns = element.querySelectorAll('.tqa-turn');
  const last = turns[turns.length - 1];
  if (box && last) box.scrollTop = Math.max(0, last.offsetTop - 8);
};
if (typeof watch === 'function') watch('value', toLatest);
