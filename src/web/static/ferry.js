// Progressive enhancement for the dashboard: every page works without this file.
// Loaded as a file (the Content-Security-Policy allows no inline script).
(() => {
  // "Copy" buttons next to secrets shown once (new API keys, webhook secrets).
  document.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('[data-copy]') : null;
    if (!button) return;
    const source = document.getElementById(button.getAttribute('data-copy') || '');
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.value || source.textContent || '').then(() => {
      button.textContent = 'Copied';
    });
  });
  // Charts: <div class="chart" data-chart="<json>"> drawn with uPlot when it is loaded.
  const drawCharts = (root) => {
    if (typeof window.uPlot !== 'function') return;
    for (const el of root.querySelectorAll('[data-chart]:not([data-drawn])')) {
      const spec = JSON.parse(el.getAttribute('data-chart') || '{}');
      el.setAttribute('data-drawn', '');
      const width = Math.max(280, el.clientWidth || 600);
      new window.uPlot(
        {
          title: spec.title,
          width,
          height: 200,
          series: [{}, { label: spec.label, stroke: '#0b57d0', fill: 'rgba(11,87,208,0.1)' }],
          axes: [{}, { size: 60 }],
        },
        [spec.x, spec.y],
        el,
      );
    }
  };
  document.addEventListener('DOMContentLoaded', () => drawCharts(document));
  document.addEventListener('htmx:afterSettle', (event) => drawCharts(event.target));
})();
