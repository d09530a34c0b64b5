// pgjobs dashboard: live updates over server-sent events, polling when the
// stream is down. No build step: this file is served as written.
(function () {
  "use strict";
  var base = document.body.dataset.base || "";
  var TERMINAL = { completed: 1, dead: 1, canceled: 1 };

  // The job page: progress bar, state and attempt follow the job.
  var live = document.querySelector("[data-job-live]");
  if (live) {
    var id = live.dataset.jobLive;
    var lastState = live.dataset.state;
    var apply = function (job) {
      var pct = job.state === "completed" ? 100 : Number(job.progress || 0);
      document.getElementById("job-bar").style.width = pct.toFixed(1) + "%";
      document.getElementById("job-progress").textContent = pct.toFixed(1) + "%";
      document.getElementById("job-message").textContent = job.progress_message || "";
      document.getElementById("job-attempt").textContent = job.attempt + "/" + job.max_attempts;
      var badge = document.getElementById("job-state");
      badge.textContent = job.state;
      badge.className = "state state-" + job.state;
      if (job.state !== lastState) {
        lastState = job.state;
        live.dataset.state = job.state;
        // History, actions and timestamps change with the state: fetch them anew.
        if (window.htmx) {
          htmx.ajax("GET", window.location.pathname, { target: "#attempts", select: "#attempts", swap: "outerHTML" });
        }
      }
    };
    follow(base + "/api/jobs/" + id + "/events", "job", apply, function () {
      return fetch(base + "/api/jobs/" + id, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) { if (job) { apply(job); } return job && TERMINAL[job.state]; });
    });
  }

  // List pages: reload the live region when the viewer's jobs change.
  var region = document.querySelector("[data-live-region]");
  if (region && window.htmx) {
    var refresh = function () {
      htmx.ajax("GET", window.location.pathname + window.location.search,
        { target: "#" + region.id, select: "#" + region.id, swap: "outerHTML" });
      region = document.querySelector("[data-live-region]");
    };
    var first = true;
    follow(base + "/events", "changed", function () {
      if (first) { first = false; return; }  // the page already shows this
      refresh();
    }, function () { refresh(); return Promise.resolve(false); });
  }

  // An EventSource, and a poll every 3 s while it is down (it reconnects by itself).
  function follow(url, name, onEvent, poll) {
    var timer = null;
    var startPolling = function () {
      if (timer) { return; }
      timer = setInterval(function () {
        poll().then(function (done) { if (done) { clearInterval(timer); } });
      }, 3000);
    };
    if (!window.EventSource) { startPolling(); return; }
    var source = new EventSource(url);
    source.addEventListener(name, function (e) { onEvent(JSON.parse(e.data)); });
    source.addEventListener("end", function () { source.close(); });
    source.onopen = function () { if (timer) { clearInterval(timer); timer = null; } };
    source.onerror = function () { if (source.readyState !== EventSource.CLOSED || !timer) { startPolling(); } };
  }
})();
