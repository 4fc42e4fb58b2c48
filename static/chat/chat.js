// MedPortal chat page: stream answers over the WebSocket, render markdown safely (marked +
// DOMPurify; model output is never trusted as HTML), stop / regenerate, ratings by fetch.
(function () {
  "use strict";

  // Parameter presets on any settings form (new chat and the chat page).
  document.querySelectorAll("[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = button.closest("form");
      var holder = document.getElementById("settings-form");
      var seed = { temperature: 0.1, top_p: 0.9, top_k: 40, max_new_tokens: 512, repetition_penalty: 1.1 };
      var values = seed;
      if (holder && holder.dataset[button.dataset.preset]) values = JSON.parse(holder.dataset[button.dataset.preset]);
      else if (button.dataset.preset === "greedy") values = Object.assign({}, seed, { temperature: 0, repetition_penalty: 1.0 });
      Object.keys(values).forEach(function (k) {
        var input = form.querySelector('[name="' + k + '"]');
        if (input && values[k] !== null) input.value = values[k];
      });
    });
  });

  var log = document.getElementById("chat-log");
  if (!log) return;
  var i18n = document.getElementById("chat-i18n").dataset;
  var input = document.getElementById("chat-input");
  var sendBtn = document.getElementById("chat-send");
  var stopBtn = document.getElementById("chat-stop");
  var regenBtn = document.getElementById("chat-regenerate");
  var errorBox = document.getElementById("chat-error");
  var stateBadge = document.getElementById("socket-state");
  var rateUrl = log.dataset.rateUrl; // ends with /0/rate/
  var current = null; // the assistant bubble being streamed
  var buffer = "";
  var socket = null;

  function renderMarkdown(el, text) {
    if (window.marked && window.DOMPurify) {
      el.style.whiteSpace = "normal";
      el.innerHTML = window.DOMPurify.sanitize(window.marked.parse(text), { USE_PROFILES: { html: true } });
    } else {
      el.textContent = text;
    }
  }

  function renderExisting() {
    log.querySelectorAll(".chat-markdown").forEach(function (el) { renderMarkdown(el, el.textContent); });
  }

  function scroll() { log.scrollTop = log.scrollHeight; }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.classList.remove("d-none");
  }

  function busy(on) {
    sendBtn.disabled = on;
    regenBtn.disabled = on;
    stopBtn.classList.toggle("d-none", !on);
  }

  function bubble(role, text, label) {
    var empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
    var div = document.createElement("div");
    div.className = "chat-msg mb-3 " + (role === "user" ? "chat-user" : "chat-assistant");
    div.dataset.role = role;
    var head = document.createElement("div");
    head.className = "small text-muted";
    head.textContent = role === "user" ? i18n.you : label || "";
    var body = document.createElement("div");
    body.className = "chat-content" + (role === "assistant" ? " chat-markdown" : "");
    body.style.whiteSpace = "pre-wrap";
    body.textContent = text;
    div.appendChild(head);
    div.appendChild(body);
    log.appendChild(div);
    scroll();
    return div;
  }

  function attachRating(div, messageId) {
    var tpl = document.getElementById("rating-template");
    if (!tpl) return;
    var node = tpl.content.cloneNode(true);
    node.querySelectorAll("[id]").forEach(function (el) { el.id = el.id.replace(/-X$/, "-" + messageId); });
    node.querySelectorAll("label[for]").forEach(function (el) { el.htmlFor = el.htmlFor.replace(/-X$/, "-" + messageId); });
    node.querySelector("form").action = rateUrl.replace("/0/", "/" + messageId + "/");
    div.appendChild(node);
    bindRating(div.querySelector(".rating-form"));
  }

  function bindRating(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = form.querySelector(".rating-result");
      fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
        .then(function (res) {
          if (!res.ok) { result.className = "rating-result ms-2 text-danger"; result.textContent = res.data.error.message; return; }
          result.className = "rating-result ms-2 text-success";
          result.textContent = i18n.rated + (res.data.correction_pair ? " " + i18n.correction + res.data.correction_pair : "");
        })
        .catch(function (e) { result.className = "rating-result ms-2 text-danger"; result.textContent = String(e); });
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + log.dataset.socket);
    stateBadge.textContent = stateBadge.dataset.connecting;
    socket.onopen = function () { stateBadge.textContent = stateBadge.dataset.open; stateBadge.className = "badge text-bg-success"; };
    socket.onclose = function (event) {
      stateBadge.textContent = stateBadge.dataset.closed + (event.code >= 4000 ? " (" + event.code + ")" : "");
      stateBadge.className = "badge text-bg-danger";
      busy(false);
    };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      switch (frame.type) {
        case "ready":
          break;
        case "user_message":
          bubble("user", frame.content).dataset.messageId = frame.id;
          break;
        case "start":
          buffer = "";
          current = bubble("assistant", "", document.getElementById("model-label").textContent);
          current.querySelector(".chat-content").textContent = i18n.busy;
          busy(true);
          break;
        case "token":
          if (!current) break;
          buffer += frame.text;
          current.querySelector(".chat-content").textContent = buffer; // plain text while streaming
          scroll();
          break;
        case "done":
          busy(false);
          if (!current) break;
          current.dataset.messageId = frame.message_id;
          renderMarkdown(current.querySelector(".chat-content"), frame.content);
          var head = current.querySelector(".small");
          head.textContent = frame.model + (frame.ttft_ms !== null ? " · " + frame.ttft_ms + " ms · " + frame.tokens_per_second + " tok/s" : "") +
            (frame.finish_reason === "cancelled" ? " · " + i18n.stopped : "");
          attachRating(current, frame.message_id);
          current = null;
          scroll();
          break;
        case "error":
          busy(false);
          if (current && !buffer) { current.remove(); current = null; }
          showError(frame.message);
          break;
      }
    };
  }

  function send(frame) {
    errorBox.classList.add("d-none");
    if (!socket || socket.readyState !== WebSocket.OPEN) { showError(stateBadge.dataset.closed); return; }
    socket.send(JSON.stringify(frame));
  }

  document.getElementById("chat-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    send({ type: "message", content: text });
    input.value = "";
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      document.getElementById("chat-form").requestSubmit();
    }
  });
  stopBtn.addEventListener("click", function () { send({ type: "stop" }); });
  regenBtn.addEventListener("click", function () {
    var last = log.querySelectorAll(".chat-assistant");
    if (last.length) last[last.length - 1].remove();
    send({ type: "regenerate" });
  });
  log.querySelectorAll(".rating-form").forEach(bindRating);
  renderExisting(); // deferred scripts run in order: marked and DOMPurify are loaded
  connect();
})();
