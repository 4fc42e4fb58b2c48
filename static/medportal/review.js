// Reviewing at speed, on the pair list and the pair page. No inline script (the pages run
// under a Content-Security-Policy): everything is wired through data- attributes.
//
// Pair list: the header checkbox [data-select-page] ticks every row of the page.
// Pair page: keyboard shortcuts, as in Label Studio / Argilla —
//   a / r / c      choose approve / reject / request changes (r and c then focus the comment)
//   Ctrl+Enter     record the review and open the next pair ([data-shortcut=submit-next])
//   j, n / k, p    next / previous pair ([data-shortcut=next] / [data-shortcut=previous])
//   ?              show or hide the help overlay (#shortcut-help)
//   Esc            leave the text box; close the help
// Letter keys are ignored while the user types in a text field, select or editable element.
(function () {
  "use strict";

  var selectPage = document.querySelector("[data-select-page]");
  if (selectPage) {
    selectPage.addEventListener("change", function () {
      document.querySelectorAll("#pair-list input[name=ids]").forEach(function (box) {
        box.checked = selectPage.checked;
      });
    });
  }

  var help = document.getElementById("shortcut-help");
  if (!help) return;
  var form = document.getElementById("review-form");

  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }
  document.querySelectorAll("[data-shortcut-help]").forEach(function (el) {
    el.addEventListener("click", function () { toggleHelp(); });
  });
  document.querySelectorAll("[data-shortcut-close]").forEach(function (el) {
    el.addEventListener("click", function () { toggleHelp(false); });
  });

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable) return true;
    if (tag !== "INPUT") return false;
    return ["checkbox", "radio", "button", "submit", "reset", "hidden"].indexOf(el.type) < 0;
  }

  function decide(value, focusComment) {
    if (!form) return false;
    var radio = form.querySelector("input[name=decision][value=" + value + "]");
    if (!radio) return false;
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    if (focusComment) {
      var comment = form.querySelector("textarea[name=comment]");
      if (comment) comment.focus();
    }
    return true;
  }

  function follow(name) {
    var link = document.querySelector("a[data-shortcut=" + name + "]");
    if (!link) return false;
    window.location.assign(link.href);
    return true;
  }

  function submitNext() {
    var button = form && form.querySelector("[data-shortcut=submit-next]");
    if (!button) return false;
    if (form.requestSubmit) form.requestSubmit(button);
    else button.click();
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing) return;
    var target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      if (submitNext()) event.preventDefault();
      return;
    }
    if (event.key === "Escape") {
      if (!help.hidden) toggleHelp(false);
      else if (typing(target)) target.blur();
      return;
    }
    if (typing(target) || event.ctrlKey || event.metaKey || event.altKey) return;
    var done = false;
    switch (event.key) {
      case "?": toggleHelp(); done = true; break;
      case "a": done = decide("approve", false); break;
      case "r": done = decide("reject", true); break;
      case "c": done = decide("request_changes", true); break;
      case "j": case "n": done = follow("next"); break;
      case "k": case "p": done = follow("previous"); break;
    }
    if (done) event.preventDefault();
  });
})();
