// Import progress: polls the batch's progress endpoint once a second while it is queued or
// running, updates the bar, and reloads the page when the import has finished so the
// server renders the report. Plain fetch(); no third-party code.
(function () {
  "use strict";
  var box = document.getElementById("import-status");
  if (!box || box.dataset.running !== "1") return;
  var url = box.dataset.progressUrl;
  var bar = document.getElementById("import-progress-bar");
  var rows = document.getElementById("import-rows");
  var phase = document.getElementById("import-phase");
  var labels = {
    queued: box.dataset.labelQueued || "Waiting for the worker…",
    reading: box.dataset.labelReading || "Reading the file…",
    saving: box.dataset.labelSaving || "Saving…"
  };
  var failures = 0;

  function show(data) {
    if (bar) {
      bar.style.width = data.percent + "%";
      bar.textContent = data.percent + "%";
      if (bar.parentElement) bar.parentElement.setAttribute("aria-valuenow", String(data.percent));
    }
    if (rows) {
      rows.textContent = data.rows_done + " / " + (data.rows_total === null ? "?" : data.rows_total);
    }
    if (phase && labels[data.phase]) phase.textContent = labels[data.phase];
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        show(data);
        if (data.finished) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () {
        failures += 1;
        window.setTimeout(poll, Math.min(10000, 1000 * Math.pow(2, failures)));
      });
  }

  window.setTimeout(poll, 1000);
})();
