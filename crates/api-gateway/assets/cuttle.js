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
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    setInterval(refresh, 1000);
  });
})();
