// The source viewer (#tqa-viewer): copy buttons copy; a newly shown passage is scrolled into view, its mark
// inside the section's text too.
element.addEventListener('click', (ev) => {
  const copy = ev.target instanceof Element ? ev.target.closest('[data-copy]') : null;
  if (copy) { ev.preventDefault(); copyQuote(copy); }
});
const show = () => {
  const box = element.querySelector('.tqa-context');
  const m = box && box.querySelector('mark');
  if (box && m) box.scrollTop = Math.max(0, m.offsetTop - 48);
  const r = element.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight - 120) element.scrollIntoView({block: 'start', behavior: 'smooth'});
};
if (typeof watch === 'function') watch('value', show);
