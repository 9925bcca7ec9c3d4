// Show each UTC timestamp in the viewer's own time zone; the title keeps the UTC value.
// A static file, not an inline script: the Content-Security-Policy allows scripts from here only.
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = el.getAttribute("datetime"); el.textContent = d.toLocaleString(); }
    });
  }
  localTimes(document);
  document.addEventListener("htmx:afterSwap", function (e) { localTimes(e.target); });
})();
