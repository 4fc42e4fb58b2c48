// MedPortal chat page: stream answers over the WebSocket, render markdown safely (marked +
// DOMPurify; model output is never trusted as HTML), stop / regenerate, edit and resend the
// last question, delete a message, retry a failed or interrupted answer, ratings by fetch.
// The server stores every answer that started (complete, stopped, interrupted, failed) and
// answers one question per chat at a time (a second tab is told "busy").
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
  var editing = null; // id of the question being edited
  var retrying = false; // a regenerate / retry was sent: its "start" replaces the last answer
  var generating = false;
  var reconnectDelay = 1000;
  var reloadOnOpen = false; // an answer was cut by the network: show what the server kept
  var editingBox = document.getElementById("chat-editing");

  function renderMarkdown(el, text) {
    window.MedPortalMarkdown.render(el, text); // static/medportal/markdown.js: model output is untrusted
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
    generating = on;
    sendBtn.disabled = on;
    regenBtn.disabled = on;
    stopBtn.classList.toggle("d-none", !on);
    log.querySelectorAll(".chat-actions button").forEach(function (b) { b.disabled = on; });
  }

  function bubbles() { return Array.prototype.slice.call(log.querySelectorAll(".chat-msg")); }

  function setStatus(div, status, text) {
    div.dataset.status = status;
    var head = div.querySelector(".chat-head");
    var old = head.querySelector(".chat-status");
    if (old) old.remove();
    if (!text) return;
    var badge = document.createElement("span");
    badge.className = "badge chat-status ms-1 " + (status === "failed" ? "text-bg-danger" : "text-bg-warning");
    badge.textContent = text;
    head.appendChild(badge);
  }

  function actionButton(action, label, icon) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-link btn-sm p-0 me-2 text-decoration-none";
    b.dataset.action = action;
    b.disabled = generating;
    var i = document.createElement("i");
    i.className = "bi " + icon;
    b.appendChild(i);
    b.appendChild(document.createTextNode(" " + label));
    return b;
  }

  // Edit on the last question, Retry on a last answer that failed or was interrupted (or a last
  // question left without one), Delete on every stored message.
  function refreshActions() {
    log.querySelectorAll(".chat-actions").forEach(function (el) { el.remove(); });
    var all = bubbles().filter(function (d) { return d.dataset.messageId; });
    var users = all.filter(function (d) { return d.dataset.role === "user"; });
    var lastUser = users[users.length - 1];
    var last = all[all.length - 1];
    all.forEach(function (div) {
      var bar = document.createElement("div");
      bar.className = "chat-actions small";
      if (div === lastUser) bar.appendChild(actionButton("edit", i18n.edit, "bi-pencil"));
      if (div === last && (div.dataset.role === "user" || div.dataset.status === "failed" || div.dataset.status === "interrupted")) {
        bar.appendChild(actionButton("retry", i18n.retry, "bi-arrow-repeat"));
      }
      bar.appendChild(actionButton("delete", i18n.delete, "bi-trash"));
      div.insertBefore(bar, div.querySelector(".chat-rating"));
    });
  }

  function setTitle(title) {
    if (!title) return;
    var crumb = document.getElementById("chat-title");
    if (crumb) crumb.textContent = title.length > 60 ? title.slice(0, 59) + "…" : title;
    var item = document.getElementById("chat-list-current");
    if (item) item.textContent = title.length > 40 ? title.slice(0, 39) + "…" : title;
    var sep = document.title.lastIndexOf(" · ");
    document.title = title + (sep >= 0 ? document.title.slice(sep) : "");
  }

  function stopEditing() {
    editing = null;
    editingBox.classList.add("d-none");
  }

  function bubble(role, text, label) {
    var empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
    var div = document.createElement("div");
    div.className = "chat-msg mb-3 " + (role === "user" ? "chat-user" : "chat-assistant");
    div.dataset.role = role;
    div.dataset.status = "complete";
    var head = document.createElement("div");
    head.className = "small text-muted chat-head";
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
    socket.onopen = function () {
      if (reloadOnOpen) { location.reload(); return; }
      reconnectDelay = 1000;
      stateBadge.textContent = stateBadge.dataset.open;
      stateBadge.className = "badge text-bg-success";
    };
    socket.onclose = function (event) {
      stateBadge.textContent = stateBadge.dataset.closed + (event.code >= 4000 ? " (" + event.code + ")" : "");
      stateBadge.className = "badge text-bg-danger";
      if (current) { setStatus(current, "interrupted", i18n.interrupted); current = null; reloadOnOpen = true; } // the server keeps it so
      busy(false);
      if (event.code < 4000) { // the network dropped: come back (a refusal stays closed)
        setTimeout(connect, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, 30000);
      }
    };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      switch (frame.type) {
        case "ready":
          break;
        case "user_message":
          if (frame.replaces) { // edited: the old question and what followed it leave the page
            var seen = false;
            bubbles().forEach(function (d) {
              if (d.dataset.messageId === String(frame.replaces)) seen = true;
              if (seen) d.remove();
            });
          }
          stopEditing();
          bubble("user", frame.content).dataset.messageId = frame.id;
          setTitle(frame.title);
          refreshActions();
          break;
        case "deleted":
          frame.ids.forEach(function (id) {
            var d = log.querySelector('.chat-msg[data-message-id="' + id + '"]');
            if (d) d.remove();
          });
          if (editing && frame.ids.indexOf(Number(editing)) >= 0) stopEditing();
          refreshActions();
          break;
        case "start":
          if (retrying) { // the last answer is replaced by this one
            var all = bubbles();
            var lastDiv = all[all.length - 1];
            if (lastDiv && lastDiv.dataset.role === "assistant") lastDiv.remove();
            retrying = false;
          }
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
          var head = current.querySelector(".chat-head");
          head.textContent = frame.model + (frame.ttft_ms !== null ? " · " + frame.ttft_ms + " ms · " + frame.tokens_per_second + " tok/s" : "") +
            (frame.finish_reason === "cancelled" ? " · " + i18n.stopped : "");
          if (frame.status === "interrupted") setStatus(current, "interrupted", i18n.interrupted);
          attachRating(current, frame.message_id);
          current = null;
          refreshActions();
          scroll();
          break;
        case "error":
          busy(false);
          retrying = false;
          if (frame.message_id && current) { // the failed answer is stored: it can be retried
            current.dataset.messageId = frame.message_id;
            current.querySelector(".chat-content").textContent = "";
            var err = document.createElement("div");
            err.className = "chat-error small text-danger";
            err.textContent = frame.message;
            current.appendChild(err);
            setStatus(current, "failed", i18n.failed);
            current = null;
            refreshActions();
          } else if (current && !buffer) { current.remove(); current = null; }
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
    if (editing) send({ type: "edit", message_id: Number(editing), content: text });
    else send({ type: "message", content: text });
    input.value = "";
  });
  document.getElementById("chat-edit-cancel").addEventListener("click", function () { stopEditing(); input.value = ""; });
  log.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button || generating) return;
    var div = button.closest(".chat-msg");
    var action = button.dataset.action;
    if (action === "edit") {
      editing = div.dataset.messageId;
      input.value = div.querySelector(".chat-content").textContent;
      editingBox.classList.remove("d-none");
      input.focus();
    } else if (action === "retry") {
      retrying = true;
      send({ type: "regenerate" });
    } else if (action === "delete") {
      if (window.confirm(div.dataset.role === "user" ? i18n.confirmDeleteQuestion : i18n.confirmDeleteAnswer)) {
        send({ type: "delete", message_id: Number(div.dataset.messageId) });
      }
    }
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      document.getElementById("chat-form").requestSubmit();
    }
  });
  stopBtn.addEventListener("click", function () { send({ type: "stop" }); });
  regenBtn.addEventListener("click", function () {
    retrying = true;
    send({ type: "regenerate" });
  });
  log.querySelectorAll(".rating-form").forEach(bindRating);
  renderExisting(); // deferred scripts run in order: marked and DOMPurify are loaded
  refreshActions();
  connect();
  scroll();
})();
