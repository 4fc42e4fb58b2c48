// Behaviour shared by every page, bound here because the Content-Security-Policy allows no
// inline event handlers (onclick=…, onchange=…):
//   <select data-autosubmit>            submits its form when changed (language, list filters)
//   <button data-print>                 opens the print dialog
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches("[data-autosubmit]") && el.form) {
      if (el.form.requestSubmit) el.form.requestSubmit(); else el.form.submit();
    }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-print]");
    if (button) window.print();
  });
})();
