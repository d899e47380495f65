/* Draws the risk panel's Plotly charts: one per .risk-chart container (data-kind "contributions"
 * or "history", data-calculator naming the assessment). The panel arrives by HTMX, so the charts
 * are drawn whenever content is swapped in (htmx:load), not once at page load. The data comes
 * from the fragment's <script id="risk-chart-data" type="application/json"> (json_script): no
 * patient data is ever interpolated into JavaScript source. */
(function () {
  "use strict";

  var FONT = { family: "system-ui, sans-serif", size: 11, color: "#1c2733" };
  var RAISES = "#b4532a"; // a term that raises the result
  var LOWERS = "#1f5f8b"; // a term that lowers it
  var CONFIG = { displayModeBar: false, responsive: true };

  function chartData() {
    var source = document.getElementById("risk-chart-data");
    return source ? JSON.parse(source.textContent) : null;
  }

  function contributionsPlot(container, chart) {
    var c = chart.contributions;
    var points = chart.unit === "points";
    var trace = {
      type: "bar",
      orientation: "h",
      x: c.values,
      y: c.names,
      marker: { color: c.values.map(function (v) { return v >= 0 ? RAISES : LOWERS; }) },
      hovertemplate: "%{y}: %{x:" + (points ? "g" : ".3f") + "}<extra></extra>",
    };
    var layout = {
      height: Math.max(140, 34 + 24 * c.values.length),
      margin: { l: 150, r: 16, t: 6, b: 30 },
      xaxis: { zeroline: true, zerolinecolor: "#5b6b7b", gridcolor: "#e5e9ee", title: { text: c.scale } },
      yaxis: { automargin: true },
      bargap: 0.3,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: FONT,
      showlegend: false,
    };
    window.Plotly.newPlot(container, [trace], layout, CONFIG);
  }

  function historyPlot(container, chart) {
    var h = chart.history;
    var trace = {
      type: "scatter",
      mode: "lines+markers",
      x: h.x,
      y: h.y,
      line: { color: "#1f5f8b", width: 2 },
      marker: { size: 6 },
      hovertemplate: "%{x|%Y-%m-%d}: %{y:" + (chart.unit === "%" ? ".1f" : "g") + "} " + (chart.unit || "") +
        "<extra></extra>",
    };
    var layout = {
      height: 180,
      margin: { l: 48, r: 16, t: 6, b: 32 },
      xaxis: { type: "date", gridcolor: "#e5e9ee" },
      yaxis: { title: { text: chart.unit || "" }, gridcolor: "#e5e9ee", rangemode: "tozero" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: FONT,
      showlegend: false,
    };
    window.Plotly.newPlot(container, [trace], layout, CONFIG);
  }

  function drawRiskCharts(root) {
    if (typeof window.Plotly === "undefined") {
      return;
    }
    var containers = (root || document).querySelectorAll(".risk-chart:not([data-drawn])");
    if (!containers.length) {
      return;
    }
    var data = chartData();
    if (!data) {
      return;
    }
    containers.forEach(function (container) {
      var chart = data[container.dataset.calculator];
      var kind = container.dataset.kind;
      if (!chart || !chart[kind]) {
        return;
      }
      container.setAttribute("data-drawn", "1");
      if (kind === "contributions") {
        contributionsPlot(container, chart);
      } else if (kind === "history") {
        historyPlot(container, chart);
      }
    });
  }

  // Before HTMX replaces the panel, release the old charts (Plotly keeps resize listeners).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && typeof window.Plotly !== "undefined") {
      target.querySelectorAll(".risk-chart[data-drawn]").forEach(function (container) {
        window.Plotly.purge(container);
      });
    }
  });
  // htmx:load fires on every element HTMX adds (and on the body once HTMX starts).
  document.addEventListener("htmx:load", function (event) {
    drawRiskCharts(event.target);
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    drawRiskCharts(event.target);
  });
})();
