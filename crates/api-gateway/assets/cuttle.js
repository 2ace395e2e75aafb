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
  // A running task's log: new lines arrive as server-sent events; at the end, the page is
  // loaded again to show how the task ended.
  function follow() {
    const log = document.getElementById("log");
    const url = log && log.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    source.onmessage = function (e) {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(e.data.endsWith("\n") ? e.data : e.data + "\n"));
      if (atBottom) log.scrollTop = log.scrollHeight;
    };
    source.addEventListener("end", function () {
      source.close();
      window.location.reload();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    setInterval(refresh, 1000);
    follow();
  });
})();
