// The evaluation report's charts (Chart.js 4): base vs tuned per metric, ROUGE-L per
// department (when there is more than one), and the fine-tune's loss curves. Everything else
// on the page is rendered by the server; the data comes from the #eval-chart-data script
// element (training/views/evaluations.py, _chart_data). Animation is off so that the charts
// are complete at once, in the browser and on paper (print view: docs/evaluation-report.md).
(function () {
  "use strict";
  var source = document.getElementById("eval-chart-data");
  if (!source || !window.Chart) return;
  var data = JSON.parse(source.textContent);
  var labels = data.labels || {};
  var BASE = "#adb5bd";
  var TUNED = "#0d6efd";
  var common = { animation: false, responsive: true, maintainAspectRatio: false };

  function four(v) { return v === null || v === undefined ? "—" : Number(v).toFixed(4); }
  function tooltip() {
    return { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + four(ctx.parsed.y); } } };
  }
  function bars(canvas, categories, run, baseline) {
    var datasets = [];
    if (baseline) datasets.push({ label: baseline.label, data: baseline.values, backgroundColor: BASE, borderColor: BASE });
    datasets.push({ label: run.label, data: run.values, backgroundColor: TUNED, borderColor: TUNED });
    return new window.Chart(canvas, {
      type: "bar",
      data: { labels: categories, datasets: datasets },
      options: Object.assign({}, common, {
        plugins: { tooltip: tooltip(), legend: { position: "bottom" } },
        scales: { y: { beginAtZero: true, title: { display: true, text: labels.score } } }
      })
    });
  }

  var metrics = document.getElementById("metrics-chart");
  if (metrics && data.metrics && data.metrics.length) {
    bars(metrics, data.metrics, data.run, data.baseline);
  }

  var departments = document.getElementById("department-chart");
  if (departments && data.departments && data.departments.length > 1) {
    var names = data.departments.map(function (d) { return d.name; });
    bars(
      departments,
      names,
      { label: data.run.label + " · " + labels.rouge_l, values: data.departments.map(function (d) { return d.run; }) },
      data.baseline ? { label: data.baseline.label + " · " + labels.rouge_l, values: data.departments.map(function (d) { return d.baseline; }) } : null
    );
  }

  var loss = document.getElementById("loss-chart");
  if (loss && data.loss) {
    var train = (data.loss.train || []).filter(function (p) { return p[1] !== null; }).map(function (p) { return { x: p[0], y: p[1] }; });
    var evals = (data.loss.eval || []).filter(function (p) { return p[1] !== null; }).map(function (p) { return { x: p[0], y: p[1] }; });
    new window.Chart(loss, {
      type: "line",
      data: {
        datasets: [
          { label: labels.train_loss, data: train, borderColor: TUNED, backgroundColor: TUNED, borderWidth: 1.5, pointRadius: 0, tension: 0 },
          { label: labels.eval_loss, data: evals, borderColor: "#dc3545", backgroundColor: "#dc3545", borderWidth: 2, pointRadius: 3, tension: 0 }
        ]
      },
      options: Object.assign({}, common, {
        parsing: false,
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { type: "linear", title: { display: true, text: labels.step }, ticks: { precision: 0 } },
          y: { title: { display: true, text: labels.loss } }
        }
      })
    });
  }

  // Paper is narrower than the screen: redraw at the printed size, and back afterwards.
  function resizeAll() {
    Object.values(window.Chart.instances || {}).forEach(function (chart) { chart.resize(); });
  }
  window.addEventListener("beforeprint", resizeAll);
  window.addEventListener("afterprint", resizeAll);
})();
