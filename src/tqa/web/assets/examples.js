// The example questions (#tqa-examples): a click sends the button's question as the 'example' event.
element.addEventListener('click', (ev) => {
  const b = ev.target instanceof Element ? ev.target.closest('[data-example]') : null;
  if (b) { ev.preventDefault(); trigger('example', {example: b.dataset.example}); }
});
