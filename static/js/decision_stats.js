/* Draws a rule's statistics (templates/admin/decision/rule_statistics.html) with the vendored
 * Plotly: answers per month (bars) and the override rate (line, right axis), and overrides by
 * reason. The numbers come from <script id="rule-stats-data" type="application/json">. */
(function () {
  "use strict";
  var FONT = { family: "system-ui, sans-serif", size: 12, color: "#1c2733" };
  var CONFIG = { displayModeBar: false, responsive: true };

  function draw() {
    var source = document.getElementById("rule-stats-data");
    if (!source || !window.Plotly) { return; }
    var data = JSON.parse(source.textContent);
    var over = document.getElementById("rule-stats-over-time");
    if (over && data.months.length) {
      window.Plotly.newPlot(over, [
        { type: "bar", name: "accepted", x: data.months, y: data.accepted, marker: { color: "#1e6b34" } },
        { type: "bar", name: "overridden", x: data.months, y: data.overridden, marker: { color: "#a8201a" } },
        { type: "scatter", mode: "lines+markers", name: "override rate", hovertemplate: "%{x|%Y-%m}: %{y:.0f} %<extra></extra>", x: data.months, y: data.override_rate,
          yaxis: "y2", line: { color: "#1f5f8b", width: 2 }, connectgaps: false },
      ], {
        barmode: "stack", height: 340, margin: { l: 50, r: 60, t: 10, b: 40 }, font: FONT,
        xaxis: { type: "date", tickformat: "%Y-%m", dtick: "M1" },
        yaxis: { title: { text: "answers" }, rangemode: "tozero" },
        yaxis2: { title: { text: "override rate" }, overlaying: "y", side: "right", range: [0, 105],
                  tickvals: [0, 25, 50, 75, 100], ticksuffix: " %", showgrid: false },
        legend: { orientation: "h", y: -0.2 },
        paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      }, CONFIG);
    }
    var reasons = document.getElementById("rule-stats-reasons");
    if (reasons && data.reasons.labels.length) {
      window.Plotly.newPlot(reasons, [{
        type: "bar", orientation: "h", x: data.reasons.counts.slice().reverse(), y: data.reasons.labels.slice().reverse(),
        marker: { color: "#a8201a" },
      }], {
        height: Math.max(160, 40 + 28 * data.reasons.labels.length), margin: { l: 260, r: 20, t: 10, b: 30 },
        font: FONT, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      }, CONFIG);
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
