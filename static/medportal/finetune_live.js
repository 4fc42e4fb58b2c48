// The live fine-tune job page. The server renders the current state; this script draws the
// loss and learning-rate curves (Chart.js) from the embedded snapshot, then follows the job
// over its WebSocket (ws/training/jobs/<id>/, protocol in docs/training-ui.md):
//   {"type": "snapshot", ...}  the whole state: replace everything (first frame, after a retry)
//   {"type": "update", ...}    the same fields, but train/eval hold only the new points
//   {"type": "error", code, message} then a close with 4401 / 4403 / 4404: do not reconnect
// Any other close reconnects with a backoff; the server's first frame is a full snapshot, so
// nothing is lost while the socket was down.
(function () {
  "use strict";
  var root = document.getElementById("job-live");
  var initial = document.getElementById("job-snapshot");
  if (!root || !initial) return;
  var labels = JSON.parse(document.getElementById("job-live-labels").textContent);
  var snap = JSON.parse(initial.textContent);
  var train = [];
  var evals = [];
  var BADGE = { queued: "text-bg-secondary", running: "text-bg-primary", succeeded: "text-bg-success", failed: "text-bg-danger", cancelled: "text-bg-warning" };
  var BAR = { running: "progress-bar-striped progress-bar-animated", succeeded: "bg-success", failed: "bg-danger", cancelled: "bg-warning" };

  // ---- formatting (the same as the server's template filters) ----------------------------
  function fill(template, values) {
    return template.replace(/%\((\w+)\)(02)?d/g, function (_m, key, pad) {
      var v = String(values[key]);
      return pad && v.length < 2 ? "0" + v : v;
    });
  }
  function duration(value) {
    if (value === null || value === undefined || value === "") return "—";
    var s = Math.round(Number(value));
    if (s < 60) return fill(labels.duration.s, { s: s });
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) return fill(labels.duration.m, { m: m, s: s });
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) return fill(labels.duration.h, { h: h, m: m });
    return fill(labels.duration.d, { d: Math.floor(h / 24), h: h % 24 });
  }
  function fixed(n) { return function (v) { return v === null || v === undefined ? "—" : Number(v).toFixed(n); }; }
  function exp(v) {
    if (v === null || v === undefined) return "—";
    var parts = Number(v).toExponential(2).split("e");
    var e = parts[1].replace("+", "");
    var sign = e.charAt(0) === "-" ? "-" : "+";
    e = e.replace("-", "");
    return parts[0] + "e" + sign + (e.length < 2 ? "0" + e : e);
  }
  // Times are shown in the server's time zone (data-time-zone, Django's current one), as the
  // server-rendered ones are, not in the browser's: "Y-m-d H:i:s".
  var timeZone = root.getAttribute("data-time-zone") || undefined;
  var timeParts = null;
  try {
    timeParts = new Intl.DateTimeFormat("en-US", {
      timeZone: timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit"
    });
  } catch (e) {
    timeParts = new Intl.DateTimeFormat("en-US", {
      hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"
    });
  }
  function time(v) {
    if (!v) return "—";
    var d = new Date(v);
    if (isNaN(d.getTime())) return String(v);
    var f = {};
    timeParts.formatToParts(d).forEach(function (part) { f[part.type] = part.value; });
    return f.year + "-" + f.month + "-" + f.day + " " + f.hour + ":" + f.minute + ":" + f.second;
  }
  var FORMAT = {
    epoch: fixed(2),
    eta_seconds: duration,
    tokens_per_second: fixed(1),
    learning_rate: exp,
    train_loss_first: fixed(4),
    train_loss_last: fixed(4),
    eval_loss: fixed(4),
    total_steps: function (v) { return v ? String(v) : "?"; },
    worker: function (v) { return v || "—"; },
    heartbeat_at: time,
    started_at: time,
    finished_at: time,
    "template.training_fingerprint": function (v) { return v ? String(v).slice(0, 16) : "—"; },
    "template.serving_fingerprint": function (v) { return v ? String(v).slice(0, 16) : "—"; }
  };
  function lookup(obj, path) {
    return path.split(".").reduce(function (o, k) { return o === null || o === undefined ? undefined : o[k]; }, obj);
  }

  // ---- charts ------------------------------------------------------------------------------
  var lossCanvas = document.getElementById("loss-chart");
  var lrCanvas = document.getElementById("lr-chart");
  var lossChart = null;
  var lrChart = null;
  function linear(title) {
    return { type: "linear", title: { display: true, text: title }, ticks: { precision: 0 } };
  }
  if (window.Chart && lossCanvas && lrCanvas) {
    var common = { animation: false, parsing: false, normalized: true, maintainAspectRatio: false, interaction: { mode: "nearest", intersect: false } };
    lossChart = new window.Chart(lossCanvas, {
      type: "line",
      data: {
        datasets: [
          { label: labels.train_loss, data: [], borderColor: "#0d6efd", backgroundColor: "#0d6efd", borderWidth: 1.5, pointRadius: 0, tension: 0 },
          { label: labels.eval_loss, data: [], borderColor: "#dc3545", backgroundColor: "#dc3545", borderWidth: 2, pointRadius: 3, tension: 0 }
        ]
      },
      options: Object.assign({}, common, { scales: { x: linear(labels.step), y: { title: { display: true, text: labels.loss } } } })
    });
    lrChart = new window.Chart(lrCanvas, {
      type: "line",
      data: { datasets: [{ label: labels.learning_rate, data: [], borderColor: "#198754", backgroundColor: "#198754", borderWidth: 1.5, pointRadius: 0, tension: 0 }] },
      options: Object.assign({}, common, {
        plugins: { legend: { display: false } },
        scales: { x: linear(labels.step), y: { ticks: { callback: function (v) { return exp(v); } } } }
      })
    });
  }
  function drawCurves() {
    if (lossCanvas) {
      lossCanvas.dataset.trainPoints = String(train.length);
      lossCanvas.dataset.evalPoints = String(evals.length);
    }
    var none = document.getElementById("no-points");
    if (none) none.hidden = train.length + evals.length > 0;
    if (!lossChart) return;
    lossChart.data.datasets[0].data = train.filter(function (p) { return p[1] !== null; }).map(function (p) { return { x: p[0], y: p[1] }; });
    lossChart.data.datasets[1].data = evals.filter(function (p) { return p[1] !== null; }).map(function (p) { return { x: p[0], y: p[1] }; });
    lrChart.data.datasets[0].data = train.filter(function (p) { return p[2] !== null; }).map(function (p) { return { x: p[0], y: p[2] }; });
    lossChart.update("none");
    lrChart.update("none");
  }
  function merge(points, fresh) {
    if (!fresh || !fresh.length) return points;
    var last = points.length ? points[points.length - 1][0] : -1;
    fresh.forEach(function (p) {
      if (p[0] > last) { points.push(p); last = p[0]; }
    });
    return points;
  }

  // ---- the page ----------------------------------------------------------------------------
  function show(state) {
    root.dataset.status = state.status;
    root.dataset.version = String(state.version);
    var badge = root.querySelector("[data-live=status] .badge");
    if (badge) {
      badge.className = "badge status-badge " + (BADGE[state.status] || "text-bg-secondary");
      badge.dataset.status = state.status;
      badge.textContent = (labels.status && labels.status[state.status]) || state.status_label || state.status;
    }
    var pct = Math.max(0, Math.min(100, Math.floor((Number(state.progress) || 0) * 100)));
    var bar = document.getElementById("job-progress-bar");
    if (bar) {
      bar.style.width = pct + "%";
      bar.textContent = pct + "%";
      bar.className = "progress-bar " + (BAR[state.status] || "");
      bar.parentElement.setAttribute("aria-valuenow", String(pct));
    }
    root.querySelectorAll("[data-live]").forEach(function (el) {
      var key = el.dataset.live;
      if (key === "status") return;
      var value = lookup(state, key);
      if (value === undefined) return;
      var text = FORMAT[key] ? FORMAT[key](value) : value === null || value === "" ? (key === "log_tail" || key === "error" ? "" : "—") : String(value);
      if (el.textContent === text) return;
      if (key === "log_tail") {
        var atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
        el.textContent = text;
        if (atBottom) el.scrollTop = el.scrollHeight;
      } else {
        el.textContent = text;
      }
    });
    var when = {
      can_cancel: !!state.can_cancel,
      can_retry: !!state.can_retry,
      cancel_requested: !!state.cancel_requested && state.status === "running",
      error: !!state.error,
      adapter: !!state.adapter_path,
      no_adapter: !state.adapter_path,
      succeeded: state.status === "succeeded"
    };
    root.querySelectorAll("[data-show-if]").forEach(function (el) {
      el.hidden = !when[el.dataset.showIf];
    });
    var match = state.template ? state.template.match : null;
    var key = match === true ? "true" : match === false ? "false" : "null";
    root.querySelectorAll("[data-template-match]").forEach(function (el) {
      el.hidden = el.dataset.templateMatch !== key;
    });
  }

  function apply(frame) {
    if (frame.type === "snapshot") {
      train = (frame.train || []).slice();
      evals = (frame.eval || []).slice();
    } else {
      train = merge(train, frame.train);
      evals = merge(evals, frame.eval);
    }
    snap = frame;
    show(frame);
    drawCurves();
  }

  // ---- the socket --------------------------------------------------------------------------
  var stateBadge = document.getElementById("live-state");
  function setState(name) {
    if (!stateBadge) return;
    stateBadge.dataset.state = name;
    stateBadge.className = "badge small me-auto " + (name === "live" ? "text-bg-success" : name === "refused" ? "text-bg-danger" : "text-bg-light border");
    var label = stateBadge.querySelector("[data-live-state-label]");
    if (label) label.textContent = labels.states[name] || name;
  }
  var retries = 0;
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
    } catch (e) {
      setState("offline");
      return;
    }
    setState(retries ? "reconnecting" : "connecting");
    socket.onopen = function () { retries = 0; };
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "snapshot" || frame.type === "update") {
        setState("live");
        apply(frame);
      }
    };
    socket.onclose = function (event) {
      if (event.code >= 4400 && event.code < 4500) {
        setState("refused");
        return;
      }
      retries += 1;
      setState("reconnecting");
      window.setTimeout(connect, Math.min(15000, 1000 * Math.pow(2, Math.min(retries - 1, 4))));
    };
  }

  apply(Object.assign({ type: "snapshot" }, snap));
  if ("WebSocket" in window) connect();
})();
