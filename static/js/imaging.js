/* The image viewer (templates/imaging/viewer.html): window presets, heat map overlay toggle,
 * opacity and choice. Presets are rendered by the server (imaging.views.imaging_preview), so a
 * change of preset swaps the image's address; no pixel or patient data is handled here. */
(function () {
  "use strict";

  function init() {
    var viewer = document.getElementById("imaging-viewer");
    if (!viewer || viewer.dataset.ready) { return; }
    viewer.dataset.ready = "1";
    var image = document.getElementById("imaging-image");
    var overlay = document.getElementById("imaging-overlay");
    var preset = document.getElementById("imaging-preset");
    var toggle = document.getElementById("imaging-overlay-toggle");
    var choice = document.getElementById("imaging-overlay-choice");
    var opacity = document.getElementById("imaging-opacity");
    var shown = document.getElementById("imaging-opacity-value");

    if (preset && image) {
      preset.addEventListener("change", function () {
        var url = viewer.dataset.previewUrl;
        image.src = preset.value === "0" ? url : url + "?preset=" + encodeURIComponent(preset.value);
      });
    }
    if (toggle && overlay) {
      toggle.addEventListener("change", function () { overlay.hidden = !toggle.checked; });
    }
    if (choice && overlay) {
      choice.addEventListener("change", function () { overlay.src = choice.value; });
    }
    if (opacity && overlay) {
      opacity.addEventListener("input", function () {
        overlay.style.opacity = String(Number(opacity.value) / 100);
        if (shown) { shown.textContent = opacity.value + "%"; }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
