// The note page: a fact's span in the text and its entry in the list are linked. Hovering or
// focusing either outlines both; clicking a span scrolls its entry into view (and back).
(function () {
  "use strict";
  function both(id) {
    return document.querySelectorAll('[data-fact="' + CSS.escape(id) + '"]');
  }
  function setLinked(id, on) {
    both(id).forEach(function (el) { el.classList.toggle("linked", on); });
  }
  function factOf(target) {
    var el = target.closest ? target.closest("[data-fact]") : null;
    return el ? el.getAttribute("data-fact") : null;
  }
  ["mouseover", "focusin"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var id = factOf(event.target);
      if (id) { setLinked(id, true); }
    });
  });
  ["mouseout", "focusout"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var id = factOf(event.target);
      if (id) { setLinked(id, false); }
    });
  });
  function go(event) {
    var span = event.target.closest ? event.target.closest("mark.span[data-fact]") : null;
    if (!span) { return; }
    var item = document.getElementById("fact-" + span.getAttribute("data-fact"));
    if (item) {
      event.preventDefault();
      item.scrollIntoView({ block: "nearest", behavior: "smooth" });
      var link = item.querySelector("a.fact-name");
      if (link) { link.focus({ preventScroll: true }); }
    }
  }
  document.addEventListener("click", go);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { go(event); }
  });
  // A link in the list moves focus to its span (the browser scrolls to the anchor).
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.fact-name") : null;
    if (!link) { return; }
    var span = document.getElementById("span-" + link.closest("[data-fact]").getAttribute("data-fact"));
    if (span) { span.focus({ preventScroll: false }); }
  });
})();
