// Copy buttons ([data-copy="sentence"|"passage"]) copy the textarea of the same kind in their [data-quotes] box:
// through the clipboard API where the page is a secure context (localhost is), else by selecting the textarea.
// Prepended to chat.js and viewer.js (app.py), which call copyQuote.
const copyQuote = (btn) => {
  const box = btn.closest('[data-quotes]');
  const ta = box && box.querySelector('textarea[data-quote="' + btn.dataset.copy + '"]');
  if (!ta) return;
  if (!btn.dataset.label) btn.dataset.label = btn.textContent;
  const done = () => { btn.textContent = 'Copied'; setTimeout(() => { btn.textContent = btn.dataset.label; }, 1500); };
  const fallback = () => { ta.hidden = false; ta.focus(); ta.select();
    try { if (document.execCommand('copy')) done(); } catch (e) { /* the text stays selected */ } };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(ta.value).then(done, fallback);
  else fallback();
};
