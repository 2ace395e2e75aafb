// Cuttle's web UI: the little it does in the browser. Pages work without it.
"use strict";
(function () {
  function ago(then) {
    const s = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }
  function refresh() {
    document.querySelectorAll("time[data-relative]").forEach(function (t) {
      const then = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(then)) t.textContent = ago(then);
    });
  }
  // A deployment's log by step and target, as the server cuts it (ui/log_sections.rs): a
  // line arriving live goes to its step's section, inside it to its target's.
  function message(line) {
    const m = /^\s*\S+\s+\S+\s+(.*)$/.exec(line);
    return m ? m[1] : "";
  }
  function element(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }
  function section(log, title, step) {
    const d = element("details", "section");
    d.open = true;
    d.setAttribute("data-step", step);
    const summary = element("summary", "", title);
    d.appendChild(summary);
    d.appendChild(element("pre", "log"));
    log.appendChild(d);
    return d;
  }
  function sectioned(log, line) {
    const msg = message(line.replace(/\n$/, ""));
    const head = /^=== step (\d+): (.*) ===$/.exec(msg);
    if (head) {
      section(log, "Step " + head[1] + ": " + head[2], head[1]).querySelector("pre").textContent = line;
      return;
    }
    const steps = log.querySelectorAll("details.section");
    let current = steps.length ? steps[steps.length - 1] : null;
    const end = /^=== step (\d+): .*: (succeeded|failed|stopped|skipped)( in | after | \()/.exec(msg);
    if (end) {
      let own = null;
      steps.forEach(function (d) { if (d.getAttribute("data-step") === end[1]) own = d; });
      if (!own || end[2] === "skipped") own = section(log, "Step " + end[1], end[1]);
      own.querySelector("pre").appendChild(document.createTextNode(line));
      const summary = own.querySelector("summary");
      let badge = summary.querySelector(".outcome");
      if (!badge) { summary.appendChild(document.createTextNode(" ")); badge = summary.appendChild(element("span")); }
      badge.className = "outcome outcome-" + end[2];
      badge.textContent = end[2];
      if (end[2] === "succeeded" || end[2] === "skipped") own.open = false;
      return;
    }
    if (!current) current = section(log, "Before the steps", "");
    // After a step ended, lines until the next step (the outcome, at the end) are their own.
    else if (current.getAttribute("data-step") !== "" && current.querySelector("summary .outcome:not(.outcome-running)")) {
      current = section(log, "After the steps", "");
    }
    const tagged = /^\[([^\]\s]+)\](?: |$)/.exec(msg);
    if (tagged && current.getAttribute("data-step") !== "") {
      let target = null;
      current.querySelectorAll("details.target").forEach(function (t) {
        if (t.getAttribute("data-target") === tagged[1]) target = t;
      });
      if (!target) {
        target = element("details", "target");
        target.open = true;
        target.setAttribute("data-target", tagged[1]);
        target.appendChild(element("summary", "", tagged[1]));
        target.appendChild(element("pre", "log"));
        current.appendChild(target);
      }
      target.querySelector("pre").appendChild(document.createTextNode(line));
      return;
    }
    current.querySelector("pre").appendChild(document.createTextNode(line));
  }
  // A running task's log: new lines arrive as server-sent events; at the end, the page is
  // loaded again to show how the task ended.
  function follow() {
    const log = document.getElementById("log");
    const url = log && log.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    source.onmessage = function (e) {
      // An event holds every whole line written since the last one.
      const line = e.data.endsWith("\n") ? e.data : e.data + "\n";
      if (log.classList.contains("log-sections")) {
        line.slice(0, -1).split("\n").forEach(function (l) { sectioned(log, l + "\n"); });
        return;
      }
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(line));
      if (atBottom) log.scrollTop = log.scrollHeight;
    };
    source.addEventListener("end", function () {
      source.close();
      window.location.reload();
    });
  }
  // Parts of a page marked data-refresh="N" are read again every N seconds and put in place
  // (the dashboard's cells); without the script the page reloads itself instead.
  function live() {
    document.querySelectorAll("[data-refresh][id]").forEach(function (part) {
      const every = 1000 * (parseInt(part.getAttribute("data-refresh"), 10) || 5);
      setInterval(function () {
        fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
          .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
          .then(function (text) {
            if (!text) return;
            const fresh = new DOMParser().parseFromString(text, "text/html").getElementById(part.id);
            if (fresh) { part.replaceChildren.apply(part, Array.from(fresh.childNodes)); refresh(); }
          })
          .catch(function () {});
      }, every);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    setInterval(refresh, 1000);
    follow();
    live();
  });
})();
