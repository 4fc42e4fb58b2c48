// New fine-tune job form: choosing a preset refills every setting with that preset's values
// (they are embedded in the page as JSON), and the hidden config_preset remembers which preset
// the settings came from. The radio's change event then bubbles to the form, whose htmx
// trigger refreshes the estimate with the new values. No third-party code beyond htmx.
(function () {
  "use strict";
  var form = document.getElementById("job-form");
  var data = document.getElementById("preset-values");
  if (!form || !data) return;
  var presets = JSON.parse(data.textContent);
  var filledFrom = form.querySelector("input[name=config_preset]");

  function apply(name) {
    var values = presets[name];
    if (!values) return;
    Object.keys(values).forEach(function (key) {
      var input = form.querySelector("[data-config-field='" + key + "']");
      if (!input) return;
      var value = values[key];
      if (input.type === "checkbox") {
        input.checked = value === true;
      } else {
        input.value = value === null || value === undefined ? "" : String(value);
      }
    });
    if (filledFrom) filledFrom.value = name;
  }

  // "Evaluate base and tuned when done" needs a test split: choosing a version without one
  // unticks it and shows why (#evaluate-note); going back to one with a test split ticks it
  // again if it was this script that unticked it.
  var evaluateBox = document.getElementById("evaluate-choice");
  var evaluate = form.querySelector("input[name=evaluate_after]");
  var version = form.querySelector("select[name=dataset_version]");
  var note = document.getElementById("evaluate-note");
  if (evaluateBox && evaluate && version && note) {
    var withTest = (evaluateBox.getAttribute("data-test-split-versions") || "").split(",").filter(Boolean);
    var unticked = false;
    version.addEventListener("change", function () {
      var hasTest = withTest.indexOf(version.value) !== -1;
      if (!hasTest && evaluate.checked) {
        evaluate.checked = false;
        unticked = true;
      } else if (hasTest && unticked) {
        evaluate.checked = true;
        unticked = false;
      }
      note.hidden = hasTest || evaluate.checked;
    });
    evaluate.addEventListener("change", function () {
      unticked = false;
      if (evaluate.checked) note.hidden = true;
    });
  }

  form.querySelectorAll("input[name=preset]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (radio.checked) apply(radio.value);
    });
  });
})();
