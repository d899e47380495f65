/* Recommendation cards: a refused action (override without a reason, critical without a comment,
 * a snooze duration not offered) answers 422 with the card and its errors; HTMX does not swap
 * error answers by default, so let it swap these. Nothing else changes HTMX's behaviour. */
(function () {
  "use strict";
  if (window.cdssDecisionCards) { return; }
  window.cdssDecisionCards = true;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (event.detail.xhr.status === 422 && target && target.classList && target.classList.contains("rec-card")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
