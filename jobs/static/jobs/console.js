// The Job admin's live parts, served by the kit (no CDN): relative times
// that stay current, the job page following its job through the JSON API
// until it ends, and the list's live mode refreshing its rows in place.
(function () {
  "use strict";

  function ago(date, now) {
    var seconds = Math.round((now - date) / 1000);
    var future = seconds < 0;
    seconds = Math.abs(seconds);
    var text;
    if (seconds < 60) text = seconds + " s";
    else if (seconds < 3600) text = Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    else if (seconds < 86400) text = Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    else text = Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
    return future ? "in " + text : text + " ago";
  }

  function refreshTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time.job-time[datetime]").forEach(function (el) {
      el.textContent = ago(new Date(el.getAttribute("datetime")), now);
    });
  }

  function timeElement(iso) {
    if (!iso) return document.createTextNode("-");
    var el = document.createElement("time");
    el.className = "job-time";
    el.setAttribute("datetime", iso);
    el.title = new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    el.textContent = ago(new Date(iso), Date.now());
    return el;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 60) return seconds.toFixed(2) + " s";
    var whole = Math.round(seconds), minutes = Math.floor(whole / 60);
    if (minutes < 60) return minutes + " min " + (whole % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function setField(name, node) {
    var cell = document.querySelector(".field-" + name + " .readonly");
    if (!cell) return;
    cell.replaceChildren(node);
  }

  // -- The job page ---------------------------------------------------------
  function followJob(live) {
    var url = live.dataset.api;
    var colours = JSON.parse(document.getElementById("job-status-colours").textContent);
    var interval = parseInt(live.dataset.interval || "2000", 10);
    var finished = ["SUCCESS", "FAILURE", "REVOKED", "DEAD", "LOST"];

    function apply(job) {
      var badge = document.querySelector(".field-status_column .job-status");
      if (badge && badge.textContent !== job.status) {
        badge.textContent = job.status;
        badge.style.background = colours[job.status] || "#6c757d";
      }
      var bar = document.querySelector("progress.job-progress");
      if (bar) bar.value = job.progress.percent;
      var text = document.querySelector(".job-progress-text");
      if (text) text.textContent = job.progress.percent + " % " + (job.progress.message || "");
      var why = document.querySelector(".job-explanation");
      if (why) why.textContent = job.explanation || "It has finished.";
      setField("queued_time", timeElement(job.queued_at));
      setField("started_time", timeElement(job.started_at));
      setField("finished_time", timeElement(job.finished_at));
      setField("runtime_column", document.createTextNode(duration(job.runtime_seconds)));
      live.dataset.status = job.status;
    }

    function finish() {
      // The result, traceback and buttons come from the server: swap the
      // page's content in place, once, instead of reloading it.
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
          if (fresh) document.getElementById("content").replaceWith(fresh);
          refreshTimes();
          var again = document.getElementById("job-live");
          if (again) again.dataset.finished = "true";
        });
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { if (!response.ok) throw new Error(response.status); return response.json(); })
        .then(function (job) {
          apply(job);
          if (finished.indexOf(job.status) >= 0) finish();
          else window.setTimeout(poll, interval);
        })
        .catch(function () { window.setTimeout(poll, interval * 3); });
    }
    window.setTimeout(poll, interval);
  }

  // -- The list's live mode -------------------------------------------------
  function liveList(toggle) {
    var key = "jobs-list-live";
    var interval = parseInt(toggle.dataset.interval || "5000", 10);
    var timer = null;

    function refresh() {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var rows = fresh.querySelector("#result_list tbody");
          var current = document.querySelector("#result_list tbody");
          if (rows && current) {
            var checked = {};
            current.querySelectorAll("input.action-select:checked").forEach(function (box) { checked[box.value] = true; });
            rows.querySelectorAll("input.action-select").forEach(function (box) {
              if (checked[box.value]) { box.checked = true; box.closest("tr").classList.add("selected"); }
            });
            current.replaceWith(rows);
            refreshTimes(rows);
          }
          var stamp = document.getElementById("job-live-stamp");
          if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
        })
        .finally(function () { if (toggle.checked) timer = window.setTimeout(refresh, interval); });
    }

    function set(on) {
      toggle.checked = on;
      window.localStorage.setItem(key, on ? "on" : "off");
      window.clearTimeout(timer);
      if (on) refresh();
    }
    toggle.addEventListener("change", function () { set(toggle.checked); });
    if (window.localStorage.getItem(key) === "on") set(true);
  }

  // -- The operations dashboard ---------------------------------------------
  function refreshInPlace(panel) {
    var interval = parseInt(panel.dataset.refresh, 10);
    function refresh() {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) { if (!response.ok) throw new Error(response.status); return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("#content-main.ops-dashboard");
          if (fresh) panel.replaceChildren.apply(panel, Array.from(fresh.childNodes));
        })
        .catch(function () { /* keep the last charts; try again next time */ })
        .finally(function () { window.setTimeout(refresh, interval); });
    }
    window.setTimeout(refresh, interval);
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes();
    window.setInterval(refreshTimes, 1000);
    var live = document.getElementById("job-live");
    if (live && live.dataset.finished !== "true") followJob(live);
    var toggle = document.getElementById("job-list-live");
    if (toggle) liveList(toggle);
    var panel = document.querySelector("#content-main.ops-dashboard[data-refresh]");
    if (panel) refreshInPlace(panel);
  });
})();
