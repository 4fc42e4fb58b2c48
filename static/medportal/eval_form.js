// New evaluation form: generation presets fill in their settings; the base-model run needs a job.
(function () {
  "use strict";
  // Choosing a generation preset fills in its settings (the server validates whatever is posted).
  var presets = JSON.parse(document.getElementById("generation-presets").textContent);
  document.querySelectorAll("input[name=generation]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      var values = presets[radio.value];
      if (!values) return;
      Object.keys(values).forEach(function (name) {
        var input = document.querySelector("[data-param=" + name + "]");
        if (input) input.value = values[name] === null ? "" : String(values[name]);
      });
    });
  });
  // The base-model run only makes sense next to a fine-tuned one.
  var job = document.getElementById("id_job");
  var alsoBase = document.getElementById("id_also_base");
  function sync() { if (job && alsoBase) alsoBase.disabled = !job.value; }
  if (job) job.addEventListener("change", sync);
  sync();
})();
