// Arena battle page: stream both answers side by side (frames carry side "a" or "b"),
// render them as sanitised markdown when done, enable the vote buttons.
(function () {
  "use strict";
  var arena = document.getElementById("arena");
  if (!arena) return;
  var errorBox = document.getElementById("arena-error");
  var texts = { a: "", b: "" };
  var finished = {};

  function render(side, text) {
    // static/medportal/markdown.js: model output is untrusted.
    window.MedPortalMarkdown.render(document.getElementById("answer-" + side), text);
  }

  ["a", "b"].forEach(function (side) {
    var el = document.getElementById("answer-" + side);
    if (el.textContent.trim()) render(side, el.textContent);
  });
  if (arena.dataset.answered) return;

  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var socket = new WebSocket(scheme + location.host + arena.dataset.socket);
  socket.onopen = function () { socket.send(JSON.stringify({ type: "run" })); };
  socket.onmessage = function (event) {
    var frame = JSON.parse(event.data);
    if (frame.type === "token") {
      texts[frame.side] += frame.text;
      document.getElementById("answer-" + frame.side).textContent = texts[frame.side];
    } else if (frame.type === "done") {
      finished[frame.side] = true;
      render(frame.side, frame.content);
      if (finished.a && finished.b) {
        document.querySelectorAll('#vote-form button[name="vote"]').forEach(function (b) { b.disabled = false; });
        socket.close();
      }
    } else if (frame.type === "error") {
      // A failed side gets the page's translated text: the server's reason would name the model.
      var side = frame.details && frame.details.side;
      errorBox.textContent = (side && arena.dataset["failed" + side.toUpperCase()]) || frame.message;
      errorBox.classList.remove("d-none");
    }
  };
})();
