/* The image viewer (templates/imaging/viewer.html): window presets and a window of the user's own
 * (level and width, typed or set by Shift + drag), frames of a multi-frame image, zoom and pan, and
 * the heat map overlay's toggle, opacity and choice; beside it, another image of the patient's to
 * compare with (it follows the zoom and pan).
 *
 * Every rendering is made on the server (imaging.views.imaging_preview: ?frame=, ?preset= or
 * ?center=&width=, ?size=full), so the file's full bit depth stays there and the browser only swaps
 * images; one rendering is asked for at a time, and while it loads only the latest wanted one
 * waits. No pixel or patient data is handled here. Zoom and pan move the image and its overlay
 * together (one CSS transform; on a touch screen, two fingers pinch); zoomed in past the preview's own pixels, the image is asked for
 * with every pixel of the frame. */
(function () {
  "use strict";

  var MAX_ZOOM = 16;
  var ZOOM_STEP = 1.25;

  function init() {
    var viewer = document.getElementById("imaging-viewer");
    if (!viewer || viewer.dataset.ready) { return; }
    viewer.dataset.ready = "1";
    var byId = function (id) { return document.getElementById(id); };
    var image = byId("imaging-image");
    var overlay = byId("imaging-overlay");
    var stage = byId("imaging-stage");
    var canvas = byId("imaging-canvas");
    var preset = byId("imaging-preset");
    var centerInput = byId("imaging-window-center");
    var widthInput = byId("imaging-window-width");
    var toggle = byId("imaging-overlay-toggle");
    var choice = byId("imaging-overlay-choice");
    var opacity = byId("imaging-opacity");
    var shownOpacity = byId("imaging-opacity-value");
    var frameInput = byId("imaging-frame");
    var frameShown = byId("imaging-frame-value");
    var frameNote = byId("imaging-overlay-frame-note");
    var zoomShown = byId("imaging-zoom-value");
    var problem = byId("imaging-render-problem");
    var compareStage = byId("imaging-compare-stage");
    var compareCanvas = byId("imaging-compare-canvas");
    var compareImage = byId("imaging-compare-image");
    var compareForm = byId("imaging-compare-form");
    var compareChoice = byId("imaging-compare");
    var windowsNode = byId("imaging-preset-windows");
    var presetWindows = windowsNode ? JSON.parse(windowsNode.textContent) : [];

    var frames = Number(viewer.dataset.frames) || 1;
    var analysedFrame = Number(viewer.dataset.analysedFrame) || 0;
    var previewWidth = Number(viewer.dataset.previewWidth) || 1;
    var columns = Number(viewer.dataset.columns) || previewWidth;
    var hasRange = viewer.dataset.valueMin !== undefined && viewer.dataset.valueMax !== undefined;
    var valueMin = Number(viewer.dataset.valueMin);
    var valueMax = Number(viewer.dataset.valueMax);
    var valueSpan = hasRange ? Math.max(valueMax - valueMin, 1) : 1;

    // what is wanted: a frame, a preset or a window, the preview's size or every pixel
    var state = { frame: analysedFrame, preset: 0, center: null, width: null, full: false };
    var view = { scale: 1, x: 0, y: 0 };

    function url() {
      var params = new URLSearchParams();
      if (state.frame !== analysedFrame) { params.set("frame", String(state.frame)); }
      if (state.center !== null) {
        params.set("center", String(state.center));
        params.set("width", String(state.width));
      } else if (state.preset !== 0) {
        params.set("preset", String(state.preset));
      }
      if (state.full) { params.set("size", "full"); }
      var query = params.toString();
      return viewer.dataset.previewUrl + (query ? "?" + query : "");
    }

    // one rendering in flight; the latest wanted one waits for it
    var loading = false;
    var waiting = null;
    // the compared image takes the same window (in the images' values, e.g. HU), where it has one
    function showCompare() {
      if (!compareImage || !compareImage.dataset.windowable) { return; }
      var w = state.center !== null ? [state.center, state.width] : presetWindows[state.preset];
      var wanted = compareImage.dataset.previewUrl;
      if ((state.center !== null || state.preset !== 0) && w && w[0] !== null && w[1] !== null) {
        wanted += "?center=" + encodeURIComponent(String(w[0])) + "&width=" + encodeURIComponent(String(w[1]));
      }
      if (compareImage.getAttribute("src") !== wanted) { compareImage.src = wanted; }
    }
    function show() {
      showCompare();
      var next = url();
      if (loading) { waiting = next; return; }
      if (image.getAttribute("src") === next) { return; }
      loading = true;
      image.src = next;
    }
    function settled() {
      loading = false;
      if (waiting !== null) {
        var next = waiting;
        waiting = null;
        if (image.getAttribute("src") !== next) { loading = true; image.src = next; }
      }
    }
    image.addEventListener("load", function () {
      if (problem) { problem.hidden = true; }
      settled();
    });
    image.addEventListener("error", function () {
      var failed = image.getAttribute("src");
      settled();
      if (!problem || !failed) { return; }
      // the server's answer names the problem (a refused window, a frame that cannot be decoded)
      fetch(failed, { credentials: "same-origin" }).then(function (response) {
        return response.ok ? "" : response.text();
      }).then(function (text) {
        if (text && image.getAttribute("src") === failed) {
          problem.textContent = text;
          problem.hidden = false;
        }
      }).catch(function () { /* the image's own error stays */ });
    });

    // --- window ---------------------------------------------------------------------------------
    function number(value) { return Number(value.toPrecision(6)); }
    function fillWindow(center, width) {
      if (!centerInput || !widthInput) { return; }
      centerInput.value = String(number(center));
      widthInput.value = String(number(width));
    }
    // the window shown: the user's, the preset's, or for a VOI LUT or the frame's full range, the range
    function currentWindow() {
      if (state.center !== null) { return [state.center, state.width]; }
      var w = presetWindows[state.preset];
      if (w && w[0] !== null && w[1] !== null) { return w; }
      return hasRange ? [(valueMin + valueMax) / 2, valueSpan] : null;
    }
    function fillFromPreset() {
      var w = currentWindow();
      if (w) { fillWindow(w[0], w[1]); }
    }
    function setWindow(center, width) {
      if (!isFinite(center) || !isFinite(width)) { return; }
      state.center = number(center);
      state.width = number(Math.max(width, 1));
      fillWindow(state.center, state.width);
      if (preset) { preset.value = "custom"; }
      show();
    }
    if (preset) {
      preset.addEventListener("change", function () {
        if (preset.value === "custom") { return; }
        state.preset = Number(preset.value);
        state.center = state.width = null;
        fillFromPreset();
        show();
      });
    }
    fillFromPreset();
    function typedWindow() {
      var center = Number(centerInput.value);
      var width = Number(widthInput.value);
      if (centerInput.value === "" || widthInput.value === "" || !isFinite(center) || !isFinite(width) || width < 1) {
        if (problem) {
          problem.textContent = "The window needs a level and a width of at least 1.";
          problem.hidden = false;
        }
        return;
      }
      setWindow(center, width);
    }
    if (centerInput && widthInput) {
      centerInput.addEventListener("change", typedWindow);
      widthInput.addEventListener("change", typedWindow);
    }

    // --- frames ---------------------------------------------------------------------------------
    function setFrame(index) {
      index = Math.max(0, Math.min(frames - 1, index));
      if (index === state.frame) { return; }
      state.frame = index;
      if (frameInput) { frameInput.value = String(index + 1); }
      if (frameShown) { frameShown.textContent = "frame " + (index + 1) + " of " + frames; }
      var other = index !== analysedFrame;
      if (frameNote) { frameNote.hidden = !other; }
      if (overlay) { overlay.hidden = other || (toggle ? !toggle.checked : false); }
      show();
    }
    if (frameInput) {
      frameInput.addEventListener("input", function () { setFrame(Number(frameInput.value) - 1); });
    }
    var prev = byId("imaging-frame-prev");
    var next = byId("imaging-frame-next");
    if (prev) { prev.addEventListener("click", function () { setFrame(state.frame - 1); }); }
    if (next) { next.addEventListener("click", function () { setFrame(state.frame + 1); }); }

    // --- zoom and pan ---------------------------------------------------------------------------
    function clamp() {
      var w = stage.clientWidth;
      var h = stage.clientHeight;
      view.x = Math.min(0, Math.max(w * (1 - view.scale), view.x));
      view.y = Math.min(0, Math.max(h * (1 - view.scale), view.y));
    }
    function apply() {
      clamp();
      canvas.style.transform = view.scale === 1 ? "" :
        "translate(" + view.x + "px, " + view.y + "px) scale(" + view.scale + ")";
      if (compareCanvas && compareStage) { // the compared image follows: the same scale and place
        var fx = compareStage.clientWidth / Math.max(stage.clientWidth, 1);
        var fy = compareStage.clientHeight / Math.max(stage.clientHeight, 1);
        compareCanvas.style.transform = view.scale === 1 ? "" :
          "translate(" + view.x * fx + "px, " + view.y * fy + "px) scale(" + view.scale + ")";
      }
      stage.classList.toggle("is-zoomed", view.scale > 1);
      if (zoomShown) { zoomShown.textContent = Math.round(view.scale * 100) + "%"; }
      // past the preview's own pixels: ask once for every pixel of the frame
      var screenPixels = stage.clientWidth * view.scale * (window.devicePixelRatio || 1);
      if (!state.full && columns > previewWidth && screenPixels > previewWidth * 1.1) {
        state.full = true;
        show();
      }
    }
    function zoomAt(factor, px, py) {
      var scale = Math.max(1, Math.min(MAX_ZOOM, view.scale * factor));
      // the point under (px, py) stays where it is
      view.x = px - (px - view.x) * (scale / view.scale);
      view.y = py - (py - view.y) * (scale / view.scale);
      view.scale = scale;
      apply();
    }
    function zoomCentre(factor) { zoomAt(factor, stage.clientWidth / 2, stage.clientHeight / 2); }
    function fit() { view.scale = 1; view.x = view.y = 0; apply(); }
    byId("imaging-zoom-in").addEventListener("click", function () { zoomCentre(ZOOM_STEP); });
    byId("imaging-zoom-out").addEventListener("click", function () { zoomCentre(1 / ZOOM_STEP); });
    byId("imaging-zoom-fit").addEventListener("click", fit);
    stage.addEventListener("dblclick", fit);

    stage.addEventListener("wheel", function (event) {
      if (event.ctrlKey || event.metaKey) {
        event.preventDefault();
        var box = stage.getBoundingClientRect();
        zoomAt(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, event.clientX - box.left, event.clientY - box.top);
      } else if (frames > 1 && event.deltaY !== 0) {
        event.preventDefault();
        setFrame(state.frame + (event.deltaY > 0 ? 1 : -1));
      }
    }, { passive: false });

    stage.addEventListener("keydown", function (event) {
      var keys = {
        "+": function () { zoomCentre(ZOOM_STEP); }, "=": function () { zoomCentre(ZOOM_STEP); },
        "-": function () { zoomCentre(1 / ZOOM_STEP); }, "0": fit,
        "ArrowRight": function () { setFrame(state.frame + 1); }, "ArrowDown": function () { setFrame(state.frame + 1); },
        "ArrowLeft": function () { setFrame(state.frame - 1); }, "ArrowUp": function () { setFrame(state.frame - 1); },
      };
      var action = keys[event.key];
      if (!action || (frames === 1 && event.key.indexOf("Arrow") === 0)) { return; }
      event.preventDefault();
      action();
    });

    // drag: pan when zoomed; with Shift, the window (across: width, up and down: level); two
    // fingers on a touch screen: pinch to zoom around their midpoint
    var drag = null;
    var touches = {};
    var pinch = null;
    function touchPair() {
      var ids = Object.keys(touches);
      return ids.length === 2 ? [touches[ids[0]], touches[ids[1]]] : null;
    }
    function capture(event) {
      try { stage.setPointerCapture(event.pointerId); } catch (e) { /* a pointer already released */ }
    }
    stage.addEventListener("pointerdown", function (event) {
      if (event.pointerType === "touch") {
        touches[event.pointerId] = { x: event.clientX, y: event.clientY };
        var pair = touchPair();
        if (pair) {
          drag = null;
          pinch = { distance: Math.max(Math.hypot(pair[0].x - pair[1].x, pair[0].y - pair[1].y), 1), scale: view.scale };
          capture(event);
          event.preventDefault();
          return;
        }
      }
      if (event.button !== 0) { return; }
      var windowing = event.shiftKey && hasRange;
      if (!windowing && view.scale === 1) { return; }
      drag = { x: event.clientX, y: event.clientY, viewX: view.x, viewY: view.y, windowing: windowing,
               start: windowing ? currentWindow() : null };
      capture(event);
      stage.classList.add("is-dragging");
      event.preventDefault();
    });
    stage.addEventListener("pointermove", function (event) {
      if (touches[event.pointerId]) { touches[event.pointerId] = { x: event.clientX, y: event.clientY }; }
      var pair = pinch && touchPair();
      if (pair) {
        var box = stage.getBoundingClientRect();
        var distance = Math.hypot(pair[0].x - pair[1].x, pair[0].y - pair[1].y);
        zoomAt(pinch.scale * distance / pinch.distance / view.scale,
               (pair[0].x + pair[1].x) / 2 - box.left, (pair[0].y + pair[1].y) / 2 - box.top);
        return;
      }
      if (!drag) { return; }
      var dx = event.clientX - drag.x;
      var dy = event.clientY - drag.y;
      if (drag.windowing) {
        // the stage's width across is the whole range of the image's values
        var perPixel = valueSpan / Math.max(stage.clientWidth, 1);
        setWindow(drag.start[0] - dy * perPixel, drag.start[1] + dx * perPixel);
      } else {
        view.x = drag.viewX + dx;
        view.y = drag.viewY + dy;
        apply();
      }
    });
    function endDrag(event) {
      delete touches[event.pointerId];
      if (!touchPair()) { pinch = null; }
      drag = null;
      stage.classList.remove("is-dragging");
    }
    stage.addEventListener("pointerup", endDrag);
    stage.addEventListener("pointercancel", endDrag);
    window.addEventListener("resize", apply);

    // --- comparison with another image of the patient's (a page of its own: ?compare=ID) ---------
    if (compareForm && compareChoice) {
      compareChoice.addEventListener("change", function () {
        if (compareChoice.value) {
          compareForm.submit();
        } else {
          window.location.assign(window.location.pathname);
        }
      });
    }

    // --- the findings as text for a report: copied to the clipboard (or selected, to copy by hand) ---
    Array.prototype.forEach.call(document.querySelectorAll(".imaging-report-text"), function (box) {
      var text = box.querySelector("textarea");
      var copy = box.querySelector(".imaging-copy");
      if (!text || !copy) { return; }
      text.addEventListener("focus", function () { text.select(); });
      copy.addEventListener("click", function () {
        text.select();
        var done = function () { copy.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text.value).then(done, function () { copy.textContent = "Selected: copy it"; });
        } else {
          copy.textContent = "Selected: copy it";
        }
      });
    });

    // --- heat map overlay -----------------------------------------------------------------------
    if (toggle && overlay) {
      toggle.addEventListener("change", function () { overlay.hidden = !toggle.checked || state.frame !== analysedFrame; });
    }
    if (choice && overlay) {
      choice.addEventListener("change", function () { overlay.src = choice.value; });
    }
    if (opacity && overlay) {
      opacity.addEventListener("input", function () {
        overlay.style.opacity = String(Number(opacity.value) / 100);
        if (shownOpacity) { shownOpacity.textContent = opacity.value + "%"; }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
